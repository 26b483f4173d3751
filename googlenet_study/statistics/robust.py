"""Report stage 2c: small-sample statistics (Agarwal et al. 2021, "Deep RL at the edge of the statistical
precipice"; Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks").

The interquartile mean (IQM: the mean of the middle 50 % of runs, scipy's trim_mean(x, 0.25), as rliable
computes it) with a percentile bootstrap 95 % interval, and P(A better than B) (the Mann-Whitney
probability) with a two-sample bootstrap interval. Every bootstrap starts from a fresh generator seeded
with BOOTSTRAP_SEED, so a report is the same byte for byte from the same runs, whatever else it computes."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 0          # stated in the report
BOOTSTRAP_RESAMPLES = 2000  # enough for a 95 % percentile interval; 1,000 runs stay under a minute
CONFIDENCE = 0.95           # every interval in the report: t, bootstrap, Kaplan-Meier (defined here only)
# What CONFIDENCE delivers at few seeds, measured: the share (%) of simulated studies whose interval held the true
# value at MEASURED_AT seeds per configuration, with 10 % of runs diverging (benchmarks/coverage.py --studies 1000
# --workers 2, 2026-12-07; docs/reports.md, "How sure"). The report prints it in its Method section.
MEASURED_AT = (3, 5, 10)
MEASURED_COVERAGE = {"Kaplan-Meier median": (76.7, 93.3, 94.9), "ERT": (64.9, 68.5, 78.9),
                     "ERT ratio": (81.5, 86.5, 92.1), "IQM of best accuracy": (75.7, 90.4, 92.8),
                     "IQM of total time": (75.6, 89.9, 94.1), "t-interval of mean best accuracy": (73.6, 58.3, 63.4),
                     "t-interval of mean total time": (95.9, 94.6, 95.1),
                     "P(A better) on time to target": (83.8, 88.4, 93.6),
                     "P(A better) on best accuracy": (74.5, 90.5, 93.1)}


def t_half_width(std, n):
    """Half-width of the Student-t CONFIDENCE interval of a mean, t(1 - alpha/2, n - 1) * std / sqrt(n);
    vectorised over arrays of std and n, NaN where n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(n - 1, 1)) * np.asarray(std, dtype=float) / np.sqrt(n)
    return np.where(n >= 2, h, np.nan)


def t_interval(x) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values of x: the Student-t interval; low/high are NaN for n < 2."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    h = float(t_half_width(x.std(ddof=1), len(x)))
    return m, m - h, m + h


def _rng() -> np.random.Generator:
    return np.random.default_rng(BOOTSTRAP_SEED)


def iqm(x, axis: int = -1):
    """Interquartile mean: mean of the values left after cutting int(n/4) from each end."""
    return stats.trim_mean(x, 0.25, axis=axis)


def iqm_interval(x) -> tuple[float, float, float]:
    """(IQM, low, high) of the finite values of x; the bootstrap interval is NaN for fewer than 2 values."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(iqm(x))
    if len(x) < 2:
        return m, math.nan, math.nan
    lo, hi = _bootstrap((x,), iqm)
    return m, lo, hi


@functools.lru_cache(maxsize=256)
def _indices(sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """The resample indices scipy.stats.bootstrap draws from a fresh BOOTSTRAP_SEED generator: one
    (BOOTSTRAP_RESAMPLES, n) block per sample, in order. They depend on the sizes alone, so they are drawn
    once per sizes and shared (read-only) by every statistic of a report."""
    rng = _rng()
    out = tuple(rng.integers(0, n, (BOOTSTRAP_RESAMPLES, n)) for n in sizes)
    for i in out:
        i.flags.writeable = False
    return out


def _bootstrap(samples: tuple, statistic, paired: bool = False) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(*samples, axis=-1), exactly as scipy.stats.bootstrap(samples,
    statistic, vectorized=True, paired=paired, method="percentile", rng=default_rng(BOOTSTRAP_SEED)) computes
    it (tests/test_report_stats_unit.py compares them), without its per-call set-up: a 1,000-run report asks
    for some 400 intervals."""
    samples = tuple(np.asarray(x) for x in samples)
    if paired:  # scipy resamples the runs' indices once, for every sample alike
        (i,) = _indices((samples[0].shape[-1],))
        theta = statistic(*(x[i] for x in samples), axis=-1)
    else:
        theta = statistic(*(x[i] for x, i in zip(samples, _indices(tuple(x.shape[-1] for x in samples)))), axis=-1)
    alpha = (1 - CONFIDENCE) / 2
    with warnings.catch_warnings():  # a degenerate resample distribution (all runs equal): the interval is a point
        warnings.simplefilter("ignore")
        lo, hi = stats.quantile(np.asarray(theta, dtype=float), np.array([alpha, 1 - alpha]), axis=-1)
    return float(lo), float(hi)


def lose_missing(x, higher_is_better: bool) -> np.ndarray:
    """NaN (missing) as the worst value: -inf where higher is better, +inf where lower is."""
    x = np.asarray(x, dtype=float)
    return np.where(np.isnan(x), -np.inf if higher_is_better else np.inf, x)


def _codes(a, b, higher_is_better: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """A's and B's values as ranks among all their distinct values (better = larger), missing values
    losing; ±inf are values like any other, so ties stay ties."""
    a, b = lose_missing(a, higher_is_better), lose_missing(b, higher_is_better)
    if not higher_is_better:
        a, b = -a, -b
    u = np.unique(np.concatenate([a.ravel(), b.ravel()]))
    return np.searchsorted(u, a), np.searchsorted(u, b), len(u)


def _p_from_codes(ca: np.ndarray, cb: np.ndarray, k: int) -> np.ndarray:
    """Per row (runs on the last axis): the mean over A's runs of (B's runs below it + half those equal).
    Counted per distinct value in integers (twice the score, so halves stay whole): both runs' counts per row
    by one bincount each, then one row-wise dot product; the sum is exact, so the one division rounds the
    same rational the float score gave (2x faster at 10,000 runs: no n_A gather, no copies)."""
    ca, cb = ca.reshape(-1, ca.shape[-1]), cb.reshape(-1, cb.shape[-1])
    rows = max(len(ca), len(cb))
    off = (k * np.arange(rows))[:, None]  # row r's counts in bins [r k, (r + 1) k)

    def counts(c: np.ndarray) -> np.ndarray:
        return np.bincount((np.broadcast_to(c, (rows, c.shape[1])) + off).ravel(),
                           minlength=rows * k).reshape(rows, k)

    cnt_b = counts(cb)
    twice = 2 * np.cumsum(cnt_b, axis=1) - cnt_b  # 2 x (B's runs below a value + half those equal to it)
    return np.einsum("ij,ij->i", counts(ca), twice) / (2 * ca.shape[1] * cb.shape[1])


def prob_better(a, b, higher_is_better: bool) -> float:
    """P(a random run of A beats a random run of B), ties half (Bouthillier et al. 2021); missing values
    lose. Counted from ranks with bincount (no n_A x n_B table), so a bootstrap's resamples are cheap."""
    if len(a) == 0 or len(b) == 0:
        return math.nan
    return float(_p_from_codes(*_codes(a, b, higher_is_better))[0])


def prob_better_interval(a, b, higher_is_better: bool) -> tuple[float, float, float]:
    """(P(A better), low, high): A's and B's runs resampled independently; NaN interval when n < 2."""
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    ca, cb, k = _codes(a, b, higher_is_better)
    p = float(_p_from_codes(ca, cb, k)[0])
    if len(a) < 2 or len(b) < 2:
        return p, math.nan, math.nan
    lo, hi = _bootstrap((ca, cb), lambda x, y, axis=-1: _p_from_codes(x, y, k))  # resampling runs = their ranks
    return p, lo, hi


def ratio_interval(t, hit) -> tuple[float, float]:
    """Bootstrap interval of sum(t) / sum(hit) over runs resampled in pairs (the ERT's interval); inf
    where too few resamples reached the target."""
    t, hit = np.asarray(t, dtype=float), np.asarray(hit, dtype=float)
    if len(t) < 2 or hit.sum() == 0:
        return math.nan, math.nan

    def ratio(x, h, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(h.sum(axis=axis) > 0, x.sum(axis=axis) / np.maximum(h.sum(axis=axis), 1), np.inf)

    lo, hi = _bootstrap((t, hit), ratio, paired=True)
    return lo, (math.inf if math.isnan(hi) else hi)  # inf - inf in the percentile's interpolation


def ert_ratio_interval(ta, ha, tb, hb) -> tuple[float, float, float]:
    """(ERT_B / ERT_A, low, high): how many times as long B is expected to take as A to reach the target,
    with a percentile bootstrap interval (each configuration's runs resampled independently, as (time,
    reached) pairs; seed BOOTSTRAP_SEED). inf where B never reached it; NaN interval when a side has < 2 runs."""
    ta, ha, tb, hb = (np.asarray(x, dtype=float) for x in (ta, ha, tb, hb))
    if len(ta) == 0 or len(tb) == 0:
        return math.nan, math.nan, math.nan

    def ratio(t1, h1, t2, h2):  # sum(t) / sum(hit) per row, inf where a row reached nothing
        with np.errstate(divide="ignore", invalid="ignore"):
            e1 = np.where(h1.sum(-1) > 0, t1.sum(-1) / np.maximum(h1.sum(-1), 1), np.inf)
            e2 = np.where(h2.sum(-1) > 0, t2.sum(-1) / np.maximum(h2.sum(-1), 1), np.inf)
            return np.where(np.isinf(e1) & np.isinf(e2), np.nan, e2 / e1)

    r = float(ratio(ta, ha, tb, hb))
    if len(ta) < 2 or len(tb) < 2:
        return r, math.nan, math.nan
    rng = _rng()
    ia = rng.integers(0, len(ta), (BOOTSTRAP_RESAMPLES, len(ta)))
    ib = rng.integers(0, len(tb), (BOOTSTRAP_RESAMPLES, len(tb)))
    x = ratio(ta[ia], ha[ia], tb[ib], hb[ib])
    x = x[~np.isnan(x)]  # resamples where neither reached the target say nothing about the ratio
    if len(x) == 0:
        return r, math.nan, math.nan
    alpha = (1 - CONFIDENCE) / 2  # "lower"/"higher": no interpolation, so an infinite bound stays inf, not NaN
    return r, float(np.quantile(x, alpha, method="lower")), float(np.quantile(x, 1 - alpha, method="higher"))
