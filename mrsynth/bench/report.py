"""Benchmark reports: the terminal table, and a directory with results.json, README.md and plots.

The directory is written atomically (``mrsynth.fileio.atomic_dir``): it appears complete or
not at all.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mrsynth.fileio import atomic_dir
from mrsynth.reporting import MISSING, format_number, json_text, markdown_table, text_table

RESULTS_FILE = "results.json"
MARKDOWN_FILE = "README.md"
PLOTS = ("step_time.png", "throughput.png", "scaling.png")


def _giga(value: float | None) -> float | None:
    return None if value is None else value / 1e9


def _rate(row: dict[str, Any], key: str = "samples_per_s") -> str:
    """Images/s for 2D, megavoxels/s for 3D."""
    value = row.get(key) if key in row else None
    if value is None:
        return MISSING
    if row["dims"] == 3:
        return f"{value * math.prod(row['size']) / 1e6:.3g} Mvox/s"
    return f"{value:.4g} img/s"


TRAIN_COLUMNS = ("case", "backend", "variant", "median ms", "p10 ms", "p90 ms", "first step s",
                 "synthetic rate", "TFLOP/s", "% peak", "pipeline rate", "inference s/vol", "dev peak MiB",
                 "host RSS MiB")


def train_table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in results["train"]:
        step = r["step"]
        pipeline = r.get("pipeline")
        inference = r.get("inference")
        memory = r.get("memory", {})
        rows.append([
            r["case"], r["backend"], r["variant"], f"{step['median_ms']:.1f}", f"{step['p10_ms']:.1f}",
            f"{step['p90_ms']:.1f}", f"{r['first_step_s']:.2f}", _rate(r), format_number(r["tflops"], ".3g"),
            format_number(None if r["peak_fraction"] is None else 100 * r["peak_fraction"], ".1f"),
            _rate({**r, **({"pipeline_rate": pipeline["samples_per_s"]} if pipeline else {})}, "pipeline_rate"),
            format_number(inference["median_s"] if inference else None, ".2f"),
            format_number(memory.get("device_peak_mib"), ".0f"),
            format_number(memory.get("host_peak_rss_mib"), ".0f"),
        ])
    return rows


SCALING_COLUMNS = ("backend", "dims", "mode", "devices", "global batch", "median ms", "p10 ms", "p90 ms",
                   "samples/s", "TFLOP/s", "efficiency")
SCALING_NOTE = ("weak scaling: fixed batch per device; efficiency = samples/s / (devices x the 1-device samples/s "
                "of the same backend and mode), 1.00 = linear")


def scaling_table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for block in results.get("scaling", []):
        for r in block["rows"]:
            head = [block["backend"], str(block["dims"]), r["mode"], str(r["devices"]), str(r["batch"])]
            if "step" not in r:
                rows.append([*head, *[MISSING] * 5, r.get("skipped", MISSING)])
                continue
            rows.append([*head, f"{r['step']['median_ms']:.1f}", f"{r['step']['p10_ms']:.1f}",
                         f"{r['step']['p90_ms']:.1f}", f"{r['samples_per_s']:.4g}", format_number(r["tflops"], ".3g"),
                         f"{r['efficiency']:.2f}"])
    return rows


def _xla_flags_line(results: dict[str, Any]) -> str | None:
    """The XLA_FLAGS the JAX runs had, and which mrsynth added (GPU collective overlap)."""
    jax_info = results["devices"].get("jax")
    if jax_info is None:
        return None
    added = ", ".join(jax_info["xla_flags_added"]) or "none (not a CUDA install, or set by the user)"
    return f"JAX XLA_FLAGS: `{jax_info['xla_flags'] or '(empty)'}`; added by mrsynth: {added}"


def terminal_summary(results: dict[str, Any]) -> str:
    parts = [text_table(TRAIN_COLUMNS, train_table_rows(results)), _peak_line(results["peaks"])[2:]]
    loaders = [(c["id"], c["loader"]["samples_per_s"]) for c in results["cases"] if "loader" in c]
    if loaders:
        parts.append("loader alone: " + ", ".join(f"{cid} {rate:.4g} samples/s" for cid, rate in loaders))
    if results.get("scaling"):
        parts.append(f"Data-parallel scaling ({SCALING_NOTE})\n"
                     + text_table(SCALING_COLUMNS, scaling_table_rows(results)))
        flags = _xla_flags_line(results)
        if flags:
            parts.append(flags)
    return "\n\n".join(parts)


def _loads(values: list[float] | None) -> str:
    return MISSING if not values else ", ".join(f"{v:.2f}" for v in values)


def _machine_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    lines = [
        f"- host: `{m['hostname']}`, {m['os']}, Python {m['python']}",
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpu_usable']} usable), "
        f"{format_number(m['memory_gib'], '.1f')} GiB RAM",
        f"- load average (1, 5, 15 min) at start {_loads(m['load_average'])}, at end {_loads(m.get('load_average_end'))} "
        "(a load above the core count means other processes shared the CPU: timings are noisy)",
    ]
    for gpu in m.get("gpus", []):
        lines.append(f"- GPU: {gpu.get('name')}, driver {gpu.get('driver_version')}, {gpu.get('memory.total')}")
    for name, info in results["devices"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    lines.append(f"- libraries: {libs}")
    return lines


def _peak_line(peaks: dict[str, Any]) -> str:
    """Which ceiling "% peak" divides by: one figure per precision for every backend, and its source."""
    shared = ", ".join(f"{p} {v:.3g} TFLOP/s" for p, v in peaks["shared"].items())
    line = f"- Peak (\"% peak\", one figure per precision for all backends): {shared}; source: {peaks['source']}"
    if peaks["measured"]:
        line += " (" + "; ".join(f"{b}: " + ", ".join(f"{p} {v:.3g}" for p, v in m.items())
                                 for b, m in peaks["measured"].items()) + ")"
    return line + "."


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    s = results["settings"]
    out = [
        f"# mrsynth benchmark, {results['created']}",
        "",
        f"Command: `{results.get('command', 'python run.py benchmark')}`  ",
        f"Wall time: {results['wall_s']:.0f} s. Every raw figure is in `{RESULTS_FILE}`.",
        "",
        "## Machine",
        *_machine_lines(results),
        "",
        "## Method",
        f"- Backends {', '.join(s['backends'])}; variants {', '.join(s['variants'])}; each case opens one "
        "session per backend (the backend's own training engine), runs the first step (compile/autotune, "
        f"reported separately), {s['warmup']} warm-up steps, then {s['steps']} timed steps on a device-resident "
        f"synthetic batch in {s['rounds']} chunks alternating between backends, synchronized after every step.",
        f"- FLOPs: {results['flop_formula']}.",
        _peak_line(results["peaks"]),
        f"- Pipeline rate: {s['pipeline_steps']} normal `train_step` calls fed by the grain loader from cached "
        "phantom NIfTI volumes (one sync at the end); the loader's rate alone is measured on the same loader.",
        "- Inference: whole-volume synthesis (`mrsynth.inference.volume.synthesize_volume`), 2D slice-wise or 3D "
        "patch-wise, median seconds per volume after one untimed volume.",
        "- Memory: device peak from `memory_stats()['peak_bytes_in_use']` (JAX, a process high-water mark) or "
        f"`torch.cuda.max_memory_allocated` (per session); `{MISSING}` on a CPU. Host RSS is the process peak so far.",
        "",
        "## Cases",
        markdown_table(("case", "parameters", "channels", "forward GFLOP", "train step GFLOP", "loader alone"),
                  [[c["id"], format_number(c["parameters"], ","),
                    "-".join(str(c["model"]["base_channels"] * m) for m in c["model"]["channel_mults"]),
                    format_number(_giga(c["forward_flops"]), ".4g"), format_number(_giga(c["train_step_flops"]), ".4g"),
                    f"{c['loader']['samples_per_s']:.4g} samples/s" if "loader" in c else MISSING]
                   for c in results["cases"]]),
        "",
        "## Training step",
        markdown_table(TRAIN_COLUMNS, train_table_rows(results)),
        "",
        "Rates: images/s (2D) or megavoxels/s (3D). \"synthetic\": device-resident batch; \"pipeline\": fed by the "
        "real loader. A pipeline rate well below the synthetic one means the input pipeline starves the device.",
    ]
    if results.get("scaling"):
        out += ["", "## Data-parallel scaling",
                f"JAX sharded jit and pmap, torch DDP (one process per device, torchrun); {SCALING_NOTE}. On a CPU "
                "the devices are forced host devices (JAX) or processes (torch) sharing the same cores: this checks "
                "the mechanism, not a speed-up.", "",
                markdown_table(SCALING_COLUMNS, scaling_table_rows(results))]
        flags = _xla_flags_line(results)
        if flags:
            out += ["", flags + " (docs/benchmarks/README.md, \"Multi-device\")."]
    if plots:
        out += ["", "## Plots", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(out) + "\n"


def _plot(results: dict[str, Any], directory: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rows = results["train"]
    if rows:
        labels = [f"{r['case']}\n{r['backend']} {r['variant']}" for r in rows]
        colors = ["tab:blue" if r["backend"] == "jax" else "tab:orange" for r in rows]
        med = [r["step"]["median_ms"] for r in rows]
        err = [[m - r["step"]["p10_ms"] for m, r in zip(med, rows)], [r["step"]["p90_ms"] - m for m, r in zip(med, rows)]]
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
        ax.bar(range(len(rows)), med, yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("ms / training step (median, p10-p90)")
        ax.set_title("Training step time (blue: jax, orange: torch)")
        fig.tight_layout()
        fig.savefig(directory / PLOTS[0], dpi=110)
        plt.close(fig)
        written.append(PLOTS[0])

        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4))
        width = 0.27
        loader_rate = {c["id"]: c["loader"]["samples_per_s"] for c in results["cases"] if "loader" in c}
        series = [("synthetic batch", [r["samples_per_s"] for r in rows], 1.0),
                  ("grain pipeline", [r.get("pipeline", {}).get("samples_per_s", 0.0) for r in rows], 0.5),
                  ("loader alone", [loader_rate.get(r["case"], 0.0) for r in rows], 0.2)]
        for k, (label, values, alpha) in enumerate(series):
            ax.bar([i + (k - 1) * width for i in range(len(rows))], values, width, color=colors, alpha=alpha,
                   edgecolor="black", linewidth=0.4, label=label)
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("samples / s (log)")
        ax.set_title("Throughput: synthetic | pipeline | loader alone", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(directory / PLOTS[1], dpi=110)
        plt.close(fig)
        written.append(PLOTS[1])
    blocks = [b for b in results.get("scaling", []) if any("step" in r for r in b["rows"])]
    if blocks:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for block in blocks:
            for mode in sorted({r["mode"] for r in block["rows"]}):
                pts = [(r["devices"], r["samples_per_s"]) for r in block["rows"] if r["mode"] == mode and "step" in r]
                ax.plot(*zip(*pts), marker="o", label=f"{block['backend']} {block['dims']}D {mode}")
        ax.set_xlabel("devices")
        ax.set_ylabel("samples / s (fixed batch per device)")
        ax.set_title("Data-parallel scaling")
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / PLOTS[2], dpi=110)
        plt.close(fig)
        written.append(PLOTS[2])
    return written


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """results.json + README.md + plots in ``out_dir`` (replaced atomically)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / RESULTS_FILE).write_text(json_text(results))
        plots = _plot(results, tmp)
        (tmp / MARKDOWN_FILE).write_text(markdown(results, plots))
    return out_dir
