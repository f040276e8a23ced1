"""Weight-file mismatches: broken variants of a valid portable file must fail to load, naming the culprit."""
from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from mrsynth.errors import CheckpointError
from mrsynth.parity.report import CheckResult
from mrsynth.weights import load_portable

from jax_impl.backend import JaxBackend
from torch_ref.backend import TorchBackend


def _write_variant(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> Path:
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)
    return path


def mismatch_variants(valid: Path, work_dir: Path) -> list[tuple[str, Path, str]]:
    """(case, broken file, text the error must contain) derived from a valid portable file."""
    import json

    tensors, model_cfg, meta = load_portable(valid)
    names = sorted(tensors)
    dropped, reshaped = names[0], "head.weight"
    bigger = dataclasses.asdict(replace(model_cfg, base_channels=model_cfg.base_channels * 2))
    variants = [
        ("missing key", {k: v for k, v in tensors.items() if k != dropped}, meta, f"'{dropped}'"),
        ("extra key", {**tensors, "encoders.0.conv9.weight": tensors[names[0]]}, meta, "'encoders.0.conv9.weight'"),
        ("wrong shape", {**tensors, reshaped: np.zeros((1, 1) + tensors[reshaped].shape, np.float32)}, meta,
         f"'{reshaped}'"),
        ("wrong config", tensors, {**meta, "model_config": json.dumps(bigger)}, "parameter '"),
        ("wrong format version", tensors, {**meta, "format_version": "99"}, "version 99"),
    ]
    work_dir.mkdir(parents=True, exist_ok=True)
    return [(case, _write_variant(work_dir / f"{case.replace(' ', '_')}.safetensors", t, m), expect)
            for case, t, m, expect in variants]


def mismatch_checks(valid: Path, work_dir: Path) -> list[CheckResult]:
    """Every broken variant fails to load in both backends with a message naming the culprit."""
    rows = []
    for case, path, expect in mismatch_variants(valid, work_dir):
        for name, backend in (("jax", JaxBackend()), ("torch", TorchBackend())):
            try:
                backend.load_predictor(path)
                message, ok = "loaded without error", False
            except CheckpointError as exc:
                message = str(exc)
                ok = expect in message
            rows.append(CheckResult("weight_mismatch", f"{name}: {case}", "fails naming it", float(ok), 1.0,
                                    higher_is_better=True, note=message.replace(str(path.parent) + "/", "")))
    return rows
