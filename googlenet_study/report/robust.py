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


def prob_better(a, b, higher_is_better: bool, axis: int = -1):
    """P(a random run of A beats a random run of B), ties half (Bouthillier et al. 2021); missing values
    lose. Computed from ranks (the Mann-Whitney U / (n_A n_B)), so it works on a batch of resamples."""
    a, b = lose_missing(a, higher_is_better), lose_missing(b, higher_is_better)
    if a.shape[axis] == 0 or b.shape[axis] == 0:
        return math.nan
    if not higher_is_better:
        a, b = -a, -b
    na, nb = a.shape[axis], b.shape[axis]
    r = stats.rankdata(np.concatenate([a, b], axis=axis), axis=axis)  # ties: average rank = half a win
    u = np.take(r, np.arange(na), axis=axis).sum(axis=axis) - na * (na + 1) / 2
    return u / (na * nb)


def prob_better_interval(a, b, higher_is_better: bool) -> tuple[float, float, float]:
    """(P(A better), low, high): A's and B's runs resampled independently; NaN interval when n < 2."""
    a, b = lose_missing(a, higher_is_better), lose_missing(b, higher_is_better)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    p = float(prob_better(a, b, higher_is_better))
    if len(a) < 2 or len(b) < 2:
        return p, math.nan, math.nan
    lo, hi = _bootstrap((a, b), lambda x, y, axis=-1: prob_better(x, y, higher_is_better, axis))
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
