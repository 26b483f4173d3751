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


def _draw(sizes: tuple[int, ...]) -> list[np.ndarray]:
    """The resample indices scipy.stats.bootstrap draws from a fresh BOOTSTRAP_SEED generator: one
    (BOOTSTRAP_RESAMPLES, n) block per sample, in order."""
    rng = _rng()
    return [rng.integers(0, n, (BOOTSTRAP_RESAMPLES, n)) for n in sizes]


@functools.lru_cache(maxsize=256)
def _indices(sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """_draw(sizes), drawn once per sizes and shared (read-only) by every statistic of a report: they depend
    on the sizes alone."""
    out = tuple(_draw(sizes))
    for i in out:
        i.flags.writeable = False
    return out


@functools.lru_cache(maxsize=32)  # a report has few distinct pairs of sizes (3 at 10,000 runs); ~9 MB each there
def _draw_counts(sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """How many times each run is drawn in each resample of _draw(sizes): one (n, BOOTSTRAP_RESAMPLES) int32
    block per sample (runs on axis 0: a statistic reads whole rows, one per run), read-only like _indices."""
    out = []
    for i, n in zip(_draw(sizes), sizes):
        r = np.arange(BOOTSTRAP_RESAMPLES)[:, None]  # resample r's count of run j lands in bin j R + r
        c = np.bincount((i * BOOTSTRAP_RESAMPLES + r).ravel(), minlength=n * BOOTSTRAP_RESAMPLES)
        c = c.reshape(n, BOOTSTRAP_RESAMPLES).astype(np.int32)
        c.flags.writeable = False
        out.append(c)
    return tuple(out)


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
    return _percentile(theta)


def _percentile(theta) -> tuple[float, float]:
    """The percentile interval of the resamples' statistic, as scipy.stats.bootstrap reads it."""
    alpha = (1 - CONFIDENCE) / 2
    with warnings.catch_warnings():  # a degenerate resample distribution (all runs equal): the interval is a point
        warnings.simplefilter("ignore")
        lo, hi = stats.quantile(np.asarray(theta, dtype=float), np.array([alpha, 1 - alpha]), axis=-1)
    return float(lo), float(hi)


def lose_missing(x, higher_is_better: bool) -> np.ndarray:
    """NaN (missing) as the worst value: -inf where higher is better, +inf where lower is."""
    x = np.asarray(x, dtype=float)
    return np.where(np.isnan(x), -np.inf if higher_is_better else np.inf, x)


def _oriented(x, higher_is_better: bool) -> np.ndarray:
    """x as values where larger is better, missing values losing; ±inf are values like any other, so ties
    stay ties."""
    x = lose_missing(x, higher_is_better)
    return x if higher_is_better else -x


# Pairs of runs (n_A n_B) below which _p_drawn counts in int32: every count, and their sum, is at most 2 n_A n_B.
INT32_PAIRS = 2**30


def _p_drawn(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """P(A better) per resample, given how many times each run is drawn in it (wa: (n_A, R), wb: (n_B, R)):
    over A's draws, the mean of (B's draws below it + half those equal). Counted in integers, twice the score
    so halves stay whole: sum over A's runs of their draws x (B's draws below + B's draws not above); the sum
    is exact, so the one division rounds the same rational as counting the resampled runs themselves
    (tests/test_report_stats_unit.py checks it against scipy.stats.bootstrap). Every step is a row gather or
    a row add over R resamples: at 10,000 runs, 4x faster than a bincount of the 2,000 x n resampled runs."""
    dtype = np.int32 if len(a) * len(b) < INT32_PAIRS else np.int64  # int32: half the memory traffic
    order = np.argsort(b, kind="stable")
    wb, sb = wb[order], b[order]
    below = np.zeros((len(b) + 1, wb.shape[1]), dtype=dtype)  # below[j]: draws of B's j smallest runs
    for j in range(len(b)):  # one row add per run: 4x numpy's cumsum along axis 0 (measured)
        np.add(below[j], wb[j], out=below[j + 1])
    twice = below[np.searchsorted(sb, a, "left")]
    twice += below[np.searchsorted(sb, a, "right")]
    return np.einsum("ir,ir->r", wa, twice) / (2 * len(a) * len(b))


def prob_better(a, b, higher_is_better: bool) -> float:
    """P(a random run of A beats a random run of B), ties half (Bouthillier et al. 2021); missing values
    lose. Counted in integers from B's runs in order, as _p_drawn counts a resample where each run is drawn
    once (no n_A x n_B table)."""
    if len(a) == 0 or len(b) == 0:
        return math.nan
    a, b = _oriented(a, higher_is_better), np.sort(_oriented(b, higher_is_better))
    twice = np.searchsorted(b, a, "left").sum() + np.searchsorted(b, a, "right").sum()
    return float(twice / (2 * len(a) * len(b)))


def prob_better_interval(a, b, higher_is_better: bool) -> tuple[float, float, float]:
    """(P(A better), low, high): A's and B's runs resampled independently (scipy.stats.bootstrap's resamples,
    as _bootstrap's); NaN interval when n < 2."""
    p = prob_better(a, b, higher_is_better)
    if len(a) < 2 or len(b) < 2:
        return p, math.nan, math.nan
    a, b = _oriented(a, higher_is_better), _oriented(b, higher_is_better)
    lo, hi = _percentile(_p_drawn(a, b, *_draw_counts((len(a), len(b)))))
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
