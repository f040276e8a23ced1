"""The evaluation report: one list of blocks rendered as Markdown and as a self-contained HTML page.

The HTML embeds its figures as base64 PNG so it can be mailed or opened from anywhere; the
Markdown links the PNG files next to it. Numbers and tables come from :mod:`mrsynth.reporting`,
so the page shows exactly what summary.csv holds (rounded).
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrsynth.evaluation.baselines import BASELINE_MAX_TRAIN
from mrsynth.evaluation.metrics import METRIC_DESCRIPTIONS
from mrsynth.evaluation.stats import BOOTSTRAP_BELOW, BOOTSTRAP_RESAMPLES, FEW_SUBJECTS
from mrsynth.evaluation.results import FULL_METRICS, MAIN_METRICS, SCALE_INVARIANT_METRICS, EvaluationResult
from mrsynth.fileio import atomic_write_text
from mrsynth.reporting import MISSING, format_number, html_table, markdown_table


@dataclass
class Block:
    """One report element: heading ("h1"/"h2"/"h3"), paragraph ("p"), list ("ul"), table, image."""

    kind: str
    text: str = ""
    items: list[str] | None = None
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    image: Path | None = None


def format_summary(stats: dict[str, float]) -> str:
    """mean ± sd [95% CI low, high] as the tables show it (the mean alone for fewer than 2 subjects)."""
    text = format_number(stats["mean"])
    if math.isfinite(stats.get("sd", math.nan)):
        text += f" ± {format_number(stats['sd'])} [{format_number(stats['ci_low'])}, {format_number(stats['ci_high'])}]"
    return text


def format_p(value: float) -> str:
    """A p-value; NaN (no test, e.g. fewer than 2 subjects) is a missing value."""
    if not math.isfinite(value):
        return MISSING
    return format_number(value, ".2e" if value < 1e-3 else ".4f")


def _summary_table(result: EvaluationResult, metrics: list[str]) -> Block:
    rows = [
        [m, result.kinds[m], *[format_summary(result.summary[m][k]) for k in metrics]]
        for m in result.methods
    ]
    return Block("table", header=["method", "kind", *metrics], rows=rows)


def _few_subjects_warning(n: int) -> list[Block]:
    """A plain sentence when there are too few subjects for the intervals to mean much."""
    if n >= FEW_SUBJECTS:
        return []
    return [Block("p", f"**Only {n} subject(s): the confidence intervals say little.** With 2 subjects the "
                       f"bootstrap interval is the range of the two values; evaluate at least {FEW_SUBJECTS} "
                       f"subjects before reading a difference between methods as real.")]


def _tests_table(result: EvaluationResult, metrics: list[str]) -> Block:
    rows = [
        [t["a"], t["b"], t["metric"], str(t["n"]), format_number(t["mean_diff"]), format_p(t["p_t"]),
         format_p(t["p_w"]), t["note"]]
        for t in result.tests
        if t["metric"] in metrics
    ]
    return Block("table", header=["A", "B", "metric", "n", "mean(A−B)", "p (paired t)", "p (Wilcoxon)", "note"],
                 rows=rows)


def _per_subject_table(result: EvaluationResult, metrics: list[str]) -> Block:
    rows = [[r["subject"], r["method"], *[format_number(r.get(k)) for k in metrics]] for r in result.rows]
    return Block("table", header=["subject", "method", *metrics], rows=rows)


def _run_items(run: dict[str, Any]) -> list[str]:
    model, train, data = run["model"], run["train"], run["data"]
    return [
        f"backend **{run['backend']}**, run directory `{run['run_dir']}`, checkpoint `{run['checkpoint']}`, "
        f"status {run.get('status', '?')}, {run.get('steps_done', '?')} of {train['steps']} steps",
        f"model: {model['dims']}D U-Net, depth {model['depth']}, base channels {model['base_channels']}, "
        f"multipliers {model['channel_mults']}, norm {model['norm']}, activation {model['activation']}, "
        f"upsampling {model['upsample']}, residual {model['residual']}",
        f"training: batch {train['batch_size']}, AdamW lr {train['lr']} (warmup {train['warmup_steps']}, cosine), "
        f"weight decay {train['weight_decay']}, loss {train['loss']}, precision {train['precision']}, seed {train['seed']}",
        f"data: source {data['source']} (`{data_location(data)}`), normalization {data['normalization']}, "
        f"mask {data['mask']}, {'slices along axis ' + str(data['slice_axis']) if model['dims'] == 2 else 'patches'} "
        f"of {data['patch_size']}",
    ]


def data_location(data: dict[str, Any]) -> str:
    """Where the evaluated subjects were read from, as the run's config names it."""
    if data["source"] == "manifest":
        return str(data["manifest"])
    if data["source"] == "glob":
        return f"{data['root']}/{data['t1_glob']} + {data['t2_glob']}"
    return str(data["root"])


def build_blocks(result: EvaluationResult, context: dict[str, Any], figures: dict[str, Path]) -> list[Block]:
    """The report's content, independent of the output format."""
    main = [m for m in MAIN_METRICS if m in result.metrics]
    invariant = [m for m in SCALE_INVARIANT_METRICS if m in result.metrics]
    extra = [m for m in FULL_METRICS if m in result.metrics]
    tissue = [m for m in result.metrics if m.startswith("mae_") and m not in main + invariant + extra]
    blocks = [
        Block("h1", context["title"]),
        Block("p", f"Generated {context['generated']}. {len(result.subjects)} {context['split']} subject(s), "
                   f"{len(result.methods)} method(s)."),
        Block("h2", "What was evaluated"),
    ]
    for run in context["runs"]:
        blocks += [Block("h3", run["label"]), Block("ul", items=_run_items(run))]
    blocks += [
        Block("h3", "Baselines (no learning)"),
        Block("ul", items=[f"**{name}**: {text}" for name, text in context["baselines"].items()]),
        Block("p", f"Baselines were fitted on {context['baseline_train_subjects']} of the "
                   f"{context['split_sizes']['train']} training subject(s) (all up to {BASELINE_MAX_TRAIN}, "
                   "beyond that many evenly spaced by id)."),
        Block("h2", "Subjects"),
        Block("p", "Subjects per split (by subject, as in training): "
                   + ", ".join(f"{k} {n}" for k, n in context["split_sizes"].items()) + "."),
        Block("p", f"Evaluated ({context['split']} split): " + ", ".join(f"`{s}`" for s in result.subjects)),
        Block("h2", "How the numbers are computed"),
        Block("ul", items=[
            "Every metric compares the synthesized T2 with the real T2 of the subject in the subject's "
            "normalized T2 units (the units the network was trained in); the NIfTI files in `nifti/` "
            "are written in those units on each subject's original T1 grid.",
            context["data_range_note"],
            *[f"`{k}`: {v}" for k, v in METRIC_DESCRIPTIONS.items()],
            "`psnr_lit`, `ssim_lit`: the protocol common in synthesis papers (2D axial slices, each image "
            "scaled to [0, 1] by its own range, whole slice, data range 1); higher than the in-mask numbers "
            "and not comparable to them.",
            f"Tables show mean ± standard deviation over subjects [95% confidence interval of the mean: "
            f"t distribution from {BOOTSTRAP_BELOW} subjects on, below that a percentile bootstrap over the "
            f"subjects ({BOOTSTRAP_RESAMPLES} resamples), clipped to the metric's possible range (SSIM and r "
            f"at most 1, errors at least 0)]; `ci_method` in summary.csv says which. Paired tests compare "
            f"two methods on the same subjects.",
        ]),
        Block("h2", "Results inside the brain mask"),
        *_few_subjects_warning(len(result.subjects)),
        _summary_table(result, main),
    ]
    if invariant:
        blocks += [
            Block("h2", "Scale-invariant results and sharpness"),
            Block("p", "Each volume z-scored inside the mask first: a prediction with the right anatomy "
                       "but another gain or offset loses nothing, a low-contrast one cannot hide in small "
                       "errors. Sharpness 1 is as sharp as the real T2, below 1 smoother."),
            _summary_table(result, invariant),
        ]
    if extra:
        blocks += [
            Block("h2", "Whole volume and literature protocol"),
            Block("p", "These numbers count every voxel of the volume or slice, mostly background outside the "
                       "brain mask, where every method writes what the real T2 holds there (zero after "
                       "normalization): that background scores a perfect SSIM and no error, so the numbers "
                       "rise with the share of background, and a method can rank higher here while it is "
                       "worse inside the brain. Judge synthesis quality by the in-mask tables above; these "
                       "are here to compare with papers that report them."),
            _summary_table(result, extra),
        ]
    if tissue:
        blocks += [Block("h2", "Mean absolute error per tissue"), _summary_table(result, tissue)]
    blocks += [
        Block("h2", "Paired tests across subjects"),
        Block("p", "A − B per subject; p-values of the paired t-test and the Wilcoxon signed-rank test "
                   "(all metrics in paired_tests.csv)."),
        _tests_table(result, main + [m for m in invariant if m != "sharpness"]),
        Block("h2", "Figures"),
    ]
    for title, path in figures.items():
        blocks += [Block("h3", title), Block("img", text=title, image=path)]
    blocks += [
        Block("h2", "Per-subject values"),
        _per_subject_table(result, main),
        Block("p", "Files: per_subject.csv (all metrics), summary.csv, summary.json, paired_tests.csv, "
                   "figures/, nifti/."),
    ]
    return blocks


def render_markdown(blocks: list[Block], base: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items or []))
        elif b.kind == "table":
            out.append(markdown_table(b.header or [], b.rows or []))
        elif b.kind == "img":
            out.append(f"![{b.text}]({Path(b.image).relative_to(base).as_posix()})")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then the two Markdown inline forms the blocks use: **bold** and `code`."""
    parts = html.escape(text).split("`")
    parts = [f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)]
    text = "".join(parts)
    pieces = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(pieces))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.85em;display:block;max-width:100%;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0;white-space:nowrap}td:first-child,td:nth-child(2){text-align:left;white-space:nowrap}
img{max-width:100%;border:1px solid #ddd}code{background:#f4f4f4;padding:0 3px}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:1.6em}
"""


def render_html(blocks: list[Block]) -> str:
    title = next((b.text for b in blocks if b.kind == "h1"), "mrsynth report")
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{_inline(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items or []) + "</ul>")
        elif b.kind == "table":
            out.append(html_table(b.header or [], b.rows or []))
        elif b.kind == "img":
            data = base64.b64encode(Path(b.image).read_bytes()).decode("ascii")
            out.append(f"<p><img alt='{html.escape(b.text)}' src='data:image/png;base64,{data}'></p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(out_dir: Path, result: EvaluationResult, context: dict[str, Any],
                 figures: dict[str, Path]) -> tuple[Path, Path]:
    """Write report.md and report.html (figures embedded) into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    blocks = build_blocks(result, context, figures)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, render_markdown(blocks, out_dir))
    atomic_write_text(html_path, render_html(blocks))
    return md_path, html_path
