"""Test-session setup shared by tests/ and parity_tests/.

Four forced host devices let the JAX data-parallel tests run on a CPU; this must be set before
jax is imported anywhere, so it lives here (pytest imports the root conftest first).
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# No persistent JAX compilation cache in tests (predict/evaluate turn it on): tests stay hermetic.
os.environ.setdefault("MRSYNTH_JAX_CACHE_DIR", "off")
# pytest -n 2 runs two workers on two cores: one intra-op thread each, or PyTorch's OpenMP
# threads spin-wait on descheduled peers (steps 10-50x slower on a loaded 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
