"""pytest-xdist groups (``-n 2 --dist loadgroup``): tests that share a costly per-process start
run on one worker, so the start is paid once per session, not once per worker."""
import pytest

#: Every test that runs BET. brainextractor's numba kernels compile on a process's first call
#: in a fresh environment (about 15 s on 2 cores) and are cached after; one worker compiles them.
BRAIN_EXTRACTION = pytest.mark.xdist_group("brain-extraction")
