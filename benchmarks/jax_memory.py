"""What the compiled JAX train step needs in memory at the GPU anchors, measured on any machine.

Lowers and compiles (never runs) the real training step (the objective's step, jitted with the
state donated as ``JaxEngine`` does) at the anchors of ``configs/bench_gpu.yaml``, bfloat16:
2D depth 4, base 64, batch 32 of 256x256; 3D depth 3, base 32, batch 16 of 32x128x128 (one line
per 3D variant: the conv formulations). Prints XLA's ``compiled.memory_analysis()``: scratch
(temp), arguments, outputs. Then one GroupNorm layer, forward + backward, at (32, 256, 256, 64)
bfloat16: ``cost_analysis()`` bytes accessed and scratch, for the project's GroupNorm and for
``nnx.GroupNorm``, twice: differentiating ``sum(y)`` (a constant cotangent XLA simplifies) and
with a given cotangent (what a network's backward passes).

``--norm nnx`` builds the U-Nets with ``nnx.GroupNorm`` in place of the project's (a reference:
same shapes, no float32-accurate statistics). Compiling on a CPU takes about a minute per anchor
and a few GiB of host memory. The script reads only public names, so it also runs against an
older checkout (``PYTHONPATH=OLD_CHECKOUT python benchmarks/jax_memory.py --variants-3d
bfloat16,bfloat16+native3d``) for before/after figures.

    python benchmarks/jax_memory.py [--cases 2d,3d,layer] [--norm ours|nnx] [--variants-3d ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: an older checkout named there is the one measured

from mrsynth.bench.settings import case_config, load_bench_config  # noqa: E402
from mrsynth.bench.variants import parse_variant  # noqa: E402
from mrsynth.config import Config  # noqa: E402

from jax_impl import layers  # noqa: E402
from jax_impl.objectives import OBJECTIVES  # noqa: E402
from jax_impl.precision import precision_scope  # noqa: E402
from jax_impl.train_state import init_train_state  # noqa: E402

GIB = 2**30
PROJECT_GROUP_NORM = layers.GroupNorm  # kept: --norm nnx replaces the module attribute
LAYER_SHAPE = (32, 256, 256, 64)


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def compiled_train_step(cfg: Config):
    """The objective's step, jitted as the engine jits it (state donated), compiled for one device."""
    objective = OBJECTIVES.lookup(cfg.train.objective)
    txs = objective.optimizers(cfg)
    graphdefs, state = init_train_state(objective.models(cfg, None), txs, cfg.train.seed)
    step = jax.jit(objective.make_step(graphdefs, txs, cfg, None), donate_argnums=0)
    shape = (cfg.train.batch_size, *cfg.data.patch_size)
    batch = {"t1": jax.ShapeDtypeStruct((*shape, cfg.model.in_channels), jnp.float32),
             "t2": jax.ShapeDtypeStruct((*shape, 1), jnp.float32),
             "mask": jax.ShapeDtypeStruct((*shape, 1), jnp.float32)}
    with precision_scope(cfg.train.precision):
        return step.lower(abstract(state), batch).compile()


def step_rows(config: Path, cases: list[str], variants_3d: list[str]) -> None:
    settings, raw = load_bench_config(config)
    print(f"{'train step (compiled, not run)':44} {'temp GiB':>9} {'args GiB':>9} {'out GiB':>8} {'compile s':>10}")
    for dims, variant_names in ((2, ["bfloat16"]), (3, variants_3d)):
        if f"{dims}d" not in cases:
            continue
        case = settings.cases[f"{dims}d"]
        for name in variant_names:
            cfg = case_config(raw, dims, case, case.batch[0], parse_variant(name))
            start = time.perf_counter()
            memory = compiled_train_step(cfg).memory_analysis()
            label = f"{dims}D batch {case.batch[0]}x{'x'.join(map(str, case.size))} {name}"
            print(f"{label:44} {memory.temp_size_in_bytes / GIB:9.2f} {memory.argument_size_in_bytes / GIB:9.2f} "
                  f"{memory.output_size_in_bytes / GIB:8.2f} {time.perf_counter() - start:10.1f}", flush=True)


def layer_rows() -> None:
    """One GroupNorm(8) over 64 channels, forward + backward, bfloat16 activations."""
    norms = {"ours": PROJECT_GROUP_NORM(LAYER_SHAPE[-1], num_groups=8, epsilon=1e-5, dtype=jnp.bfloat16),
             "nnx.GroupNorm": nnx.GroupNorm(LAYER_SHAPE[-1], num_groups=8, epsilon=1e-5, dtype=jnp.bfloat16,
                                            rngs=nnx.Rngs(0))}
    x = jax.ShapeDtypeStruct(LAYER_SHAPE, jnp.bfloat16)
    title = f"GroupNorm layer fwd+bwd {'x'.join(map(str, LAYER_SHAPE))} bf16"
    print(f"\n{title:44} {'GB accessed':>12} {'temp GiB':>9}")
    for name, norm in norms.items():
        graphdef, params = nnx.split(norm)

        def apply(p, v, graphdef=graphdef):
            return nnx.merge(graphdef, p)(v)

        def grad_of_sum(p, v):
            return jax.grad(lambda pp, vv: jnp.sum(apply(pp, vv).astype(jnp.float32)), argnums=(0, 1))(p, v)

        def forward_and_vjp(p, v, cotangent):
            y, vjp = jax.vjp(apply, p, v)
            return y, vjp(cotangent)

        for how, fn, args in (("grad of sum(y)", grad_of_sum, (params, x)),
                              ("y and vjp(cotangent)", forward_and_vjp, (params, x, x))):
            compiled = jax.jit(fn).lower(*args).compile()
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            print(f"{name + ', ' + how:44} {cost['bytes accessed'] / 1e9:12.2f} "
                  f"{compiled.memory_analysis().temp_size_in_bytes / GIB:9.2f}", flush=True)


def use_nnx_group_norm() -> None:
    """Swap the project's GroupNorm for nnx.GroupNorm in every network built after this call."""
    def plain(num_features: int, *, num_groups: int, epsilon: float, dtype: jnp.dtype) -> nnx.Module:
        return nnx.GroupNorm(num_features, num_groups=num_groups, epsilon=epsilon, dtype=dtype, rngs=nnx.Rngs(0))

    layers.GroupNorm = plain


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "bench_gpu.yaml")
    parser.add_argument("--cases", default="2d,3d,layer", help="comma list of 2d, 3d, layer")
    parser.add_argument("--norm", choices=("ours", "nnx"), default="ours",
                        help="GroupNorm of the U-Nets: the project's, or nnx.GroupNorm as a reference")
    parser.add_argument("--variants-3d", default="bfloat16+stacked2d,bfloat16+native3d",
                        help="benchmark variants of the 3D anchor (one line each)")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    print(f"jax {jax.__version__} on {jax.default_backend()}; U-Net GroupNorm: {args.norm}")
    if args.norm == "nnx":
        use_nnx_group_norm()
    step_rows(args.config, cases, args.variants_3d.split(","))
    if "layer" in cases:
        layer_rows()


if __name__ == "__main__":
    main()
