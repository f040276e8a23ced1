"""The configuration reference, generated from the config dataclasses' source.

Every field of a config dataclass carries a Sphinx-style ``#:`` doc comment on the line(s)
directly above it (or one ``#:`` comment after it on the same line)::

    #: Global-norm gradient clipping threshold.
    clip_norm: float = 1.0

:func:`field_descriptions` reads them with :mod:`tokenize` (so a ``#`` inside a string is never
taken for a comment), :func:`reference_rows` walks a top-level config class (``Config``) into
one row per dotted key, and :func:`render_markdown` writes the tables of the documentation's
configuration page. :func:`missing_descriptions` is the completeness check the tests run.
Standard library only: the docs build imports this without importing Sphinx here, and the
tests run it without Sphinx installed.

``python -m mrsynth.config_reference`` prints the reference of ``mrsynth.config.Config``.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DOC_PREFIX = "#:"


@dataclass(frozen=True)
class ReferenceRow:
    """One config key of the reference table."""

    key: str  #: dotted key as ``--set`` takes it, e.g. ``data.mask``
    section: str  #: the top-level section it belongs to, e.g. ``data``
    type: str  #: the annotation as written in the source, e.g. ``str | None``
    default: str  #: the default as YAML would spell it, e.g. ``[96, 112]``, ``null``
    description: str  #: the field's ``#:`` doc comment ("" when it has none)
    choices: tuple[str, ...] = ()  #: the allowed values, when the config validates against a list


def _comments_by_line(source: str) -> tuple[dict[int, str], set[int]]:
    """The comment text of each line of ``source``, and the lines holding nothing but a comment."""
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string
        elif token.type not in skip:
            code_lines.update(range(token.start[0], token.end[0] + 1))
    return comments, {line for line in comments if line not in code_lines}


def _doc_text(comment: str) -> str | None:
    """The text of a ``#:`` comment (None for any other comment)."""
    if not comment.startswith(DOC_PREFIX):
        return None
    return comment[len(DOC_PREFIX):].strip()


def _own_field_descriptions(cls: type) -> dict[str, str]:
    """``#:`` descriptions of the annotated assignments written in ``cls``'s own class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (built in a REPL, by make_dataclass, ...)
        return {}
    class_def = ast.parse(source).body[0]
    if not isinstance(class_def, ast.ClassDef):
        return {}
    comments, comment_only = _comments_by_line(source)
    out: dict[str, str] = {}
    for node in class_def.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        parts: list[str] = []
        line = node.lineno - 1
        while line in comment_only and (text := _doc_text(comments[line])) is not None:
            parts.insert(0, text)
            line -= 1
        trailing = _doc_text(comments.get(node.end_lineno or node.lineno, ""))
        if trailing is not None:
            parts.append(trailing)
        description = " ".join(p for p in parts if p)
        if description:
            out[node.target.id] = description
    return out


def field_descriptions(cls: type) -> dict[str, str]:
    """Field name -> its ``#:`` doc comment, for every field of the dataclass ``cls`` that has one.

    Fields inherited from dataclass bases are included (a subclass's comment wins). A field with
    no ``#:`` comment (a plain ``#`` comment does not count) is absent from the result.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            out.update(_own_field_descriptions(base))
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: text for name, text in out.items() if name in names}


def _annotation_text(f: dataclasses.Field[Any]) -> str:
    """The field's annotation as written (``from __future__ import annotations`` keeps it a string)."""
    if isinstance(f.type, str):
        return f.type
    return getattr(f.type, "__name__", None) or repr(f.type).replace("typing.", "")


def _default_value(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def format_default(value: Any) -> str:
    """A default as a YAML config would spell it: ``null``, ``true``, ``[96, 112]``, ``""``."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_default(v) for v in value) + "]"
    return repr(value)


def _nested_dataclass(config_cls: type, f: dataclasses.Field[Any]) -> type | None:
    hint = typing.get_type_hints(config_cls).get(f.name)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def sections(config_cls: type) -> list[tuple[str, type]]:
    """The top-level sections of ``config_cls``: (field name, its dataclass), in field order."""
    out = []
    for f in dataclasses.fields(config_cls):
        nested = _nested_dataclass(config_cls, f)
        if nested is not None:
            out.append((f.name, nested))
    return out


def reference_rows(config_cls: type, choices: Mapping[str, Sequence[str]] | None = None) -> list[ReferenceRow]:
    """One row per leaf key of ``config_cls`` (nested dataclasses walked), in field order.

    ``choices`` (dotted key -> allowed values, e.g. ``mrsynth.config.CHOICES``) fills the rows'
    ``choices``. A field without a ``#:`` comment gets an empty description.
    """
    choices = choices or {}
    rows: list[ReferenceRow] = []

    def walk(cls: type, prefix: str, section: str) -> None:
        described = field_descriptions(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            nested = _nested_dataclass(cls, f)
            if nested is not None:
                walk(nested, f"{key}.", section or f.name)
                continue
            rows.append(ReferenceRow(key=key, section=section or f.name, type=_annotation_text(f),
                                     default=format_default(_default_value(f)),
                                     description=described.get(f.name, ""),
                                     choices=tuple(str(c) for c in choices.get(key, ()))))

    walk(config_cls, "", "")
    return rows


def config_dataclasses(config_cls: type) -> list[tuple[str, type]]:
    """Every dataclass reachable from ``config_cls`` (itself first), with its dotted prefix."""
    found: list[tuple[str, type]] = []

    def walk(cls: type, prefix: str) -> None:
        found.append((prefix, cls))
        for f in dataclasses.fields(cls):
            nested = _nested_dataclass(cls, f)
            if nested is not None:
                walk(nested, f"{prefix}{f.name}.")

    walk(config_cls, "")
    return found


def missing_descriptions(config_cls: type) -> list[str]:
    """Dotted keys of every field (sections included) of ``config_cls`` and the dataclasses it
    holds that have no ``#:`` description; empty when the reference is complete."""
    missing = []
    for prefix, cls in config_dataclasses(config_cls):
        described = field_descriptions(cls)
        missing += [f"{prefix}{f.name}" for f in dataclasses.fields(cls) if not described.get(f.name)]
    return missing


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped, line breaks folded."""
    return " ".join(text.split()).replace("|", "\\|")


def _summary(cls: type) -> str:
    """A dataclass's own docstring (not the one ``dataclass`` generates), dedented."""
    doc = cls.__dict__.get("__doc__") or ""
    generated = doc.startswith(f"{cls.__name__}(")
    return "" if generated else inspect.cleandoc(doc).replace("``", "`")


def render_markdown(config_cls: type, choices: Mapping[str, Sequence[str]] | None = None,
                    heading_level: int = 2) -> str:
    """The reference as Markdown: a table of the sections, then per section its docstring and a
    table of key, type, default and description (the allowed values appended unless the
    description names each of them in backticks)."""
    rows = reference_rows(config_cls, choices)
    top = field_descriptions(config_cls)
    hashes = "#" * heading_level
    out = [f"{len(rows)} keys in {len(sections(config_cls))} sections.", "",
           "| section | what it holds |", "|---|---|"]
    out += [f"| [`{name}`](#config-{name}) | {_cell(top.get(name, ''))} |" for name, _ in sections(config_cls)]
    for name, cls in sections(config_cls):
        out += ["", f"({'config-' + name})=", f"{hashes} `{name}`", ""]
        summary = _summary(cls)
        if summary:
            out += [summary, ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for row in rows:
            if row.section != name:
                continue
            description = row.description
            if row.choices and not all(f"`{c}`" in description for c in row.choices):
                description += " Allowed: " + ", ".join(f"`{c}`" for c in row.choices) + "."
            out.append(f"| `{row.key}` | `{_cell(row.type)}` | `{_cell(row.default)}` | {_cell(description)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    from mrsynth.config import CHOICES, Config

    print(render_markdown(Config, CHOICES), end="")


if __name__ == "__main__":
    main()
