"""Tolerances of the parity checks, per check and precision, with where each number comes from.

PROVISIONAL: values being measured.
"""
from __future__ import annotations

TOLERANCES: dict[str, dict[str, float]] = {
    "round_trip": {"float32": 0.0},
    "forward": {"float32": 1e-5, "float64": 1e-12, "tf32": 1e-5, "bf16": 1e-1},
    "grad": {"float32": 1e-3, "float64": 1e-10, "tf32": 1e-3, "bf16": 1e-1},
    "bn_stats": {"float32": 1e-5, "float64": 1e-12, "tf32": 1e-5, "bf16": 1e-1},
    "adamw_update": {"float32": 1e-3},
    "adamw_params": {"float32": 1e-5},
    "grad_norm": {"float32": 1e-4},
    "lr": {"float32": 1e-6},
    "traj_loss": {"float32": 1e-3, "tf32": 1e-3, "bf16": 1e-1},
    "traj_params": {"float32": 1e-3, "tf32": 1e-3, "bf16": 1e-1},
    "synth_psnr": {"float32": 60.0},
}


def tolerance(check: str, precision: str) -> float:
    try:
        return TOLERANCES[check][precision]
    except KeyError:
        raise KeyError(f"no tolerance for check {check!r} at precision {precision!r}") from None
