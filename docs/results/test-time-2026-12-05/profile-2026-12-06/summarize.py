"""Summaries of this folder's per-test profiles (run from this folder): CPU per test and per file,
the in-process JAX compile events, and the XLA compiles by the first project frame that asked."""
import collections
import glob
import json
import re

rows = [json.loads(line) for line in open("cpu-and-jax-compile-per-test.jsonl")]
print(f"tests {len(rows)}: worker CPU {sum(r['self'] for r in rows):.0f} s, waited children "
      f"{sum(r['children'] for r in rows):.0f} s, summed wall {sum(r['wall'] for r in rows):.0f} s")
events = collections.Counter()
for r in rows:
    events.update(r["jax"])
for name in ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_trace_duration",
             "/jax/core/compile/jaxpr_to_mlir_module_duration", "/jax/compilation_cache/compile_time_saved_sec"):
    print(f"{events[name]:7.1f} s {name}")
print("\nthe 15 tests of most CPU (worker + children):")
for r in sorted(rows, key=lambda r: -(r["self"] + r["children"]))[:15]:
    backend = r["jax"].get("/jax/core/compile/backend_compile_duration", 0.0)
    print(f"{r['self'] + r['children']:6.1f} s (XLA compile {backend:4.1f}) {r['id']}")
sites, count = collections.Counter(), 0
for path in glob.glob("compile-sites-*.txt"):
    for line in open(path):
        m = re.match(r"\s*([\d.]+) n=\s*(\d+) (.*)", line)
        if m:
            sites[m.group(3).split(" <- ")[0] or "(no project frame)"] += float(m.group(1))
            count += int(m.group(2))
print(f"\nXLA compiles in the two workers: {count}, {sum(sites.values()):.1f} s; by the project frame that asked:")
for site, seconds in sites.most_common(12):
    print(f"{seconds:6.1f} s {site}")
