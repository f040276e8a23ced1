"""No import cycle between the parts of mrsynth (its subpackages and top-level modules), lazy
imports inside functions included: each part can be read, tested and replaced on its own."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mrsynth"


def part_of(module: str) -> str | None:
    """``mrsynth.data.io`` -> ``data``; ``mrsynth.config`` -> ``config``; outside mrsynth -> None."""
    pieces = module.split(".")
    return pieces[1] if pieces[0] == "mrsynth" and len(pieces) > 1 else None


def import_graph() -> dict[str, set[str]]:
    """Part -> the other parts it imports (anywhere in its files)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        source = part_of(".".join(relative.parts))
        if source is None or source == "__init__":
            continue
        targets = graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom)
                     and node.module and node.level == 0 else [])
            for name in names:
                target = part_of(name)
                if target and target != source and (PACKAGE / target).exists() | (PACKAGE / f"{target}.py").exists():
                    targets.add(target)
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of parts (first = last), or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt, node]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_checker_finds_a_cycle():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_the_parts_of_mrsynth():
    graph = import_graph()
    assert {"data", "phantom", "inference", "evaluation", "training"} <= set(graph)
    assert cycle_in(graph) is None, " -> ".join(cycle_in(graph) or [])
