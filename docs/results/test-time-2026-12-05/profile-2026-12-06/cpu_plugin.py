"""pytest plugin (-p cpu_plugin): per test, the wall time, the worker's CPU seconds, its waited
children's CPU seconds and the JAX compile events' seconds, one JSON line each in $CPU_PROF_OUT."""
import json
import os
import resource
import time

import pytest

OUT = os.environ.get("CPU_PROF_OUT", "cpu-per-test.jsonl")
JAX_EVENTS: dict[str, float] = {}


def _listen() -> None:
    try:
        import jax.monitoring
    except ImportError:
        return

    def on_event(event, duration, **kwargs):
        JAX_EVENTS[event] = JAX_EVENTS.get(event, 0.0) + duration

    jax.monitoring.register_event_duration_secs_listener(on_event)


_listen()


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.time()
    own0, children0 = _cpu()
    JAX_EVENTS.clear()
    yield
    own1, children1 = _cpu()
    with open(OUT, "a") as f:
        f.write(json.dumps({"id": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", "-"),
                            "start": start, "wall": time.time() - start, "self": own1 - own0,
                            "children": children1 - children0, "jax": dict(JAX_EVENTS)}) + "\n")
