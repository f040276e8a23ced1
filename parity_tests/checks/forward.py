"""Forward and backward on one batch: outputs, BatchNorm statistics and gradients, train and eval mode."""
from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import torch
from flax import nnx

from mrsynth.config import TrainConfig
from mrsynth.parity.metrics import rel_l2, worst_rel_l2
from mrsynth.parity.report import CheckResult
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES, ToleranceTable

from jax_impl import losses as jax_losses
from jax_impl.weights import state_to_torch
from torch_ref import losses as torch_losses

from parity_tests.checks.pairs import (ModelPair, inert_parameters, jax_model_at, set_mode, stats_only,
                                       torch_model_at, torch_tensors)
from parity_tests.checks.precision import (at_precision, autocast, from_torch, jax_input, precision_context,
                                           precision_note, to_torch)


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
        graphdef, _loss_key(train, precision), at_precision(nnx.to_pure_dict(params), precision),
        at_precision(nnx.to_pure_dict(rest), precision),
        jax_input(batch["t1"], precision), jax_input(batch["t2"], precision))
    f64 = lambda tree: {k: np.asarray(v, np.float64) for k, v in state_to_torch(tree).items()}  # noqa: E731
    return Evaluation(np.asarray(pred, np.float64), float(loss), np.asarray(g_x, np.float64),
                      f64(nnx.State(g_params)), stats_only(f64(stats)))


def torch_evaluate(model: torch.nn.Module, batch: dict[str, np.ndarray], train: TrainConfig, precision: str
                   ) -> Evaluation:
    """The torch twin of :func:`jax_evaluate` (the model's running statistics are updated)."""
    model.zero_grad(set_to_none=True)
    x = to_torch(batch["t1"], precision).requires_grad_(True)
    with autocast(precision):
        pred = model(x)
    target = to_torch(batch["t2"], precision)
    loss = _l1_any_dtype(pred, target) if precision == "float64" else \
        torch_losses.training_loss(pred, {"t2": target}, train)[0]
    loss.backward()
    grads = {n: p.grad.detach().to("cpu", torch.float64).numpy() for n, p in model.named_parameters()}
    return Evaluation(from_torch(pred), float(loss.detach()), from_torch(x.grad), grads,
                      stats_only(torch_tensors(model)))


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
        with torch.no_grad(), autocast(precision):
            y_torch = from_torch(torch_model(to_torch(x, precision)))
        y_jax = _jit_forward(graphdef, at_precision(nnx.to_pure_dict(state), precision), jax_input(x, precision))
        y_jax = np.asarray(y_jax, np.float64)
    return CheckResult("forward", f"{pair.direction} eval-mode {precision}", "rel_l2(output)",
                       rel_l2(y_jax, y_torch), tolerances["forward", precision], note=precision_note(precision))
