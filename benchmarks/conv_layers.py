"""Each convolution of the cohort's 2D U-Net (batch 16 of 128x128, 5 input slices, 16-32-64-128
channels), forward and both gradients, timed alone as each backend's model builds it (JAX:
``jax_impl.layers.conv`` and ``ConvTranspose2x``, NHWC, jit; PyTorch: ``torch_ref.layers``'
classes, NCHW, eager), on this machine: where a backend's training step spends its time, and
which kernels XLA:CPU compiled each JAX step to (a library's fusions, or XLA's own convolution and
dot instructions), so an ``XLA_FLAGS`` setting shows whether it changed the route. A benchmark,
not a test.

    python benchmarks/conv_layers.py
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jax_impl.layers import ConvTranspose2x, conv  # noqa: E402
from mrsynth.bench.backends import median_seconds  # noqa: E402
from torch_ref.layers import conv_class, conv_transpose_class  # noqa: E402

BATCH = 16
ENCODER = [(128, 5, 16), (128, 16, 16), (64, 16, 32), (64, 32, 32), (32, 32, 64), (32, 64, 64), (16, 64, 128),
           (16, 128, 128)]  # (input resolution, in channels, out channels) of each 3x3 convolution
TRANSPOSED = [(16, 128, 64), (32, 64, 32), (64, 32, 16)]  # 2x2 stride 2, input resolution
DECODER = [(32, 128, 64), (64, 64, 32), (128, 32, 16)]  # a level's first 3x3 after the skip concatenation


def median_ms(step: Callable[[], object]) -> float:
    """Median of 5 calls after 2 untimed ones (compiled and warm)."""
    return 1000 * median_seconds(step, repeats=5, warmup=2)


INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = \S+ ([\w-]+)\(")  # name, opcode (not of tuple shapes)


def kernel_of(name: str, opcode: str, line: str) -> str | None:
    """The library an instruction of the compiled entry computation runs, if it is one of the
    step's convolutions or matmuls: XLA:CPU names a library fusion after its library."""
    for prefix, library in (("ynn_fusion", "YNNPACK"), ("xnn_fusion", "XNNPACK")):
        if name.startswith(prefix):
            return library
    if opcode == "custom-call" and "onednn" in line:
        return "oneDNN"
    return {"convolution": "XLA conv", "dot": "XLA dot"}.get(opcode)


def jax_kernels(compiled_hlo: str) -> str:
    """The compiled step's convolution and matmul kernels by library, counted in its entry
    computation (fused computations repeat the convolution they wrap, so they are not read)."""
    entry = compiled_hlo[compiled_hlo.index("ENTRY"):]
    counts = Counter(kernel for line in entry[:entry.index("\n}")].splitlines()
                     if (match := INSTRUCTION.match(line)) and (kernel := kernel_of(*match.groups(), line)))
    return ", ".join(f"{kernel} x{n}" for kernel, n in sorted(counts.items())) or "none found"


def jax_ms(res: int, cin: int, cout: int, transposed: bool) -> tuple[float, str]:
    rngs = nnx.Rngs(params=0)
    layer = (ConvTranspose2x(2, cin, cout, dtype=jnp.float32, rngs=rngs) if transposed
             else conv(2, cin, cout, 3, dtype=jnp.float32, rngs=rngs))
    graphdef, params = nnx.split(layer)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((BATCH, res, res, cin), dtype=np.float32))

    def forward(x, params):
        return nnx.merge(graphdef, params)(x).sum()
    step = jax.jit(jax.value_and_grad(forward, argnums=(0, 1))).lower(x, params).compile()
    return median_ms(lambda: jax.block_until_ready(step(x, params))), jax_kernels(step.as_text())


def torch_ms(res: int, cin: int, cout: int, transposed: bool) -> float:
    torch.manual_seed(0)
    x = torch.randn(BATCH, cin, res, res, requires_grad=True)
    layer = conv_transpose_class(2)(cin, cout, 2, stride=2) if transposed else conv_class(2)(cin, cout, 3, padding=1)

    def step() -> None:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()
    return median_ms(step)


def main() -> None:
    cases = ([("conv 3x3", *c, False) for c in ENCODER] + [("transposed 2x2", *c, True) for c in TRANSPOSED]
             + [("conv 3x3, decoder", *c, False) for c in DECODER])
    print("| op | input resolution | in | out | JAX ms | PyTorch ms | JAX / PyTorch | JAX kernels |")
    print("|---|---|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    for name, res, cin, cout, transposed in cases:
        (j, kernels), t = jax_ms(res, cin, cout, transposed), torch_ms(res, cin, cout, transposed)
        totals = [totals[0] + j, totals[1] + t]
        print(f"| {name} | {res} | {cin} | {cout} | {j:.1f} | {t:.1f} | {j / t:.2f} | {kernels} |")
    print(f"| **sum** | | | | **{totals[0]:.1f}** | **{totals[1]:.1f}** | **{totals[0] / totals[1]:.2f}** | |")
    print(json.dumps({"jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                      "xla_flags": os.environ.get("XLA_FLAGS", "")}))


if __name__ == "__main__":
    main()
