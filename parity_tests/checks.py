"""Cross-framework comparisons of the JAX backend against the PyTorch reference.

The only module (with the tests beside it) that imports both frameworks. Every comparison
returns :class:`mrsynth.parity.report.CheckResult` rows with the tolerance already applied, so
the pytest files and ``run.py parity`` run the same code and differ only in what they do with
the rows (assert them / print and write them).

Weights always travel through the portable file: the *source* framework initializes (and
perturbs, so norms and biases are not their trivial defaults) and exports with its own
exporter; the other framework imports with its own importer. A direction is "torch->jax"
or "jax->torch".
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from safetensors.numpy import save_file

from mrsynth.backend import GENERATOR
from mrsynth.config import Config, ModelConfig, TrainConfig
from mrsynth.errors import CheckpointError
from mrsynth.inference.volume import synthesize_volume
from mrsynth.parity.metrics import psnr, rel_l2, worst_rel_l2
from mrsynth.parity.report import CheckResult
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES, ToleranceTable, trajectory_regime
from mrsynth.precision import get_precision
from mrsynth.weights import load_portable

from jax_impl import losses as jax_losses
from jax_impl.backend import JaxBackend
from jax_impl import weights as jax_weights
from jax_impl.model import build_model as jax_build_model
from jax_impl.objectives import OBJECTIVES as JAX_OBJECTIVES
from jax_impl.precision import precision_scope as jax_precision_scope
from jax_impl.train_state import init_train_state, merge_model
from jax_impl.weights import load_torch_into, model_to_torch, state_to_torch
from torch_ref import losses as torch_losses
from torch_ref.backend import TorchBackend
from torch_ref.predict import channels_first_copy
from torch_ref.layers import Dropout as TorchDropout
from torch_ref.model import build_model as torch_build_model
from torch_ref.precision import autocast as torch_autocast, precision_scope as torch_precision_scope
from torch_ref.train import TorchEngine
from torch_ref import weights as torch_weights
from torch_ref.weights import load_state_into, state_dict_to_numpy

DIRECTIONS = ("torch->jax", "jax->torch")


# --- precision settings ---------------------------------------------------------------------
def on_gpu() -> bool:
    return torch.cuda.is_available() and jax.default_backend() == "gpu"


def precision_note(precision: str) -> str:
    """What a precision setting means on this machine (for report rows)."""
    if precision == "tf32":
        return "jax default matmul precision, torch TF32 on" if on_gpu() else \
            "cpu: tf32 not applicable (same arithmetic as float32)"
    if precision == "bfloat16":
        return "jax compute dtype bfloat16 vs torch autocast bfloat16"
    if precision == "float64":
        return "jax_enable_x64 vs torch .double()"
    return "jax matmul precision 'highest', torch TF32 off" + ("" if on_gpu() else " (cpu: no-op)")


@contextlib.contextmanager
def precision_context(precision: str) -> Iterator[None]:
    """JAX x64 and matmul precision, torch TF32 switches, for the duration of one comparison."""
    with jax.enable_x64(get_precision(precision).activations == "float64"), \
            jax_precision_scope(precision), torch_precision_scope(precision):
        yield


def torch_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# --- weights through the portable file ------------------------------------------------------
def perturb_torch(model: torch.nn.Module, seed: int) -> None:
    """Move biases, norm affines and BatchNorm statistics off their defaults (in place)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(3)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif t.ndim == 1:
                base = 1.0 if name.endswith(".weight") else 0.0  # norm scales around 1
                t.copy_(base + 0.2 * torch.randn(t.shape, generator=gen))


def perturb_jax(model: nnx.Module, seed: int) -> None:
    """The JAX twin of :func:`perturb_torch`, on the NNX variables directly."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model)
    for path, var in nnx.to_flat_state(state):
        value = np.asarray(var.get_value())
        leaf = str(path[-1])
        if leaf == "num_batches_tracked":
            new = np.full_like(value, 3)
        elif leaf == "running_var":
            new = 0.5 + rng.random(value.shape)
        elif value.ndim == 1:
            new = (1.0 if leaf == "scale" else 0.0) + 0.2 * rng.standard_normal(value.shape)
        else:
            continue
        var.set_value(jnp.asarray(new, dtype=value.dtype))
    nnx.update(model, state)


@dataclass
class ModelPair:
    """The same network in both frameworks (float32, CPU/default device)."""

    cfg: ModelConfig
    torch_model: torch.nn.Module
    jax_model: nnx.Module
    direction: str
    weight_file: Path

    def tensors(self) -> dict[str, np.ndarray]:
        """The shared weights, canonical names and torch layout."""
        return state_dict_to_numpy(self.torch_model.state_dict())


def transfer_pair(cfg: ModelConfig, direction: str, work_dir: Path, seed: int = 0) -> ModelPair:
    """Initialize in the source framework, export its portable file, import it in the other."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"{direction.replace('->', '_to_')}-{seed}.safetensors"
    if direction == "torch->jax":
        torch.manual_seed(seed)
        torch_model = torch_build_model(cfg)
        perturb_torch(torch_model, seed)
        torch_weights.save_weights(path, torch_model, cfg)
        jax_model, _, _ = jax_weights.load_weights(path)
    elif direction == "jax->torch":
        jax_model = jax_build_model(cfg, seed=seed)
        perturb_jax(jax_model, seed)
        jax_weights.save_weights(path, jax_model, cfg)
        torch_model, _, _ = torch_weights.load_weights(path)
    else:
        raise ValueError(f"unknown direction {direction!r}")
    return ModelPair(cfg, torch_model.train(), jax_model, direction, path)


def round_trip_check(pair: ModelPair, work_dir: Path, tolerances: ToleranceTable = DEFAULT_TOLERANCES
                     ) -> CheckResult:
    """Destination exports again; the source's tensors must come back bit for bit."""
    back = work_dir / f"back-{pair.weight_file.name}"
    if pair.direction == "torch->jax":
        jax_weights.save_weights(back, pair.jax_model, pair.cfg)
    else:
        torch_weights.save_weights(back, pair.torch_model, pair.cfg)
    original, _, _ = load_portable(pair.weight_file)
    returned, _, _ = load_portable(back)
    worst = max((float(np.max(np.abs(returned[k].astype(np.float64) - original[k])))
                 if k in returned else float("inf")) for k in original)
    if returned.keys() != original.keys():
        worst = float("inf")
    return CheckResult("weights", f"{pair.direction} round trip", "max |diff|", worst,
                       tolerances["round_trip", "float32"], note=f"{len(original)} tensors")


# --- models at a precision ------------------------------------------------------------------
def torch_model_at(pair: ModelPair, precision: str) -> torch.nn.Module:
    """A copy of the torch model on the parity device, float64 for ``float64``."""
    model = copy.deepcopy(pair.torch_model).to(torch_device())
    return model.double() if precision == "float64" else model


def jax_model_at(pair: ModelPair, precision: str) -> nnx.Module:
    """A JAX model with the pair's weights and the precision's compute dtype.

    Build it outside ``precision_context("float64")``: under x64 every eager initializer op
    would compile anew. Its float32 state becomes float64 only where it enters a jitted
    function (:func:`_at_precision`).
    """
    if get_precision(precision).activations == "float32":
        return pair.jax_model
    model = jax_build_model(pair.cfg, compute_dtype=get_precision(precision).activations)
    load_torch_into(model, model_to_torch(pair.jax_model), pair.weight_file)
    return model


def _at_precision(tree, precision: str):
    """float64: every floating leaf as a float64 host array (jit converts it under x64)."""
    if precision != "float64":
        return tree
    return jax.tree.map(lambda a: np.asarray(a, np.float64) if jnp.issubdtype(a.dtype, jnp.floating)
                        else np.asarray(a), tree)


def set_mode(torch_model: torch.nn.Module, jax_model: nnx.Module, mode: str) -> None:
    """train: batch statistics, dropout off (its masks are framework RNG); eval: both off."""
    if mode == "eval":
        torch_model.eval()
        jax_model.eval()
        return
    torch_model.train()
    for module in torch_model.modules():
        if isinstance(module, TorchDropout):
            module.eval()
    jax_model.train()
    jax_model.set_attributes(deterministic=True, raise_if_not_found=False)


def to_torch(x: np.ndarray, precision: str) -> torch.Tensor:
    """Channels-last numpy -> channels-first tensor on the parity device."""
    t = torch.from_numpy(channels_first_copy(x))
    return t.to(torch_device(), torch.float64 if precision == "float64" else torch.float32)


def from_torch(t: torch.Tensor) -> np.ndarray:
    return np.moveaxis(t.detach().to("cpu", torch.float64).numpy(), 1, -1)


def _autocast(precision: str) -> contextlib.AbstractContextManager:
    return torch_autocast(precision, torch_device().type)


def jax_input(x: np.ndarray, precision: str) -> jax.Array:
    return jnp.asarray(x, jnp.float64 if precision == "float64" else jnp.float32)


def torch_tensors(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Canonical tensors as float64 numpy (``state_dict_to_numpy`` rounds to float32)."""
    return {k: t.detach().to("cpu", torch.float64).numpy() for k, t in model.state_dict().items()}


def _stats_only(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if "running_" in k or "num_batches" in k}


def _params_only(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if "running_" not in k and "num_batches" not in k}


def inert_parameters(model: ModelConfig, names: Sequence[str]) -> set[str]:
    """Conv biases that feed a per-channel norm (batch, instance) directly.

    The norm subtracts each channel's mean, so their exact gradient is zero and AdamW turns the
    rounding noise of their computed gradient into +-lr steps: a random walk with no effect on
    the function, different in every run. Excluded from the update and parameter comparisons.
    """
    if model.norm not in ("batch", "instance"):
        return set()
    pattern = re.compile(r"^(encoders\.\d+|bottleneck|decoders\.\d+)\.conv[12]\.bias$")
    return {n for n in names if pattern.match(n)}


# --- forward and backward on one batch ----------------------------------------------------------
def _l1_any_dtype(pred, target):
    """Plain L1 in the inputs' dtype: the backends' losses compute in float32 by design, which
    would cap a float64 comparison at float32 accuracy."""
    return (abs(pred - target)).mean()


def _loss_key(train: TrainConfig, precision: str) -> tuple:
    """A hashable description of the loss (jit cache key): plain L1 for float64, else the backend's."""
    if precision == "float64":
        return ("plain_l1",)
    return ("training_loss", train.loss, train.ssim_weight, train.ssim_data_range)


@dataclass
class Evaluation:
    """One framework's forward + backward on a batch, on the host in float64, torch layout names."""

    output: np.ndarray                 # channels-last
    loss: float
    input_grad: np.ndarray             # channels-last
    param_grads: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]       # BatchNorm running statistics after the forward


def _jax_evaluate_pure(graphdef: nnx.GraphDef, loss_key: tuple, params: dict, rest: dict,
                       x: jax.Array, t2: jax.Array):
    if loss_key[0] == "plain_l1":
        loss_fn = _l1_any_dtype
    else:
        train = TrainConfig(loss=loss_key[1], ssim_weight=loss_key[2], ssim_data_range=loss_key[3])
        # the built-in losses read only t2 of the batch
        loss_fn = lambda pred, target: jax_losses.training_loss(pred, {"t2": target}, train)[0]  # noqa: E731

    def loss_of(params, x):
        model = nnx.merge(graphdef, nnx.State(params), nnx.State(rest))
        pred = model(x)
        return loss_fn(pred, t2), (pred, nnx.state(model, nnx.BatchStat))

    return jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(params, x)


# Cached on the (hashable) graphdef: both directions and every seed of one architecture compile once.
_jit_evaluate = jax.jit(_jax_evaluate_pure, static_argnums=(0, 1))


def jax_evaluate(model: nnx.Module, batch: dict[str, np.ndarray], train: TrainConfig, precision: str
                 ) -> Evaluation:
    """Output, loss and d loss / d (input, every parameter) of the JAX model (in its current mode)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    (loss, (pred, stats)), (g_params, g_x) = _jit_evaluate(
        graphdef, _loss_key(train, precision), _at_precision(nnx.to_pure_dict(params), precision),
        _at_precision(nnx.to_pure_dict(rest), precision),
        jax_input(batch["t1"], precision), jax_input(batch["t2"], precision))
    f64 = lambda tree: {k: np.asarray(v, np.float64) for k, v in state_to_torch(tree).items()}  # noqa: E731
    return Evaluation(np.asarray(pred, np.float64), float(loss), np.asarray(g_x, np.float64),
                      f64(nnx.State(g_params)), _stats_only(f64(stats)))


def torch_evaluate(model: torch.nn.Module, batch: dict[str, np.ndarray], train: TrainConfig, precision: str
                   ) -> Evaluation:
    """The torch twin of :func:`jax_evaluate` (the model's running statistics are updated)."""
    model.zero_grad(set_to_none=True)
    x = to_torch(batch["t1"], precision).requires_grad_(True)
    with _autocast(precision):
        pred = model(x)
    target = to_torch(batch["t2"], precision)
    loss = _l1_any_dtype(pred, target) if precision == "float64" else \
        torch_losses.training_loss(pred, {"t2": target}, train)[0]
    loss.backward()
    grads = {n: p.grad.detach().to("cpu", torch.float64).numpy() for n, p in model.named_parameters()}
    return Evaluation(from_torch(pred), float(loss.detach()), from_torch(x.grad), grads,
                      _stats_only(torch_tensors(model)))


def evaluate_pair(pair: ModelPair, batch: dict[str, np.ndarray], train: TrainConfig, precision: str,
                  mode: str = "train") -> tuple[Evaluation, Evaluation]:
    """(jax, torch) evaluations of the pair at one precision, in ``mode`` (train | eval)."""
    torch_model = torch_model_at(pair, precision)
    jax_model = jax_model_at(pair, precision)
    set_mode(torch_model, jax_model, mode)
    with precision_context(precision):
        return (jax_evaluate(jax_model, batch, train, precision),
                torch_evaluate(torch_model, batch, train, precision))


def _gradient_rows(case: str, got: Evaluation, ref: Evaluation, tol: float, note: str,
                   inert: set[str]) -> list[CheckResult]:
    err, name = worst_rel_l2({k: v for k, v in got.param_grads.items() if k not in inert},
                             {k: v for k, v in ref.param_grads.items() if k not in inert})
    excluded = f"; {len(inert)} inert biases apart" if inert else ""
    return [
        CheckResult("grad", case, "rel_l2(d loss/d input)", rel_l2(got.input_grad, ref.input_grad), tol,
                    note=note),
        CheckResult("grad", case, "max rel_l2(d loss/d param)", err, tol,
                    note=f"worst: {name}; {len(ref.param_grads) - len(inert)} params{excluded}"),
    ]


def _inert_gradient_row(case: str, framework: str, got: Evaluation, inert: set[str], tol: float
                        ) -> CheckResult:
    """Inert biases (see :func:`inert_parameters`) must get a zero gradient up to rounding."""
    total = np.sqrt(sum(float(np.sum(g**2)) for g in got.param_grads.values()))
    worst = max(float(np.linalg.norm(got.param_grads[n])) for n in inert) / max(total, 1e-300)
    return CheckResult("grad", f"{case} {framework}", "max |d loss/d inert bias| / |d loss/d params|", worst,
                       tol, note=f"{len(inert)} conv biases before a per-channel norm")


def train_mode_check(pair: ModelPair, batch: dict[str, np.ndarray], train: TrainConfig,
                     precision: str, tolerances: ToleranceTable = DEFAULT_TOLERANCES) -> list[CheckResult]:
    """Training-mode forward (batch statistics; dropout off: its masks are framework RNG), the
    BatchNorm running statistics it updates, and the gradients w.r.t. input and every parameter.

    float64: JAX against torch directly. Lower precisions: JAX against torch, and (L1 loss) both
    against the float64 torch reference (one ReLU pre-activation within rounding of zero can
    flip between two float32 runs; against the exact reference both errors stay small).
    """
    got_jax, got_torch = evaluate_pair(pair, batch, train, precision)
    case = f"{pair.direction} train-mode {precision}"
    note = precision_note(precision)
    rows = [CheckResult("forward", case, "rel_l2(output)", rel_l2(got_jax.output, got_torch.output),
                        tolerances["forward", precision], note=note)]
    if got_torch.stats:
        err, name = worst_rel_l2(got_jax.stats, got_torch.stats)
        rows.append(CheckResult("bn_stats", case + " (1 forward)", "max rel_l2(running stats)", err,
                                tolerances["bn_stats", precision], note=f"worst: {name}"))
    tol = tolerances["grad", precision]
    inert = inert_parameters(pair.cfg, list(got_torch.param_grads))
    rows += [_inert_gradient_row(case, name, got, inert, tolerances["grad_inert", precision])
             for name, got in (("jax", got_jax), ("torch", got_torch)) if inert]
    if precision == "float64":
        return rows + _gradient_rows(case, got_jax, got_torch, tol, note, inert)
    rows += _gradient_rows(case + " jax vs torch", got_jax, got_torch, tol, note, inert)
    if train.loss != "l1":  # the float64 reference is plain L1 (the backends' SSIM is float32)
        return rows
    _, ref = evaluate_pair(pair, batch, train, "float64")
    rows += _gradient_rows(case + " jax vs f64 ref", got_jax, ref, tol, note, inert)
    rows += _gradient_rows(case + " torch vs f64 ref", got_torch, ref, tol, note, inert)
    return rows


def _jax_forward_pure(graphdef: nnx.GraphDef, state: dict, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, nnx.State(state))(x)


_jit_forward = jax.jit(_jax_forward_pure, static_argnums=0)


def eval_mode_check(pair: ModelPair, x: np.ndarray, precision: str,
                    tolerances: ToleranceTable = DEFAULT_TOLERANCES) -> CheckResult:
    """Inference-mode forward: BatchNorm on its (perturbed) running statistics, dropout identity."""
    torch_model = torch_model_at(pair, precision)
    jax_model = jax_model_at(pair, precision)
    set_mode(torch_model, jax_model, "eval")
    graphdef, state = nnx.split(jax_model)
    with precision_context(precision):
        with torch.no_grad(), _autocast(precision):
            y_torch = from_torch(torch_model(to_torch(x, precision)))
        y_jax = _jit_forward(graphdef, _at_precision(nnx.to_pure_dict(state), precision), jax_input(x, precision))
        y_jax = np.asarray(y_jax, np.float64)
    return CheckResult("forward", f"{pair.direction} eval-mode {precision}", "rel_l2(output)",
                       rel_l2(y_jax, y_torch), tolerances["forward", precision], note=precision_note(precision))


# --- training steps (the backends' real step functions) ---------------------------------------
@dataclass
class TrainTrace:
    """Per-step host metrics and canonical tensors after selected numbers of updates."""

    metrics: list[dict[str, float]]
    snapshots: dict[int, dict[str, np.ndarray]]


def jax_training(tensors: dict[str, np.ndarray], cfg: Config, batches: Sequence[dict[str, np.ndarray]],
                 snapshot_at: Sequence[int]) -> TrainTrace:
    """The JAX engine's jitted step (the objective's step and optimizers) from ``tensors``."""
    model = jax_build_model(cfg.model, compute_dtype=get_precision(cfg.train.precision).activations)
    load_torch_into(model, tensors, "parity initial weights")
    objective = JAX_OBJECTIVES.lookup(cfg.train.objective)
    txs = objective.optimizers(cfg)
    graphdefs, state = init_train_state({GENERATOR: model}, txs, cfg.train.seed)
    step = jax.jit(objective.make_step(graphdefs, txs, cfg, None))
    handles, snapshots = [], {}
    for i, batch in enumerate(batches, 1):
        state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
        handles.append(metrics)
        if i in snapshot_at:
            model = merge_model(graphdefs[GENERATOR], state["models"][GENERATOR])
            snapshots[i] = model_to_torch(model)
    metrics = [{k: float(v) for k, v in m.items()} for m in jax.device_get(handles)]
    return TrainTrace(metrics, snapshots)


def torch_training(tensors: dict[str, np.ndarray], cfg: Config, batches: Sequence[dict[str, np.ndarray]],
                   snapshot_at: Sequence[int], run_dir: Path) -> TrainTrace:
    """The torch engine (:class:`TorchEngine`, its ``train_step``) from ``tensors``."""
    engine = TorchEngine(cfg, run_dir)
    try:
        load_state_into(engine.models[GENERATOR], tensors, "parity initial weights")
        handles, snapshots = [], {}
        for i, batch in enumerate(batches, 1):
            handles.append(engine.train_step(batch))
            if i in snapshot_at:
                snapshots[i] = torch_tensors(engine.models[GENERATOR])  # a copy: the engine updates in place
        return TrainTrace(engine.fetch_metrics(handles), snapshots)
    finally:
        engine.close()


def train_both(tensors: dict[str, np.ndarray], cfg: Config, batches: Sequence[dict[str, np.ndarray]],
               snapshot_at: Sequence[int], work_dir: Path, precision: str = "float32"
               ) -> tuple[TrainTrace, TrainTrace]:
    """(jax, torch) traces of the same training from the same weights on the same batches."""
    if cfg.model.dropout > 0:
        raise ValueError("training parity needs model.dropout = 0 (dropout masks are framework RNG)")
    with precision_context(precision):
        return (jax_training(tensors, cfg, batches, snapshot_at),
                torch_training(tensors, cfg, batches, snapshot_at, work_dir / "torch-run"))


def _functional(tensors: dict[str, np.ndarray], inert: set[str]) -> dict[str, np.ndarray]:
    return {k: v for k, v in _params_only(tensors).items() if k not in inert}


def _rel(value: float, reference: float) -> float:
    return abs(value - reference) / max(abs(reference), 1e-30)


BN_STATS_STEPS = 3  # "a few training steps" for the BatchNorm running-statistics comparison


def training_checks(tensors: dict[str, np.ndarray], cfg: Config, batches: Sequence[dict[str, np.ndarray]],
                    work_dir: Path, case: str, precision: str = "float32",
                    tolerances: ToleranceTable = DEFAULT_TOLERANCES
                    ) -> tuple[list[CheckResult], TrainTrace, TrainTrace]:
    """Both engines train from the same weights on the same batches; compare, after update 1,
    the AdamW update (schedule, clipping, decay mask), grad norm and learning rate; after
    ``BN_STATS_STEPS`` updates the BatchNorm running statistics; at every step the loss; at the
    end the parameters. Returns the rows and both traces (for synthesis from the result)."""
    n = len(batches)
    k = min(BN_STATS_STEPS, n)
    jax_trace, torch_trace = train_both(tensors, cfg, batches, sorted({1, k, n}), work_dir, precision)
    case = f"{case} {precision}"
    rows = _first_update_rows(tensors, cfg, jax_trace, torch_trace, case, precision, tolerances)
    if cfg.model.norm == "batch":
        rows += _batchnorm_rows(jax_trace, torch_trace, k, case, precision, tolerances)
    loss_errs = [_rel(j["loss"], t["loss"]) for j, t in zip(jax_trace.metrics, torch_trace.metrics)]
    worst_step = int(np.argmax(loss_errs))
    inert = inert_parameters(cfg.model, list(tensors))
    err_final, name = worst_rel_l2(_functional(jax_trace.snapshots[n], inert),
                                   _functional(torch_trace.snapshots[n], inert))
    excluded = f"; {len(inert)} inert biases excluded" if inert else ""
    first, last = torch_trace.metrics[0]["loss"], torch_trace.metrics[-1]["loss"]
    regime = trajectory_regime(cfg.model, cfg.train)
    suffix = "_smooth" if regime == "smooth" else ""
    lr_err = max(_rel(j["lr"], t["lr"]) for j, t in zip(jax_trace.metrics, torch_trace.metrics))
    rows += [
        CheckResult("trajectory", f"{case} {n} steps", "max rel diff(loss) over steps", max(loss_errs),
                    tolerances["traj_loss" + suffix, precision],
                    note=f"{regime}; worst at step {worst_step + 1}; torch loss {first:.4g} -> {last:.4g}"),
        CheckResult("trajectory", f"{case} {n} steps", "max rel_l2(final params)", err_final,
                    tolerances["traj_params" + suffix, precision], note=f"{regime}; worst: {name}{excluded}"),
        CheckResult("trajectory", f"{case} {n} steps", "max rel diff(lr) over steps", lr_err,
                    tolerances["lr", precision], note="warmup-cosine, one shared formula"),
    ]
    return rows, jax_trace, torch_trace


def _batchnorm_rows(jax_trace: TrainTrace, torch_trace: TrainTrace, k: int, case: str, precision: str,
                    tolerances: ToleranceTable) -> list[CheckResult]:
    """Running statistics after update 1 (all of them) and after ``k`` updates (variances and
    counters: from update 2 on, a running mean also accumulates its inert conv bias, whose
    noise-driven AdamW walk differs between frameworks; a variance is blind to that shift)."""
    stats_1 = [_stats_only(trace.snapshots[1]) for trace in (jax_trace, torch_trace)]
    err_1, name_1 = worst_rel_l2(*stats_1)
    stats_k = [{n: v for n, v in _stats_only(trace.snapshots[k]).items() if "running_mean" not in n}
               for trace in (jax_trace, torch_trace)]
    err_k, name_k = worst_rel_l2(*stats_k)
    return [
        CheckResult("bn_stats", f"{case} after 1 step", "max rel_l2(running stats)", err_1,
                    tolerances["bn_stats", precision], note=f"worst: {name_1}"),
        CheckResult("bn_stats", f"{case} after {k} steps", "max rel_l2(running var, count)", err_k,
                    tolerances["bn_stats_trained", precision], note=f"worst: {name_k}"),
    ]


def _first_update_rows(tensors: dict[str, np.ndarray], cfg: Config, jax_trace: TrainTrace,
                       torch_trace: TrainTrace, case: str, precision: str, tolerances: ToleranceTable
                       ) -> list[CheckResult]:
    """Update 1 and the gradient norm. Not in bfloat16: AdamW's first update is ~lr * sign(g), and
    bf16 gradients flip the sign of small elements, so only the gradient norm is compared."""
    mj, mt = jax_trace.metrics[0], torch_trace.metrics[0]
    norm_row = CheckResult("adamw_step", case, "rel diff(grad_norm)", _rel(mj["grad_norm"], mt["grad_norm"]),
                           tolerances["grad_norm", precision])
    if precision == "bfloat16":
        return [norm_row]
    inert = inert_parameters(cfg.model, list(tensors))
    initial = _functional(tensors, inert)
    new_jax, new_torch = _functional(jax_trace.snapshots[1], inert), _functional(torch_trace.snapshots[1], inert)
    err_upd, name_upd = worst_rel_l2({k: new_jax[k] - initial[k] for k in initial},
                                     {k: new_torch[k] - initial[k] for k in initial})
    err_new, name_new = worst_rel_l2(new_jax, new_torch)
    clip = cfg.train.clip_norm
    clipping = "active" if mt["grad_norm"] > clip else "inactive"
    return [
        CheckResult("adamw_step", case, "max rel_l2(update 1)", err_upd, tolerances["adamw_update", precision],
                    note=f"worst: {name_upd}; clipping {clipping} (|g| {mt['grad_norm']:.3g}, clip {clip:g})"
                         + (f"; {len(inert)} inert biases excluded" if inert else "")),
        CheckResult("adamw_step", case, "max rel_l2(params after update 1)", err_new,
                    tolerances["adamw_params", precision], note=f"worst: {name_new}"),
        norm_row,
    ]


# --- whole-volume synthesis through the shared inference --------------------------------------
def synthesis_check(weight_file: Path, t1: np.ndarray, cfg: Config, case: str,
                    tolerances: ToleranceTable = DEFAULT_TOLERANCES) -> CheckResult:
    """Both backends load one portable file (their user path) and synthesize the same volume."""
    with precision_context("float32"):
        jax_out = synthesize_volume(t1, JaxBackend().load_predictor(weight_file), cfg.data, cfg.eval)
        torch_out = synthesize_volume(t1, TorchBackend().load_predictor(weight_file), cfg.data, cfg.eval)
    return CheckResult("synthesis", case, "PSNR(jax vs torch) dB", psnr(jax_out, torch_out),
                       tolerances["synth_psnr", "float32"], higher_is_better=True,
                       note=f"volume {tuple(t1.shape)}, dims {cfg.model.dims}")


def export_trained(trace: TrainTrace, cfg: ModelConfig, source: str, path: Path) -> Path:
    """A trained state as a portable file written by the framework that trained it."""
    tensors = trace.snapshots[max(trace.snapshots)]
    if source == "jax":
        model = jax_build_model(cfg)
        load_torch_into(model, tensors, "trained state")
        jax_weights.save_weights(path, model, cfg)
    else:
        model = torch_build_model(cfg)
        load_state_into(model, tensors, "trained state")
        torch_weights.save_weights(path, model, cfg)
    return path


# --- weight-file mismatches -------------------------------------------------------------------
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


def loader_batches(volumes: Sequence, cfg: Config, steps: int) -> list[dict[str, np.ndarray]]:
    """The first ``steps`` batches of the shared training pipeline (fed to both backends)."""
    from mrsynth.data.loader import make_train_loader

    loader = make_train_loader(list(volumes), cfg, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    try:
        return [next(loader) for _ in range(steps)]
    finally:
        loader.close()
