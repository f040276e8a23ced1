"""Summary statistics over subjects and paired tests between methods.

Subjects are the unit of replication: a method's number is the mean over subjects with a 95%
confidence interval, and two methods are compared on the same subjects with a paired t-test and
a Wilcoxon signed-rank test. The interval is the t-distribution one from ``BOOTSTRAP_BELOW``
subjects on; below, a percentile bootstrap of the mean, whose ends are means of resampled
subjects and so never leave the observed values (the t interval of 2 subjects is 12.7 standard
errors wide: an SSIM of 1.17). Both are clipped to the metric's possible range. Non-finite
values (PSNR of a perfect prediction) are left out and the count says so.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
BOOTSTRAP_BELOW = 10  # fewer subjects: percentile bootstrap instead of the t interval
FEW_SUBJECTS = 5  # fewer subjects: reports say that the intervals mean little
BOOTSTRAP_RESAMPLES = 10_000
UNBOUNDED = (-math.inf, math.inf)


def summarize(values: Sequence[float], bounds: tuple[float, float] = UNBOUNDED,
              interval: Literal["auto", "t"] = "auto") -> dict[str, float | int | str]:
    """mean, sd (n-1), 95% CI of the mean (``ci_method`` 't' or 'bootstrap'; '' below 2 values)
    and n over the finite values; the interval is clipped to ``bounds``, the metric's range.
    ``interval="t"`` takes the t interval at any n: for a few whole runs, whose bootstrap would
    only span the observed values, where the t interval widens with the few degrees of freedom."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    out: dict[str, float | int | str] = {"mean": math.nan, "sd": math.nan, "ci_low": math.nan,
                                         "ci_high": math.nan, "n": n, "ci_method": ""}
    if n == 0:
        return out
    mean = float(x.mean())
    out["mean"] = mean
    if n < 2:
        return out
    sd = float(x.std(ddof=1))
    if n >= BOOTSTRAP_BELOW or interval == "t":
        half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
        low, high, method = mean - half, mean + half, "t"
    else:
        means = x[np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
        low, high = (float(q) for q in np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
        method = "bootstrap"
    out.update(sd=sd, ci_low=min(max(low, bounds[0]), bounds[1]), ci_high=min(max(high, bounds[0]), bounds[1]),
               ci_method=method)
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


SIGN_FLIP_EXACT_UP_TO = 16  # pairs; more: Monte Carlo over random sign vectors


def sign_flip_test(diffs: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float | int]:
    """Two-sided sign-flip permutation test that the mean of paired differences is 0.

    For differences between whole runs (one per fold and seed), each a mean over the run's
    slices: the run is the unit that is randomized, so correlated slices do not inflate the
    evidence as a per-slice test does. Exact over all 2^n sign vectors up to
    ``SIGN_FLIP_EXACT_UP_TO`` pairs (the smallest p it can give is 2 / 2^n), Monte Carlo above
    (counting the observed signs once, so p > 0). Returns n, mean_diff and p (NaN below 2 pairs)."""
    d = np.asarray([v for v in diffs if math.isfinite(v)], dtype=np.float64)
    n = int(d.size)
    out: dict[str, float | int] = {"n": n, "mean_diff": float(d.mean()) if n else math.nan, "p": math.nan}
    if n < 2:
        return out
    exact = n <= SIGN_FLIP_EXACT_UP_TO
    if exact:
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(resamples, n))
    observed = abs(d.mean())
    as_extreme = int(np.sum(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12 * max(observed, 1.0)))
    out["p"] = as_extreme / len(signs) if exact else (as_extreme + 1) / (len(signs) + 1)
    return out
