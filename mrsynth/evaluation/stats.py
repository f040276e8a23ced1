"""Summary statistics over subjects and paired tests between methods.

Subjects are the unit of replication: a method's number is the mean over subjects, with a
t-distribution 95% confidence interval, and two methods are compared on the same subjects with
a paired t-test and a Wilcoxon signed-rank test. Non-finite values (PSNR of a perfect
prediction) are left out and the count says so.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95


def summarize(values: Sequence[float]) -> dict[str, float]:
    """mean, sd (n-1), 95% CI of the mean (t distribution) and n over the finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    out = {"mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    if n == 0:
        return out
    out["mean"] = float(x.mean())
    if n >= 2:
        sd = float(x.std(ddof=1))
        half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
        out.update(sd=sd, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | str]:
    """Paired comparison of two methods on the same subjects (a - b).

    Returns mean_diff, t, p_t (paired t-test), w, p_w (Wilcoxon signed-rank), n (pairs with
    both values finite) and a note when a test cannot be computed (NaN then).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    n = len(pairs)
    out: dict[str, float | int | str] = {
        "n": n, "mean_diff": math.nan, "t": math.nan, "p_t": math.nan, "w": math.nan, "p_w": math.nan,
        "note": "",
    }
    if n == 0:
        out["note"] = "no subjects with finite values"
        return out
    diff = np.asarray([x - y for x, y in pairs], dtype=np.float64)
    out["mean_diff"] = float(diff.mean())
    if n < 2:
        out["note"] = "n < 2: no test"
        return out
    if np.all(diff == 0):
        out["note"] = "identical values: no test"
        return out
    if np.all(diff == diff[0]):
        out["note"] = "constant difference: t-test undefined"
    else:
        t = sps.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
        out["t"], out["p_t"] = float(t.statistic), float(t.pvalue)
    w = sps.wilcoxon(diff)
    out["w"], out["p_w"] = float(w.statistic), float(w.pvalue)
    return out
