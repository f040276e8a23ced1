"""What ``run.py parity`` runs: every comparison of :mod:`parity_tests.checks` on one config's model
and data, at the requested precisions."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth.config import Config
from mrsynth.errors import ConfigError
from mrsynth.parity.report import CheckResult
from mrsynth.parity.tolerances import ToleranceTable
from mrsynth.precision import TRAINING_PRECISIONS
from mrsynth.training.loop import load_train_data

from parity_tests import checks

GRADIENT_BATCH = 4  # samples of the first loader batch used for the forward/gradient checks


def capped_patch(cfg: Config, max_size: int | None) -> Config:
    """``cfg`` with each patch dimension capped at ``max_size`` (a multiple of 2**depth)."""
    if max_size is None:
        return cfg
    multiple = 2**cfg.model.depth
    size = max_size // multiple * multiple
    if size < multiple:
        raise ConfigError(f"--max-size {max_size}: must be at least 2**depth = {multiple}")
    patch = tuple(min(p, size) for p in cfg.data.patch_size)
    return replace(cfg, data=replace(cfg.data, patch_size=patch))


def training_config(cfg: Config, steps: int, precision: str) -> Config:
    """The run's training settings over ``steps`` updates (warmup scaled down to fit), dropout off
    (its masks come from each framework's RNG), trained at ``precision``."""
    warmup = min(cfg.train.warmup_steps, steps // 5)
    train = replace(cfg.train, steps=steps, warmup_steps=warmup, precision=precision)
    return replace(cfg, model=replace(cfg.model, dropout=0.0), train=train)


def run_parity(cfg: Config, precisions: Sequence[str], steps: int, work_dir: Path, tolerances: ToleranceTable,
               log: Callable[[str], None] = print) -> tuple[list[CheckResult], dict[str, Any]]:
    """All checks for ``cfg`` against ``tolerances``; returns the rows and facts for the report's header."""
    data = load_train_data(cfg)
    rows: list[CheckResult] = []
    log(f"data: {len(data.train)} training volumes; drawing {steps} batches of {cfg.train.batch_size}")
    base_train = training_config(cfg, steps, "float32")
    batches = checks.loader_batches(data.train, base_train, steps)
    first = {k: v[:GRADIENT_BATCH] for k, v in batches[0].items()}

    pairs = {d: checks.transfer_pair(cfg.model, d, work_dir / "weights") for d in checks.DIRECTIONS}
    rows += [checks.round_trip_check(pair, work_dir / "weights", tolerances) for pair in pairs.values()]
    rows += checks.mismatch_checks(pairs["torch->jax"].weight_file, work_dir / "broken")

    for precision in precisions:
        log(f"forward and gradients, {precision}")
        for pair in pairs.values():
            rows += checks.train_mode_check(pair, first, cfg.train, precision, tolerances)
            if cfg.model.norm == "batch" or cfg.model.dropout > 0:
                rows.append(checks.eval_mode_check(pair, first["t1"], precision, tolerances))

    weight_files = {"torch->jax": pairs["torch->jax"].weight_file}
    initial = pairs["torch->jax"].tensors()
    for precision in precisions:
        if precision not in TRAINING_PRECISIONS:
            continue
        log(f"training {steps} steps in both backends, {precision}")
        train_cfg = training_config(cfg, steps, precision)
        found, jax_trace, torch_trace = checks.training_checks(
            initial, train_cfg, batches, work_dir / f"train-{precision}", "train", precision, tolerances)
        rows += found
        if precision == "float32":
            weight_files = {
                f"trained by {name}": checks.export_trained(trace, cfg.model, name,
                                                            work_dir / f"trained-{name}.safetensors")
                for name, trace in (("jax", jax_trace), ("torch", torch_trace))}

    volume = (data.val or data.train)[0]
    log(f"synthesizing {volume.subject} in both backends")
    rows += [checks.synthesis_check(path, np.asarray(volume.t1), cfg, f"{case}, {volume.subject}", tolerances)
             for case, path in weight_files.items()]
    facts = {
        "device": "gpu" if checks.on_gpu() else "cpu",
        "training": f"{steps} steps, batch {cfg.train.batch_size}, warmup {base_train.train.warmup_steps}, "
                    f"dropout off; precisions {', '.join(p for p in precisions if p in TRAINING_PRECISIONS) or 'none'}"
                    " (float64 covers forward and gradients: the engines train in float32)",
        "gradient batch": f"first {GRADIENT_BATCH} samples of loader batch 0, shape {list(first['t1'].shape)}",
    }
    return rows, facts
