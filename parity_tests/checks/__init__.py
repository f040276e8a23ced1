"""Cross-framework comparisons of the JAX backend against the PyTorch reference.

The only package (with the tests beside it) that imports both frameworks. Every comparison
returns :class:`mrsynth.parity.report.CheckResult` rows with the tolerance already applied, so
the pytest files and ``run.py parity`` run the same code and differ only in what they do with
the rows (assert them / print and write them).

Weights always travel through the portable file: the *source* framework initializes (and
perturbs, so norms and biases are not their trivial defaults) and exports with its own
exporter; the other framework imports with its own importer. A direction is "torch->jax"
or "jax->torch".

One module per kind of check:

- ``precision``: precision settings (``precision_context``, ``precision_note``, ``on_gpu``) and
  the numpy/torch/JAX conversions at a precision;
- ``pairs``: the same network in both frameworks through the portable file (``transfer_pair``,
  ``round_trip_check``), models at a precision, inert parameters;
- ``forward``: forward and backward on one batch (``train_mode_check``, ``eval_mode_check``);
- ``training``: the backends' real training steps (``training_checks``, ``loader_batches``);
- ``synthesis``: whole-volume synthesis through the shared inference (``synthesis_check``,
  ``export_trained``);
- ``mismatch``: broken weight files must fail to load (``mismatch_checks``).

The names other files use are re-exported here.
"""
from parity_tests.checks.forward import eval_mode_check, train_mode_check
from parity_tests.checks.mismatch import mismatch_checks
from parity_tests.checks.pairs import DIRECTIONS, round_trip_check, transfer_pair
from parity_tests.checks.precision import on_gpu, precision_context
from parity_tests.checks.synthesis import export_trained, synthesis_check
from parity_tests.checks.training import TrainTrace, loader_batches, training_checks

__all__ = [
    "DIRECTIONS", "TrainTrace", "eval_mode_check", "export_trained", "loader_batches", "mismatch_checks",
    "on_gpu", "precision_context", "round_trip_check", "synthesis_check", "train_mode_check",
    "training_checks", "transfer_pair",
]
