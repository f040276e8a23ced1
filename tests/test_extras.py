"""Optional extras: a command that needs one that is not installed says so in one line.

A missing module is simulated (``sys.modules[name] = None`` makes ``import name`` fail, a
finder on ``sys.meta_path`` does the same in a fresh interpreter); nothing is uninstalled.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from mrsynth import backend
from mrsynth.cli import main
from mrsynth.errors import MrsynthError
from mrsynth.extras import EXTRA_OF_MODULE, import_optional

ROOT = Path(__file__).resolve().parents[1]
# The distribution that provides each optional top-level module.
DISTRIBUTION_OF_MODULE = {"jax": "jax", "jaxlib": "jax", "flax": "flax", "optax": "optax",
                          "orbax": "orbax-checkpoint", "torch": "torch", "SimpleITK": "SimpleITK",
                          "brainextractor": "brainextractor", "onnx": "onnx", "onnxscript": "onnxscript",
                          "onnxruntime": "onnxruntime"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in requirements}


def test_pyproject_extras_match_the_modules_that_name_them():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRA_OF_MODULE) == set(DISTRIBUTION_OF_MODULE)
    for module, extra in EXTRA_OF_MODULE.items():
        assert DISTRIBUTION_OF_MODULE[module] in _names(extras[extra]), module
    assert not _names(project["dependencies"]) & set(DISTRIBUTION_OF_MODULE.values())  # the core needs none
    assert set(EXTRA_OF_MODULE.values()) == {"jax", "torch", "ixi", "skullstrip", "onnx"}
    assert extras["all"] == ["mrsynth[jax,torch,ixi,skullstrip,onnx]"] and "mrsynth[all]" in extras["test"]


@pytest.mark.parametrize("name, framework, module", [
    ("torch", "torch", "torch_ref.backend"),
    ("jax", "flax", "jax_impl.backend"),
])
def test_a_backend_without_its_framework_is_one_line(monkeypatch, name, framework, module):
    monkeypatch.setitem(sys.modules, framework, None)
    package = module.split(".")[0]
    for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, loaded)  # imported again, without the framework
    with pytest.raises(MrsynthError) as info:
        backend.get_backend(name)
    assert str(info.value) == f"backend {name!r}: needs {framework}: pip install 'mrsynth[{name}]'"


def test_prepare_ixi_without_simpleitk_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    for module in ("mrsynth.ixi.prepare", "mrsynth.ixi.registration"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    code = main(["prepare-ixi", "--t1-dir", str(tmp_path), "--t2-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 1
    assert capsys.readouterr().err == "error: prepare-ixi: needs SimpleITK: pip install 'mrsynth[ixi]'\n"
    assert not (tmp_path / "o").exists()


def test_a_missing_module_of_no_extra_is_not_blamed_on_one():
    with pytest.raises(ModuleNotFoundError):
        import_optional("mrsynth_kit_no_such_module", "test")


@pytest.mark.slow
def test_the_core_runs_without_any_extra(tmp_path):
    """A fresh interpreter in which no optional module can be imported: every command parses,
    and the ones that need an extra name it."""
    script = textwrap.dedent(f"""
        import sys
        BLOCKED = {sorted(EXTRA_OF_MODULE)!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Blocker())
        from mrsynth.cli import main
        tmp = sys.argv[1]
        codes = [main(["prepare-ixi", "--t1-dir", tmp, "--t2-dir", tmp, "--out", tmp + "/o"]),
                 main(["train", "--backend", "torch", "--run-dir", tmp + "/run"]),
                 main(["parity", "--out", tmp + "/p"])]
        print(codes)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.stdout.strip() == "[1, 1, 1]", proc.stderr
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING:absl:")]  # grain: no jax
    assert errors == [
        "error: prepare-ixi: needs SimpleITK: pip install 'mrsynth[ixi]'",
        "error: backend 'torch': needs torch: pip install 'mrsynth[torch]'",
        "error: parity: needs jax: pip install 'mrsynth[jax]'",
    ]
