"""Framework-free benchmark harness: FLOP counts, timing statistics, machine info, reports.

The backends' own halves live in ``jax_impl/bench.py`` and ``torch_ref/bench.py``; the
``run.py benchmark`` command (``mrsynth/commands/benchmark.py``) drives both through
:mod:`mrsynth.bench.runner`.
"""
