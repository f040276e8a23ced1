"""Per-test JAX trace/lower/compile seconds (in-process only), written per worker at the end as
$COMPILE_SHARE_OUT/<pid>.json (default: the current folder)."""
import json, os, time, collections
import pytest
_current = ["<none>"]
_acc = collections.defaultdict(lambda: collections.Counter())
_hooked = [False]

def _hook():
    if _hooked[0]:
        return
    import jax.monitoring as m
    def listen(event, duration, **kw):
        if event.startswith("/jax/core/compile") or "cache" in event:
            _acc[_current[0]][event.rsplit("/", 1)[-1]] += duration
    m.register_event_duration_secs_listener(listen)
    _hooked[0] = True

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _hook(); _current[0] = item.nodeid

def pytest_sessionfinish(session):
    with open(os.path.join(os.environ.get("COMPILE_SHARE_OUT", "."), f"{os.getpid()}.json"), "w") as f:
        json.dump({k: dict(v) for k, v in _acc.items()}, f)
