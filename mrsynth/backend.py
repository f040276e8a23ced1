"""The contract both backends implement, and lazy loading of a backend by name.

``mrsynth`` owns the training loop (``mrsynth.training.loop``), the data pipeline, inference
and evaluation; a backend only supplies a :class:`TrainEngine` (models + optimizers + step +
checkpoints) and a :class:`Predictor`. A backend module is imported only when chosen, so a
user with only JAX (or only PyTorch) installed can run it.

What an engine trains is its *training objective* (``train.objective``): a per-backend entry
in ``jax_impl/objectives.py`` and ``torch_ref/objectives.py`` that names the models it
trains, builds one optimizer per trained model and builds the step that updates them.
``supervised`` (today's only one) trains the :data:`GENERATOR` U-Net on the registered loss
(``train.loss``, ``<backend>/losses.py``). A second model with its own optimizer (a PatchGAN
discriminator) is a new objective registered in both backends plus its name in
``mrsynth.config.CHOICES``; the engines, their checkpoints (keyed by model name), the loop
and the metrics logging stay as they are. Whatever the objective, predictors, validation and
the portable weight file use the generator alone.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mrsynth.config import Config, ModelConfig
from mrsynth.errors import MrsynthError
from mrsynth.extras import import_optional

BACKENDS = {"jax": "jax_impl.backend", "torch": "torch_ref.backend"}
GENERATOR = "generator"  # the model that synthesizes T2: predicted with and exported
DISCRIMINATOR = "discriminator"  # pix2pix's critic: trained with the generator, never exported

# A training batch: numpy, float32, channels-last. Keys: "t1", "t2" -> (B, H, W, 1) or
# (B, D, H, W, 1); "mask" -> same shape, float32 0/1 foreground.
Batch = Mapping[str, np.ndarray]


@runtime_checkable
class BatchPredictor(Protocol):
    """Eval-mode batch predictor: normalized T1 batch in, normalized T2 batch out (host arrays).

    Enough for whole-volume synthesis (an ONNX session, a test's stand-in): such a predictor's
    volumes are assembled on the host by :class:`mrsynth.inference.host.HostPredictor`.
    """

    model_config: ModelConfig

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, *spatial, C) float32 -> (B, *spatial, 1) float32; any spatial size (pads inside)."""
        ...


@runtime_checkable
class Predictor(BatchPredictor, Protocol):
    """A batch predictor that also assembles whole volumes on its own device.

    :mod:`mrsynth.inference.volume` plans the slices/patches, full-size batches and blending
    weights once, framework-free, and drives these verbs; the volume, the network's outputs and
    the blended sums stay on the device (float32) and the result crosses to the host once.
    A volume is ``(D, H, W)``; arrays named ``rows``/``starts`` are host int32 arrays of one
    full batch, of which the first ``count`` entries are real (the rest repeat the last one and
    their outputs are dropped), so every batch of a volume has one shape.
    """

    def to_device(self, array: np.ndarray) -> Any:
        """A host array on the predictor's device: float32, or bool as given (a mask: 1 byte a voxel)."""
        ...

    def to_host(self, array: Any) -> np.ndarray:
        """A device array as a float32 numpy array."""
        ...

    def zeros(self, shape: tuple[int, ...]) -> Any:
        """A float32 device array of zeros, made without the host waiting for the fill."""
        ...

    def predict_slices(self, out: Any, volume: Any, rows: np.ndarray, count: int, axis: int) -> Any:
        """2D: the network on the slices ``rows`` (B, C: each slice and its context, along
        ``axis``) of ``volume``; writes the first ``count`` outputs into ``out`` at each row's
        centre slice and returns ``out`` (it may be updated in place)."""
        ...

    def predict_patches(self, accum: Any, volume: Any, starts: np.ndarray, count: int, weight: Any) -> Any:
        """3D: the network on the patches of ``volume`` at ``starts`` (B, 3) of ``weight``'s
        shape; adds the first ``count`` outputs times ``weight`` into ``accum`` and returns it
        (it may be updated in place)."""
        ...

    def normalize(self, accum: Any, factors: tuple[np.ndarray, np.ndarray, np.ndarray],
                  shape: tuple[int, int, int]) -> Any:
        """``accum`` times the outer product of the three per-axis ``factors``, cropped to ``shape``."""
        ...

    def clip_and_mask(self, volume: Any, mask: Any, lo: float, hi: float) -> tuple[Any, Any]:
        """The output contract: ``volume`` clipped to [lo, hi] and 0 where ``mask`` is not > 0;
        also the fraction of the voxels inside the mask that were clipped (0 with none inside),
        a device scalar: reading it is left to the caller, after the volume, so this verb does
        not wait for the device."""
        ...


@runtime_checkable
class TrainEngine(Protocol):
    """Models, optimizers, compiled step and checkpoints of one backend, driven by the shared loop.

    The loop never touches framework objects: it hands numpy batches in, gets opaque metric
    handles back (no host sync per step), and asks for host values every ``log_every`` steps.
    The engine applies the run's named precision (``train.precision``) to its steps and to
    its predictor.
    """

    process_index: int
    process_count: int

    def train_step(self, batch: Batch) -> Any:
        """Run one training step (every optimizer's update) on a global batch shard; return
        device-side metrics: a dict whose keys the objective chooses, always with ``loss``
        (the NaN guard watches it), ``grad_norm`` and ``lr``, plus the loss terms."""
        ...

    def place_batch(self, batch: Batch) -> Any:
        """The arrays of ``batch`` the step reads, on the device (started, not waited for): the
        loop places the next batches while a step runs."""
        ...

    def train_step_placed(self, placed: Any) -> Any:
        """:meth:`train_step` on a batch from :meth:`place_batch`."""
        ...

    def fetch_metrics(self, handles: list[Any]) -> list[dict[str, float]]:
        """Host values of the given steps' metrics, every key as a float (syncs)."""
        ...

    def predictor(self) -> Predictor:
        """A predictor using the generator's current parameters (for validation)."""
        ...

    def save_checkpoint(self, step: int, extra: dict[str, Any], is_best: bool) -> None:
        """Save every model's parameters and optimizer state (keyed by model name), RNG and
        ``extra`` (JSON-able: data iterator state...)."""
        ...

    def restore_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """Restore the latest checkpoint in place; return (step, extra), or None if there is none.

        A checkpoint of other models or another layout is a CheckpointError naming its path."""
        ...

    def close(self) -> None:
        """Wait for asynchronous saves and release resources."""
        ...


class Backend(Protocol):
    name: str

    def create_engine(self, cfg: Config, run_dir: Path) -> TrainEngine:
        """A fresh engine (initialized parameters) writing checkpoints under ``run_dir``."""
        ...

    def load_predictor(self, source: Path, which: str = "best") -> Predictor:
        """From a run directory (its ``which`` checkpoint: best | last, chosen by
        :func:`mrsynth.checkpoints.pick_checkpoint`) or a portable weight file."""
        ...

    def export_weights(self, run_dir: Path, out: Path, which: str = "best") -> None:
        """Convert a run directory's checkpoint (its generator) into a portable weight file.

        Metadata: ``mrsynth.runs.portable_metadata(run_dir, which)``.
        """
        ...


def import_backend_module(name: str, modules: dict[str, str]) -> Any:
    """Import ``modules[name]`` (a backend-side module); one line naming the extra if its
    framework is not installed."""
    if name not in modules:
        raise MrsynthError(f"unknown backend {name!r} (choose from {', '.join(modules)})")
    return import_optional(modules[name], f"backend {name!r}")


def get_backend(name: str) -> Backend:
    """Import and instantiate a backend by name (lazily: only its framework is imported).

    Callers use ``mrsynth.backend.get_backend(...)`` through the module, not a name imported
    from it, so the lookup happens at call time (and a test's substitute never outlives it).
    """
    return import_backend_module(name, BACKENDS).create_backend()


def library_versions() -> dict[str, str | None]:
    """Versions of the installed frameworks and the libraries that shape the data, for run
    directories and reports (a changed resampler or reader can change the numbers)."""
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, str | None] = {}
    for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "grain", "numpy", "scipy",
                 "nibabel", "SimpleITK"):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            info[dist] = None
    return info
