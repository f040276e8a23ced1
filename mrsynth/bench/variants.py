"""Benchmark variants: a named precision (:mod:`mrsynth.precision`, the same names as
``train.precision``) plus optional backend-specific switches, e.g. ``bfloat16+compile+cl``.

| token     | meaning | backends |
|-----------|---------|----------|
| `float32` | float32, no TF32 (JAX precision 'highest'; torch TF32 off) | both |
| `tf32`    | float32 storage, TF32 matmuls/convs on NVIDIA (JAX precision 'default'; torch TF32 on) | both |
| `bfloat16` | bfloat16 activations, float32 parameters (JAX compute dtype; torch autocast) | both |
| `compile` | ``torch.compile`` of the model (mode "default") | torch |
| `autotune` | ``torch.compile`` of the model, mode "max-autotune" (Triton GEMM/conv autotuning, CUDA graphs) | torch |
| `compileopt` | ``torch.compile`` of gradient clipping + the AdamW step (else fused AdamW on CUDA) | torch |
| `cl`      | channels-last memory format on CUDA: ``channels_last`` (2D), ``channels_last_3d`` (3D) | torch |
| `pmap`    | ``jax.pmap`` step instead of jit + sharding | jax |
| `native3d` | `model.conv3d: native`: XLA's own 3D conv and transposed conv | jax, 3D |
| `stacked2d` | `model.conv3d: stacked2d`: depth-stacked 2D convs, matmul transposed convs | jax, 3D |

A variant that names a switch of one backend runs on that backend only; a ``model.conv3d`` switch
only in 3D cases (without one, the config's ``model.conv3d`` applies: ``auto`` by default).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mrsynth.errors import ConfigError
from mrsynth.precision import TRAINING_PRECISIONS

SWITCH_BACKEND = {"compile": "torch", "autotune": "torch", "compileopt": "torch", "cl": "torch", "pmap": "jax",
                  "native3d": "jax", "stacked2d": "jax"}
CONV3D_SWITCHES = {"native3d": "native", "stacked2d": "stacked2d"}  # switch -> model.conv3d


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str
    switches: frozenset[str]

    def applies_to(self, backend: str) -> bool:
        return all(SWITCH_BACKEND[s] == backend for s in self.switches)

    def applies_to_dims(self, dims: int) -> bool:
        """A ``model.conv3d`` switch changes nothing in 2D: such a variant is measured in 3D only."""
        return dims == 3 or not self.switches & CONV3D_SWITCHES.keys()

    def model_overrides(self) -> dict[str, Any]:
        """The ``model`` config values this variant sets."""
        return {"conv3d": CONV3D_SWITCHES[s] for s in self.switches & CONV3D_SWITCHES.keys()}

    def train_overrides(self) -> dict[str, Any]:
        """The ``train`` config values this variant sets (the engines read them)."""
        return {
            "precision": self.precision,
            "torch_compile": bool({"compile", "autotune"} & self.switches),
            "torch_compile_mode": "max-autotune" if "autotune" in self.switches else "default",
            "torch_compile_optimizer": "compileopt" in self.switches,
            "channels_last": "cl" in self.switches,
            "parallel": "pmap" if "pmap" in self.switches else "sharded",
        }


def parse_variant(text: str) -> Variant:
    """``"bfloat16+compile+cl"`` -> Variant; ConfigError naming the bad token."""
    tokens = [t.strip().lower() for t in text.split("+") if t.strip()]
    precisions = [t for t in tokens if t in TRAINING_PRECISIONS]
    unknown = [t for t in tokens if t not in TRAINING_PRECISIONS and t not in SWITCH_BACKEND]
    if unknown:
        raise ConfigError(f"benchmark.variants: unknown token {unknown[0]!r} in {text!r} "
                          f"(precisions: {', '.join(TRAINING_PRECISIONS)}; switches: {', '.join(SWITCH_BACKEND)})")
    if len(precisions) != 1:
        raise ConfigError(f"benchmark.variants: {text!r} needs exactly one of {', '.join(TRAINING_PRECISIONS)}")
    switches = frozenset(t for t in tokens if t in SWITCH_BACKEND)
    if len({SWITCH_BACKEND[s] for s in switches}) > 1:
        raise ConfigError(f"benchmark.variants: {text!r} mixes switches of both backends")
    if len(switches & CONV3D_SWITCHES.keys()) > 1:
        raise ConfigError(f"benchmark.variants: {text!r} names two model.conv3d switches")
    name = "+".join([precisions[0], *sorted(switches)])
    return Variant(name, precisions[0], switches)
