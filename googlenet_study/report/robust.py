"""Report stage 2c: small-sample statistics (Agarwal et al. 2021, "Deep RL at the edge of the statistical
precipice"; Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks").

The interquartile mean (IQM: the mean of the middle 50 % of runs, scipy's trim_mean(x, 0.25), as rliable
computes it) with a percentile bootstrap 95 % interval, and P(A better than B) (the Mann-Whitney
probability) with a two-sample bootstrap interval. Every bootstrap starts from a fresh generator seeded
with BOOTSTRAP_SEED, so a report is the same byte for byte from the same runs, whatever else it computes."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

BOOTSTRAP_SEED = 0          # stated in the report
BOOTSTRAP_RESAMPLES = 2000  # enough for a 95 % percentile interval; 1,000 runs stay under a minute
CONFIDENCE = 0.95


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


def _bootstrap(samples: tuple, statistic, paired: bool = False) -> tuple[float, float]:
    with warnings.catch_warnings():  # a degenerate resample distribution (all runs equal) warns; the interval is a point
        warnings.simplefilter("ignore")
        r = stats.bootstrap(samples, statistic, n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True, paired=paired,
                            confidence_level=CONFIDENCE, method="percentile", rng=_rng())
    return float(r.confidence_interval.low), float(r.confidence_interval.high)


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
    """Per row (runs on the last axis): the mean over A's runs of (B's runs below it + half those equal)."""
    ca, cb = ca.reshape(-1, ca.shape[-1]).astype(np.intp), cb.reshape(-1, cb.shape[-1]).astype(np.intp)
    rows = max(len(ca), len(cb))
    ca, cb = np.broadcast_to(ca, (rows, ca.shape[1])), np.broadcast_to(cb, (rows, cb.shape[1]))
    counts = np.bincount((cb + k * np.arange(rows)[:, None]).ravel(), minlength=rows * k).reshape(rows, k)
    score = np.cumsum(counts, axis=1) - 0.5 * counts
    return np.take_along_axis(score, ca, axis=1).sum(axis=1) / (ca.shape[1] * cb.shape[1])


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
