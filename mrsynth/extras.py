"""Optional dependencies: which ``pip install 'mrsynth[EXTRA]'`` provides each one.

The base install is framework-free; a backend, IXI preparation, brain extraction and ONNX export each need
an extra (pyproject.toml). Code that needs one imports it through :func:`import_optional`, so
a missing extra ends the command with one line that says what to install, not a traceback.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from mrsynth.errors import MrsynthError

EXTRA_OF_MODULE: dict[str, str] = {  # top-level module -> the extra that installs it
    "jax": "jax",
    "jaxlib": "jax",
    "flax": "jax",
    "optax": "jax",
    "orbax": "jax",
    "torch": "torch",
    "SimpleITK": "ixi",
    "brainextractor": "skullstrip",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
}


def missing_extra_message(module: str, user: str) -> str:
    """``<user>: needs <module>: pip install 'mrsynth[<extra>]'`` for a module of EXTRA_OF_MODULE."""
    return f"{user}: needs {module}: pip install 'mrsynth[{EXTRA_OF_MODULE[module]}]'"


def import_optional(module: str, user: str) -> ModuleType:
    """Import ``module``; if it, or a module it imports, belongs to an extra that is not
    installed, raise MrsynthError with :func:`missing_extra_message`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in EXTRA_OF_MODULE:
            raise
        raise MrsynthError(missing_extra_message(missing, user)) from None
