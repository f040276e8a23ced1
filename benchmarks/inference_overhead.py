"""What whole-volume synthesis costs around the network: seconds per volume with a do-nothing network.

The predictor of each backend (``jax_impl.predict.JaxPredictor``, ``torch_ref.predict.TorchPredictor``)
wraps a network that returns its input's centre channel (no arithmetic), so what is timed is
everything :func:`mrsynth.inference.volume.synthesize_subject` does around it: gathering slices
or patches, padding, transfers, 3D blending, clipping and masking. ``numpy`` is a plain host
callable (``lambda batch: batch``). Per backend and mode: the first volume (it compiles), then
the median of ``--repeats`` volumes. On a CPU the "device" is the same cores, so the figure is
host overhead plus the (tiny) device-side work.

    python benchmarks/inference_overhead.py [--shape 256 256 150] [--repeats 5] [--backends jax torch numpy]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrsynth.config import DataConfig, EvalConfig, ModelConfig  # noqa: E402
from mrsynth.inference.volume import synthesize_subject  # noqa: E402

# 2D: slices of the 2D GPU anchor's model depth; 3D: the 3D anchor's patch (configs/bench_gpu.yaml).
MODES = {
    "2D slice-wise": (ModelConfig(dims=2, depth=4, channel_mults=(1, 2, 4, 8, 16)), DataConfig(slice_axis=2)),
    "3D patch-wise": (ModelConfig(dims=3, depth=3, channel_mults=(1, 2, 4, 8)),
                      DataConfig(patch_size=(32, 128, 128))),
}


def jax_predictor(model_cfg: ModelConfig):
    from flax import nnx

    from jax_impl.predict import JaxPredictor

    class CentreChannel(nnx.Module):
        def __call__(self, x):
            c = x.shape[-1] // 2
            return x[..., c : c + 1]

    return JaxPredictor(CentreChannel(), model_cfg)


def torch_predictor(model_cfg: ModelConfig):
    import torch

    from torch_ref.backend import default_device
    from torch_ref.predict import TorchPredictor

    class CentreChannel(torch.nn.Module):
        def forward(self, x):
            c = x.shape[1] // 2
            return x[:, c : c + 1]

    return TorchPredictor(CentreChannel(), model_cfg, default_device())


class NumpyPredictor:
    """A plain host callable: the Predictor contract with no device at all."""

    def __init__(self, model_cfg: ModelConfig) -> None:
        self.model_config = model_cfg

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        c = batch.shape[-1] // 2
        return batch[..., c : c + 1]


PREDICTORS = {"jax": jax_predictor, "torch": torch_predictor, "numpy": NumpyPredictor}
VERBS = ("to_device", "to_host", "zeros", "predict_slices", "predict_patches", "normalize", "clip_and_mask")


def device_wait(backend: str):
    """Returns when a verb's result is computed (JAX dispatches asynchronously; torch on a CPU
    computes inside the call, on CUDA it queues)."""
    if backend == "jax":
        import jax

        return jax.block_until_ready
    import torch

    return (lambda _: torch.cuda.synchronize()) if torch.cuda.is_available() else (lambda _: None)


class DeviceWaits:
    """A predictor whose device verbs wait for their results, adding up the time spent waiting:
    wall time minus that is the host's own time (planning, dispatch, host arithmetic, copies)."""

    def __init__(self, predictor, wait) -> None:
        self.predictor, self.wait, self.waited = predictor, wait, 0.0
        self.model_config = predictor.model_config

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predictor(batch)

    def __getattr__(self, name: str):
        if name not in VERBS or not hasattr(self.predictor, name):
            raise AttributeError(name)
        verb = getattr(self.predictor, name)

        def waited(*args):
            result = verb(*args)
            start = time.perf_counter()
            self.wait(result)
            self.waited += time.perf_counter() - start
            return result

        return waited


def time_volumes(predictor, t1: np.ndarray, mask: np.ndarray, data_cfg: DataConfig,
                 repeats: int) -> tuple[float, list[float], list[float]]:
    """Seconds of the first (compiling) volume, then wall and host seconds of each later one."""
    eval_cfg = EvalConfig()
    walls, hosts = [], []
    for _ in range(repeats + 1):
        if isinstance(predictor, DeviceWaits):
            predictor.waited = 0.0
        start = time.perf_counter()
        out = synthesize_subject(t1, mask, predictor, data_cfg, eval_cfg, (-10.0, 10.0)).t2
        walls.append(time.perf_counter() - start)
        hosts.append(walls[-1] - getattr(predictor, "waited", 0.0))
        assert out.shape == t1.shape and out.dtype == np.float32
    return walls[0], walls[1:], hosts[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 150])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=list(PREDICTORS), choices=list(PREDICTORS))
    parser.add_argument("--modes", nargs="+", default=["2d", "3d"], choices=["2d", "3d"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    t1 = rng.standard_normal(args.shape, dtype=np.float32)
    mask = np.ones(args.shape, np.float32)
    print(f"volume {tuple(args.shape)}, do-nothing network, median of {args.repeats} volumes after the first")
    print("wall: seconds per volume; host: wall minus the time spent waiting for the device's results")
    print(f"{'backend':8} {'mode':14} {'first s':>8} {'wall s':>7} {'host s':>7} {'host min':>8} {'host max':>8}")
    for backend in args.backends:
        for mode, (model_cfg, data_cfg) in MODES.items():
            if mode[:2].lower() not in args.modes:
                continue
            predictor = PREDICTORS[backend](model_cfg)
            if backend != "numpy":
                predictor = DeviceWaits(predictor, device_wait(backend))
            first, walls, hosts = time_volumes(predictor, t1, mask, data_cfg, args.repeats)
            print(f"{backend:8} {mode:14} {first:8.3f} {statistics.median(walls):7.3f} "
                  f"{statistics.median(hosts):7.3f} {min(hosts):8.3f} {max(hosts):8.3f}", flush=True)


if __name__ == "__main__":
    main()
