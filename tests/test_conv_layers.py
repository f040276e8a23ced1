"""benchmarks/conv_layers.py's kernel column: which library XLA:CPU compiled a step's
convolutions and matmuls to, read from the compiled HLO's entry computation only."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import conv_layers  # noqa: E402

HLO = """HloModule jit_step

%fused_computation (param_0: f32[2,4,4,3], param_1: f32[3,3,3,3]) -> f32[2,4,4,3] {
  ROOT %convolution.1 = f32[2,4,4,3]{3,2,1,0} convolution(%param_0, %param_1), window={size=3x3}
}

ENTRY %main (x: f32[2,4,4,3], w: f32[3,3,3,3]) -> (f32[2,4,4,3], f32[3,3,3,3]) {
  %x = f32[2,4,4,3]{3,2,1,0} parameter(0)
  %ynn_fusion = f32[2,4,4,3]{3,2,1,0} fusion(%x, %w), kind=kCustom, calls=%fused_computation
  %ynn_fusion.1 = f32[3,3,3,3]{3,2,1,0} fusion(%x, %x), kind=kCustom, calls=%fused_computation
  %convolution.2 = f32[2,4,4,3]{3,2,1,0} convolution(%x, %w), window={size=3x3}
  %custom-call.3 = f32[2,4,4,3]{3,2,1,0} custom-call(%x, %w), custom_call_target="__onednn$convolution"
  %dot.4 = f32[32,3]{1,0} dot(%x, %w), lhs_contracting_dims={1}
  %add_fusion = f32[2,4,4,3]{3,2,1,0} fusion(%x), kind=kLoop, calls=%add_computation
  ROOT %tuple = (f32[2,4,4,3]{3,2,1,0}, f32[3,3,3,3]{3,2,1,0}) tuple(%ynn_fusion, %ynn_fusion.1)
}
"""


def test_kernels_are_counted_by_library_in_the_entry_computation_only():
    # the fused computation's convolution is the YNNPACK fusion's body, not a kernel of its own
    assert conv_layers.jax_kernels(HLO) == "XLA conv x1, XLA dot x1, YNNPACK x2, oneDNN x1"


def test_a_step_without_convolutions_or_matmuls_says_so():
    assert conv_layers.jax_kernels("ENTRY %main () -> f32[] {\n  ROOT %c = f32[] constant(1)\n}\n") == "none found"
