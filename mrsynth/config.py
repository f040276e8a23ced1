"""Typed run configuration: dataclasses, YAML loading, ``--set`` overrides and validation.

One config fully determines a run (data, model, training, evaluation), so it is written into
every run directory and reloaded by ``predict``/``evaluate``/``compare``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrsynth.errors import ConfigError
from mrsynth.losses import LOSS_NAMES
from mrsynth.precision import TRAINING_PRECISIONS


@dataclass
class DataConfig:
    """Where the paired volumes come from and how they are preprocessed and sampled."""

    #: Where the pairs come from: `phantom` generates (once) IXI-named phantom subjects into
    #: `data.root`, then reads them like `ixi`; `ixi`: raw IXI names (`<id>-T1.nii.gz`,
    #: `<id>-T2.nii.gz`, optional `-mask`); `course`: `-T1_fcm` / `-T2_reg_fcm` names; `manifest`:
    #: the CSV in `data.manifest`; `glob`: the patterns `data.t1_glob` / `data.t2_glob`.
    source: str = "phantom"
    #: Folder the volumes are found in: searched recursively for `phantom`, `ixi` and `course`;
    #: the base of the `glob` patterns; `phantom` writes its subjects here.
    root: str = "data/phantom"
    #: `manifest`: a CSV `subject,t1,t2[,mask][,mask_method][,site][,split]` (what `prepare-ixi`
    #: writes), paths relative to the CSV's folder; a relative path not found from the working
    #: directory is looked up under `data.root`.
    manifest: str | None = None
    #: `glob`: pattern of the T1 files under `data.root`; the part matched by `*` is the subject id.
    t1_glob: str | None = None
    #: `glob`: pattern of the T2 files under `data.root`, paired with the T1s by subject id.
    t2_glob: str | None = None
    #: `glob`: optional pattern of the brain/head mask files under `data.root`.
    mask_glob: str | None = None
    #: `phantom`: number of phantom subjects generated.
    phantom_subjects: int = 12
    #: `phantom`: volume shape of each generated subject (voxels, RAS+ axes; each at least 16).
    phantom_shape: tuple[int, int, int] = (96, 112, 80)
    #: `phantom`: seed of the generated anatomy and signal; a folder holding other phantom
    #: settings is refused, not regenerated.
    phantom_seed: int = 0
    #: Split by subject (never by slice): train, val and test fractions (>= 0, summing to 1) for
    #: the subjects no explicit list names; a manifest whose every row has a `split` is used as it
    #: is when no list is given.
    split_fractions: tuple[float, float, float] = (0.67, 0.17, 0.16)
    #: Seed of the fraction split's shuffle of the sorted subject ids (independent of file order).
    split_seed: int = 0
    #: Explicit training subjects (ids); an explicit list wins over the fractions and a
    #: manifest's `split` column.
    train_subjects: list[str] | None = None
    #: Explicit validation subjects (ids); wins over the fractions and a manifest's `split` column.
    val_subjects: list[str] | None = None
    #: Explicit test subjects (ids); wins over the fractions and a manifest's `split` column.
    test_subjects: list[str] | None = None
    #: Brain/head mask (the same for training and test): `given_or_otsu` (the subject's mask file
    #: when there is one, else Otsu) | `otsu` (Otsu threshold of the T1, closing, hole filling,
    #: largest component) | `given` (mask files required) | `nonzero` (already skull-stripped
    #: data: the T1's non-zero voxels, holes filled) | `none` (every voxel).
    mask: str = "given_or_otsu"
    #: Intensity normalization of T1 and T2, from statistics inside the mask: `zscore` (mean 0,
    #: SD 1) | `percentile` (`data.percentiles` -> 0 and 1) | `wm_peak` (the brightest mode of the
    #: smoothed histogram -> 1) |
    #: `fcm` | `whitestripe` | `nyul` | `kde` (standard MR methods via `intensity-normalization`;
    #: see `docs/ARCHITECTURE.md`).
    normalization: str = "zscore"
    #: Low and high percentiles: `percentile` maps them to 0 and 1; `nyul` uses them as the two
    #: ends of its landmarks (low < 10, high > 90).
    percentiles: tuple[float, float] = (1.0, 99.0)
    #: `nyul`: the T1 standard scale, the intensities at the landmark percentiles (the ends of
    #: `data.percentiles` -> 0 and 1, the deciles between: 11 increasing values); empty: learned on
    #: the training subjects when a run starts.
    nyul_t1_landmarks: tuple[float, ...] = ()
    #: `nyul`: the T2 standard scale (11 increasing values, as `data.nyul_t1_landmarks`); empty:
    #: learned on the training subjects when a run starts. Set both or neither.
    nyul_t2_landmarks: tuple[float, ...] = ()
    #: Cache of preprocessed volumes (memory-mapped `.npy`, stored slice-axis-first so a slice is
    #: one contiguous read), keyed by file contents and settings (`data.slice_axis` included);
    #: `""` disables it.
    cache_dir: str = ".cache/mrsynth"
    #: 2D: the axis of the RAS+ volume that slices are taken along (0, 1 or 2; 2 = axial).
    slice_axis: int = 2
    #: 2D: which slices training sees: `slice_axis` (along `data.slice_axis`) | `all` (along each of
    #: the three axes, the foreground rule per axis, slices cropped/padded to `data.patch_size`): a
    #: model that `eval.planes: all` can apply in every direction and fuse.
    planes: str = "slice_axis"
    #: 2.5D: a 2D model also sees this many neighbouring slices on each side, as
    #: `2 * context_slices + 1` input channels (edge slices repeated at the volume's ends);
    #: training, validation, `evaluate` and `predict` alike, and the weight file carries it.
    context_slices: int = 0
    #: 2D: training slices whose foreground (mask) fraction is below this are skipped.
    min_foreground: float = 0.05
    #: 2D: the slice crop/pad size (2 numbers); 3D: the patch size (3 numbers); each a multiple
    #: of `2 ** model.depth`.
    patch_size: tuple[int, ...] = (96, 112)
    #: Spatial augmentation (T1, T2 and mask alike): probability of flipping each axis.
    flip_prob: float = 0.5
    #: Spatial augmentation: largest rotation in degrees, drawn uniformly in each plane (0: off).
    rotate_deg: float = 0.0
    #: Spatial augmentation: scaling drawn uniformly in `1 +- scale_range` (0: off).
    scale_range: float = 0.0
    #: Intensity augmentation (input T1 only, inside the mask): gamma drawn in
    #: `1 +- gamma_range` (0: off).
    gamma_range: float = 0.0
    #: Intensity augmentation (input T1 only, inside the mask): SD of added Gaussian noise, in
    #: normalized units (0: off).
    noise_std: float = 0.0
    #: Scanner-like intensity augmentation (input T1 only, inside the mask): a smooth multiplicative
    #: field `exp(a p)`, `p` a random cubic polynomial with max `|p|` = 1 and `a` up to
    #: `bias_field` (in [0, 1]; 0: off).
    bias_field: float = 0.0
    #: Scanner-like intensity augmentation (input T1 only, inside the mask): deviations from the
    #: in-mask mean scaled by a factor in `1 +- contrast_range` (in [0, 1); 0: off).
    contrast_range: float = 0.0
    #: grain worker processes that make training batches (0 = in-process); batches never depend
    #: on it.
    workers: int = 0
    #: Batches the grain pipeline buffers ahead of the training step (the read thread's buffer,
    #: or each worker's read and output buffers); at least 1.
    prefetch: int = 2
    #: 3D only: patches drawn per training volume per epoch (the epoch length is this x volumes).
    patches_per_volume: int = 16


@dataclass
class ModelConfig:
    """The network, named once: fully determines the architecture in both backends."""

    #: Which network: a name registered in both backends' model registries
    #: (`register_architecture` in `jax_impl/model.py` and `torch_ref/model.py`); an unregistered
    #: name fails when the model is built.
    arch: str = "unet"
    #: Spatial dimensions: 2 (slices, 2.5D) or 3 (patches).
    dims: int = 2
    #: Number of down-sampling levels of the U-Net (at least 1).
    depth: int = 3
    #: Channels of the finest level; each level has `base_channels x channel_mults[i]` channels.
    base_channels: int = 16
    #: Channel multiplier of each level, finest first (`depth + 1` entries).
    channel_mults: tuple[int, ...] = (1, 2, 4, 8)
    #: Normalization after each convolution: `group` | `batch` | `instance` | `none`.
    norm: str = "group"
    #: `group`: number of groups (`min(groups, channels)`; must divide every level's channels).
    groups: int = 8
    #: epsilon of every normalization layer (set explicitly in both frameworks).
    norm_eps: float = 1e-5
    #: Up-sampling in the decoder: `transpose` (2x2 stride-2 transposed convolution) |
    #: `resize_conv` (nearest x2, then a 3x3 convolution).
    upsample: str = "transpose"
    #: Down-sampling in the encoder: `maxpool` (2x2 max pooling) | `conv` (3x3 stride-2 convolution).
    downsample: str = "maxpool"
    #: Activation: `relu` | `leaky_relu` (negative slope 0.01) | `silu`.
    activation: str = "relu"
    #: Residual conv blocks: each block adds its input (through a 1x1 convolution when the channels
    #: change) before its last activation.
    residual: bool = False
    #: Dropout probability between the two convolutions of each block (in [0, 1); training only).
    dropout: float = 0.0
    #: JAX only (same function, same weights; torch ignores it): how 3D convolutions and k2 s2
    #: transposed convolutions are computed. `stacked2d`: 3x3x3 convs as one 2D conv over
    #: depth-shifted inputs, transposed convs as a matmul | `native`: XLA's own 3D conv and
    #: transposed conv | `auto`: stacked2d on a CPU, native on a GPU/TPU (`docs/ARCHITECTURE.md`).
    conv3d: str = "auto"
    #: Not a user key: T1 channels in, `2 * data.context_slices + 1`, derived from `data` (a
    #: resolved run config records it and validation checks it).
    in_channels: int = 1
    #: Not a user key: one T2 channel out.
    out_channels: int = 1

    def level_channels(self) -> list[int]:
        """Channels at each resolution level, finest first (depth + 1 entries)."""
        return [self.base_channels * m for m in self.channel_mults]


@dataclass
class DiscriminatorConfig:
    """pix2pix's conditional PatchGAN: sees (T1 channels, T2) and scores overlapping patches.

    ``layers`` stride-2 4x4 convolutions (width doubling from ``base_channels``, capped at 8x),
    one stride-1 4x4 convolution, then a 4x4 head to one score map; LeakyReLU 0.2; instance
    norm on all but the first. Used by ``train.objective: pix2pix``; its own AdamW (pix2pix:
    lr 2e-4, b1 0.5) with the generator's warmup-cosine shape.
    """

    #: Output channels of the first convolution; each further stride-2 layer doubles it, capped
    #: at 8x.
    base_channels: int = 32
    #: Number of stride-2 4x4 convolutions (3: pix2pix's 70x70 patches).
    layers: int = 3
    #: Normalization of every layer but the first: `instance` | `none`.
    norm: str = "instance"
    #: Adversarial loss: `lsgan` (least squares) | `nonsaturating`.
    loss: str = "lsgan"
    #: Peak learning rate of the discriminator's own AdamW (on the run's warmup-cosine schedule).
    lr: float = 2e-4
    #: The discriminator's AdamW beta1 (pix2pix's 0.5).
    b1: float = 0.5
    #: The discriminator's AdamW beta2.
    b2: float = 0.999

    def layer_widths(self) -> list[int]:
        """Output channels of the ``layers + 1`` blocks: doubling from base_channels, capped at 8x."""
        return [self.base_channels * min(2**i, 8) for i in range(self.layers + 1)]


@dataclass
class TrainConfig:
    """Optimisation and run-loop settings shared by both backends."""

    #: Optimizer updates (training steps) of the run.
    steps: int = 600
    #: Global batch size (split over the devices in data-parallel training).
    batch_size: int = 16
    #: Peak learning rate: linear warmup to it, then cosine decay (one formula for both backends,
    #: `mrsynth/schedule.py`).
    lr: float = 2e-3
    #: Steps of linear learning-rate warmup (in [0, `train.steps`)).
    warmup_steps: int = 50
    #: The cosine decay ends at `lr x end_lr_factor` at the last step.
    end_lr_factor: float = 0.02
    #: AdamW weight decay, on convolution weights only (never biases or norms).
    weight_decay: float = 1e-4
    #: AdamW beta1.
    b1: float = 0.9
    #: AdamW beta2.
    b2: float = 0.999
    #: AdamW epsilon.
    eps: float = 1e-8
    #: Global-norm gradient clipping threshold.
    clip_norm: float = 1.0
    #: What a step trains (models, optimizers, update; see `mrsynth/backend.py`): `supervised` =
    #: the U-Net on `train.loss` | `pix2pix` = the U-Net and a conditional PatchGAN
    #: discriminator (`discriminator.*`), the U-Net on `train.loss` + `adv_weight` x the
    #: adversarial term; logs `adv`, `d_loss`, `d_grad_norm`; the weight file holds the U-Net alone.
    objective: str = "supervised"
    #: The supervised loss (`mrsynth/losses.py`): `l1` | `l1_ssim` (L1 + `ssim_weight` x (1 - SSIM))
    #: | `l1_masked` (L1 inside the brain mask only); every term is logged (`l1`, `ssim`).
    loss: str = "l1"
    #: `l1_ssim`: weight of the (1 - SSIM) term.
    ssim_weight: float = 0.2
    #: `pix2pix`: generator loss = `train.loss` + `adv_weight` x the adversarial term; pix2pix
    #: weighs L1:adversarial 100:1, hence 0.01.
    adv_weight: float = 0.01
    #: `l1_ssim`: the data range R of the SSIM term's constants (C1 = (0.01 R)^2, C2 = (0.03 R)^2),
    #: in normalized units.
    ssim_data_range: float = 4.0
    #: Compute precision (`mrsynth/precision.py`): `float32` (full float32, no TF32) | `tf32`
    #: (TF32 matmuls/convs on NVIDIA GPUs) | `bfloat16` (bf16 activations, float32 parameters and
    #: loss); also the names of benchmark variants and `parity --precision`; `predict` and
    #: `evaluate` compute in the run's precision too.
    precision: str = "float32"
    #: Seed of the model initialization, the data order, augmentation draws and dropout.
    seed: int = 0
    #: A portable weight file (`.safetensors`, written by either framework) the generator starts
    #: from instead of `train.seed`'s initialization: fine-tuning a trained model on new pairs, or
    #: the same initial weights in both backends. `""`: none. Its model config must equal `model`
    #: (the discriminator still starts fresh); `run.json` records its sha256.
    init_weights: str = ""
    #: Log training metrics every this many steps (and at the last); metrics are fetched from
    #: the device only then.
    log_every: int = 25
    #: Validate every this many steps (and at the last); the checkpoint with the lowest
    #: validation MAE is the run's best.
    val_every: int = 200
    #: Validate on at most this many validation subjects, taken in turn from each site (the
    #: manifest's `site` column, IXI's file names; without sites, the first by subject id).
    val_subjects_max: int = 4
    #: Save a checkpoint every this many steps (and at the last step, at a validation with a new
    #: best, and when interrupted).
    ckpt_every: int = 200
    #: Step checkpoints kept (the newest ones; the best checkpoint is kept besides).
    keep_checkpoints: int = 2
    #: JAX data parallelism: `sharded` (jit + NamedSharding over a 'data' mesh) | `pmap`.
    parallel: str = "sharded"
    #: PyTorch: `torch.compile` the models' forward (and backward).
    torch_compile: bool = False
    #: PyTorch: the compile mode, `default` | `max-autotune`.
    torch_compile_mode: str = "default"
    #: PyTorch: also `torch.compile` gradient clipping + the AdamW step.
    torch_compile_optimizer: bool = False
    #: PyTorch on CUDA: channels_last (2D) / channels_last_3d (3D) memory format.
    channels_last: bool = True
    #: PyTorch: deterministic algorithms (`torch.use_deterministic_algorithms`, cuDNN autotuning
    #: off); false: cuDNN autotuning on CUDA.
    deterministic: bool = False


@dataclass
class EvalConfig:
    """Whole-volume inference and metric settings (fixed so numbers are comparable)."""

    #: PSNR/NRMSE/SSIM data range; empty (`null`): the range of the target inside the mask, per
    #: subject.
    data_range: float | None = None
    #: Slices (2D) or patches (3D) per forward pass in whole-volume inference.
    inference_batch: int = 16
    #: 3D: fraction by which neighbouring inference patches overlap (in [0, 1)).
    patch_overlap: float = 0.5
    #: 3D: weights that blend overlapping patches: `gaussian` (nnU-Net's, sigma = size/8) | `constant`.
    blend: str = "gaussian"
    #: 2D: synthesize slice-wise along `data.slice_axis` (`slice_axis`), or along all three axes and
    #: average the three volumes (`all`; their spread is the standard deviation; needs a model
    #: trained with `data.planes: all`). `predict`/`evaluate --planes` override it.
    planes: str = "slice_axis"


@dataclass
class RunConfig:
    """Where runs are written."""

    #: Folder the run directories are made in.
    root: str = "runs"
    #: Name of the run: run directories are `<run.root>/<name>-<backend>-<time>/`.
    name: str = "demo"


@dataclass
class Config:
    """One run's whole configuration: a section per part of the pipeline."""

    #: Where the paired volumes come from, their preprocessing, sampling and augmentation.
    data: DataConfig = field(default_factory=DataConfig)
    #: The network (the same architecture in both backends).
    model: ModelConfig = field(default_factory=ModelConfig)
    #: Optimization and the run loop (cadence, checkpoints, precision, parallelism).
    train: TrainConfig = field(default_factory=TrainConfig)
    #: pix2pix's PatchGAN discriminator (used by `train.objective: pix2pix` only).
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    #: Whole-volume inference and metrics of validation, `evaluate` and `predict`.
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: Where and under which name run directories are written.
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


# Nyul landmarks: data.percentiles' two ends and the deciles 10..90 between them.
NYUL_DECILES: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)

CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": ("phantom", "ixi", "course", "manifest", "glob"),
    "data.mask": ("given_or_otsu", "otsu", "given", "nonzero", "none"),
    "data.normalization": ("zscore", "percentile", "wm_peak", "fcm", "whitestripe", "nyul", "kde"),
    "model.norm": ("group", "batch", "instance", "none"),
    "model.upsample": ("transpose", "resize_conv"),
    "model.downsample": ("maxpool", "conv"),
    "model.activation": ("relu", "leaky_relu", "silu"),
    "model.conv3d": ("auto", "stacked2d", "native"),
    "train.objective": ("supervised", "pix2pix"),
    "train.loss": LOSS_NAMES,
    "train.precision": TRAINING_PRECISIONS,
    "discriminator.norm": ("instance", "none"),
    "discriminator.loss": ("lsgan", "nonsaturating"),
    "train.parallel": ("sharded", "pmap"),
    "train.torch_compile_mode": ("default", "max-autotune"),
    "eval.blend": ("gaussian", "constant"),
    "data.planes": ("slice_axis", "all"),
    "eval.planes": ("slice_axis", "all"),
}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if origin is tuple:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        return [_coerce(v, args[0], key) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


# Keys that were removed, and what to use instead (an old config then fails saying so).
REMOVED_KEYS = {"train.compute_dtype": f"use train.precision ({' | '.join(TRAINING_PRECISIONS)})",
                "train.jax_conv3d": "use model.conv3d (auto | stacked2d | native)"}


def recorded_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A config recorded by an earlier mrsynth (a weight file's metadata) in today's keys:
    ``train.compute_dtype`` (float32 | bfloat16) is the ``train.precision`` of the same name,
    ``train.jax_conv3d`` the ``model.conv3d`` of the same name. Weight files stay readable; a
    user's YAML with an old key is still refused in one line."""
    train, model = dict(raw.get("train") or {}), dict(raw.get("model") or {})
    if "compute_dtype" in train:
        train.setdefault("precision", train.pop("compute_dtype"))
    if "jax_conv3d" in train:
        model.setdefault("conv3d", train.pop("jax_conv3d"))
    return {**raw, "train": train, "model": model}


def build_dataclass(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(raw) - names):
        if prefix + key in REMOVED_KEYS:
            raise ConfigError(f"{prefix}{key}: no longer a config key; {REMOVED_KEYS[prefix + key]}")
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping")
            kwargs[name] = build_dataclass(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def merge_mappings(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = value
    return out


def flat_keys(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``: the dotted keys ``--set`` takes."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw_value = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """The raw mapping with each ``section.key=value`` override merged in."""
    merged = dict(raw or {})
    for text in overrides or []:
        path, value = parse_override(text)
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        merged = merge_mappings(merged, nested)
    return merged


def input_channels(data: DataConfig) -> int:
    """T1 channels a model reads: the slice and its context slices on both sides."""
    return 2 * data.context_slices + 1


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Build and validate a Config from a plain mapping plus ``--set`` overrides.

    ``model.in_channels`` follows from ``data.context_slices`` unless the mapping states it
    (a resolved run config does; validation then checks that the two agree).
    """
    merged = apply_overrides(raw, overrides)
    cfg = build_dataclass(Config, merged, "")
    if "in_channels" not in (merged.get("model") or {}):
        cfg.model.in_channels = input_channels(cfg.data)
    validate(cfg)
    return cfg


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping, with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (None: built-in defaults, which equal configs/demo.yaml)."""
    raw = read_yaml_mapping(path) if path is not None else {}
    try:
        return config_from_dict(raw, overrides)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def with_absolute_paths(cfg: Config, base: Path | None = None) -> Config:
    """``cfg`` with its folders (and ``train.init_weights``) made absolute (relative to ``base``,
    default the working directory).

    A run directory's config.yaml is reloaded by evaluate/predict/--resume from anywhere; a
    relative ``data.root`` would then point somewhere else (or regenerate the phantom there).
    A relative ``data.manifest`` that does not exist from ``base`` stays relative: discovery
    looks it up under ``data.root``.
    """
    base = Path(base or Path.cwd()).absolute()

    def absolute(text: str) -> str:
        return str(base / Path(text).expanduser()) if text and not Path(text).expanduser().is_absolute() else text

    data = dataclasses.replace(cfg.data, root=absolute(cfg.data.root), cache_dir=absolute(cfg.data.cache_dir))
    if data.manifest and (base / data.manifest).exists():
        data = dataclasses.replace(data, manifest=absolute(data.manifest))
    return dataclasses.replace(cfg, data=data, run=dataclasses.replace(cfg.run, root=absolute(cfg.run.root)),
                               train=dataclasses.replace(cfg.train, init_weights=absolute(cfg.train.init_weights)))


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from mrsynth.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _validate_nyul(d: DataConfig) -> None:
    """Nyul's landmarks: increasing percentiles, and a standard scale only where it is used."""
    given = {name: getattr(d, name) for name in ("nyul_t1_landmarks", "nyul_t2_landmarks")}
    if d.normalization != "nyul":
        for name, values in given.items():
            if values:
                raise ConfigError(f"data.{name}: only used with data.normalization=nyul, got {d.normalization!r}")
        return
    low, high = d.percentiles
    if not 0.0 <= low < NYUL_DECILES[0] or not NYUL_DECILES[-1] < high <= 100.0:
        raise ConfigError(f"data.percentiles: nyul needs [low < {NYUL_DECILES[0]:g}, high > {NYUL_DECILES[-1]:g}] "
                          f"around its deciles, got {list(d.percentiles)}")
    if bool(given["nyul_t1_landmarks"]) != bool(given["nyul_t2_landmarks"]):
        raise ConfigError("data.nyul_t1_landmarks/data.nyul_t2_landmarks: set both or neither")
    count = len(NYUL_DECILES) + 2
    for name, values in given.items():
        if values and (len(values) != count or any(b <= a for a, b in zip(values, values[1:]))):
            raise ConfigError(f"data.{name}: needs {count} increasing values, got {list(values)}")


def validate(cfg: Config) -> None:
    """Reject impossible combinations with a message naming the key."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    m, d, t = cfg.model, cfg.data, cfg.train
    if not m.arch.isidentifier():
        raise ConfigError(f"model.arch: must be an architecture name such as 'unet', got {m.arch!r}")
    if m.dims not in (2, 3):
        raise ConfigError(f"model.dims: must be 2 or 3, got {m.dims}")
    if m.depth < 1:
        raise ConfigError(f"model.depth: must be >= 1, got {m.depth}")
    if len(m.channel_mults) != m.depth + 1:
        raise ConfigError(
            f"model.channel_mults: needs depth + 1 = {m.depth + 1} entries, got {len(m.channel_mults)}"
        )
    if m.norm == "group":
        for ch in m.level_channels():
            if ch % min(m.groups, ch):
                raise ConfigError(f"model.groups: {m.groups} groups do not divide {ch} channels")
    if d.context_slices < 0 or (d.context_slices and m.dims != 2):
        raise ConfigError(f"data.context_slices: must be >= 0, and 0 for a 3D model, got {d.context_slices}")
    if m.in_channels != input_channels(d):
        raise ConfigError(f"model.in_channels: not a user key (2 * data.context_slices + 1 = "
                          f"{input_channels(d)} T1 slices in), got {m.in_channels}")
    if m.out_channels != 1:
        raise ConfigError(f"model.out_channels: not a user key (one T2 channel out), got {m.out_channels}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {m.dropout}")
    if len(d.patch_size) != m.dims:
        raise ConfigError(
            f"data.patch_size: model.dims={m.dims} needs {m.dims} numbers, got {list(d.patch_size)}"
        )
    multiple = 2**m.depth
    for size in d.patch_size:
        if size % multiple:
            raise ConfigError(f"data.patch_size: {size} is not a multiple of 2**depth = {multiple}")
    if d.source == "phantom":
        if len(d.phantom_shape) != 3 or min(d.phantom_shape) < 16:
            raise ConfigError("data.phantom_shape: needs 3 sizes of at least 16")
        spatial = d.phantom_shape if m.dims == 3 else tuple(
            s for i, s in enumerate(d.phantom_shape) if i != d.slice_axis
        )
        for size, limit in zip(d.patch_size, spatial):
            if size > limit:
                raise ConfigError(
                    f"data.patch_size: {list(d.patch_size)} is larger than the phantom volume "
                    f"{list(spatial)}"
                )
    if d.slice_axis not in (0, 1, 2):
        raise ConfigError(f"data.slice_axis: must be 0, 1 or 2, got {d.slice_axis}")
    if d.planes == "all" and m.dims != 2:
        raise ConfigError("data.planes: 'all' is for 2D models (a 3D model sees patches, not slices)")
    if cfg.eval.planes == "all" and d.planes != "all":
        raise ConfigError("eval.planes: 'all' needs a model trained on slices of all three axes (data.planes: all)")
    if abs(sum(d.split_fractions) - 1.0) > 1e-6 or min(d.split_fractions) < 0:
        raise ConfigError(f"data.split_fractions: must be >= 0 and sum to 1, got {list(d.split_fractions)}")
    if d.source == "manifest" and not d.manifest:
        raise ConfigError("data.manifest: required when data.source is 'manifest'")
    if d.source == "glob" and not (d.t1_glob and d.t2_glob):
        raise ConfigError("data.t1_glob/data.t2_glob: required when data.source is 'glob'")
    if d.patches_per_volume < 1:
        raise ConfigError(f"data.patches_per_volume: must be >= 1, got {d.patches_per_volume}")
    if d.workers < 0:
        raise ConfigError(f"data.workers: must be >= 0, got {d.workers}")
    if not 0.0 <= d.bias_field <= 1.0:
        raise ConfigError(f"data.bias_field: must be in [0, 1] (largest log-amplitude of the field), got {d.bias_field}")
    if not 0.0 <= d.contrast_range < 1.0:
        raise ConfigError(f"data.contrast_range: must be in [0, 1), got {d.contrast_range}")
    _validate_nyul(d)
    if t.steps < 1 or t.batch_size < 1:
        raise ConfigError("train.steps and train.batch_size must be >= 1")
    if t.warmup_steps < 0 or t.warmup_steps >= t.steps:
        raise ConfigError(f"train.warmup_steps: must be in [0, steps), got {t.warmup_steps}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr: must be > 0, got {t.lr}")
    if t.adv_weight < 0:
        raise ConfigError(f"train.adv_weight: must be >= 0, got {t.adv_weight}")
    g = cfg.discriminator
    if g.layers < 1 or g.base_channels < 1 or g.lr <= 0:
        raise ConfigError("discriminator.layers, .base_channels and .lr must be positive")
    for name in ("log_every", "val_every", "ckpt_every", "keep_checkpoints"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}: must be >= 1")
    if not 0.0 <= cfg.eval.patch_overlap < 1.0:
        raise ConfigError(f"eval.patch_overlap: must be in [0, 1), got {cfg.eval.patch_overlap}")
