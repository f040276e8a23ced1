"""pytest plugin (-p compile_sites_plugin): every XLA compile in this process, its seconds added to
the last three project frames that asked for it; written at exit to compile-sites-<pid>.txt in
$COMPILE_SITES_DIR. Only in-process compiles: a test's subprocesses are not seen."""
import atexit
import collections
import os
import traceback

import jax.monitoring

ROOT = os.getcwd() + "/"
COUNT, SECONDS = collections.Counter(), collections.Counter()


def on_event(event, duration, **kwargs):
    if event != "/jax/core/compile/backend_compile_duration":
        return
    frames = [f"{f.filename.removeprefix(ROOT)}:{f.lineno}:{f.name}" for f in traceback.extract_stack()
              if f.filename.startswith(ROOT) and "/.venv/" not in f.filename]
    key = " <- ".join(reversed(frames[-3:]))
    COUNT[key] += 1
    SECONDS[key] += duration


def dump():
    with open(os.path.join(os.environ.get("COMPILE_SITES_DIR", "."), f"compile-sites-{os.getpid()}.txt"), "w") as f:
        for key, seconds in SECONDS.most_common():
            f.write(f"{seconds:6.2f} n={COUNT[key]:3d} {key}\n")


jax.monitoring.register_event_duration_secs_listener(on_event)
atexit.register(dump)
