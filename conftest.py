"""Test-session setup shared by tests/ and parity_tests/.

Four forced host devices let the JAX data-parallel tests run on a CPU; this must be set before
jax is imported anywhere, so it lives here (pytest imports the root conftest first).

XLA:CPU compiles the tests' programs at LLVM -O0 (``--xla_backend_optimization_level=0``): the
tests' tiny models spend most of their time compiling, and -O0 compiles them about 3x faster. The
HLO program is the same; only LLVM's machine code for the fused loops differs (convolutions and
matmuls are library calls either way), so results can differ in the last bits of float32, well
inside every tolerance but one noise-driven weight (see tests/test_jax_train.py). Users' runs
keep XLA's default level.
"""
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# No persistent JAX compilation cache from the user's home in tests (predict/evaluate turn one on):
# tests stay hermetic.
os.environ.setdefault("MRSYNTH_JAX_CACHE_DIR", "off")
# pytest -n 2 runs two workers on two cores: one intra-op thread each, or PyTorch's OpenMP
# threads spin-wait on descheduled peers (steps 10-50x slower on a loaded 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# One JAX compilation cache and one PyTorch inductor cache for this test session only: a fresh
# folder, made by the first process (the xdist controller, before it starts its workers, or a
# plain pytest), shared by the workers and every `run.py` subprocess a test starts (they inherit
# the environment), and removed when the session ends. The same program (a model's initializers,
# a train step, a predictor) is then compiled once per session rather than once per process,
# engine and test; nothing is kept between sessions (inductor's default, /tmp/torchinductor_$USER,
# outlives them: a second run of the suite compiled the optimizer test 12 s faster than the first).
_SESSION_CACHES = None
_UNSET_CACHES = [name for name in ("JAX_COMPILATION_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR") if name not in os.environ]
if _UNSET_CACHES:
    _SESSION_CACHES = (os.getpid(), tempfile.mkdtemp(prefix="mrsynth-tests-caches-"))
    for _name in _UNSET_CACHES:
        os.environ[_name] = os.path.join(_SESSION_CACHES[1], _name.lower())
        os.makedirs(os.environ[_name])
    if "JAX_COMPILATION_CACHE_DIR" in _UNSET_CACHES:
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
    if _SESSION_CACHES is not None and _SESSION_CACHES[0] == os.getpid():
        shutil.rmtree(_SESSION_CACHES[1], ignore_errors=True)
