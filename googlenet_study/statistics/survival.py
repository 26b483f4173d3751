"""Report stage 2b: time to target as censored data (survival analysis, as COCO and AlgoPerf treat it).

A run either reaches target P at its time_to_test_acc_P, or it is right-censored at the end of its clock
(it ran that long without reaching P). Unreached runs are never dropped: the Kaplan-Meier median, the
expected running time (ERT) and the log-rank test all use them. Kaplan-Meier and log-rank are scipy's
(`scipy.stats.ecdf` on `CensoredData`, `scipy.stats.logrank`), not hand-rolled."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .robust import CONFIDENCE
KM_CI_METHOD = "log-log"  # Greenwood variance on log(-log S): Kalbfleisch & Prentice; lifelines' default too


def observed(times, reached, ends) -> tuple[np.ndarray, np.ndarray]:
    """(seconds each timed run spent until it reached the target or ended, 1.0 where it reached it);
    runs whose end is NaN (left out of time statistics) are dropped."""
    times, reached, ends = (np.asarray(x, dtype=float) for x in (times, reached, ends))
    ok = np.isfinite(ends)
    hit = reached[ok] > 0
    return np.where(hit, times[ok], ends[ok]), hit.astype(float)


def _data(t: np.ndarray, hit: np.ndarray) -> stats.CensoredData:
    return stats.CensoredData(uncensored=t[hit > 0], right=t[hit == 0])


def km_median(t: np.ndarray, hit: np.ndarray) -> tuple[float, float, float]:
    """(median, low, high): the Kaplan-Meier median time to target (the first time the estimated fraction
    still short of the target is <= 1/2) and its 95 % interval (where the pointwise log-log band crosses
    1/2). NaN when fewer than half the runs reached the target; no interval for one run; high is NaN when
    the band's upper edge never comes down to 1/2 (the interval is unbounded above)."""
    if len(t) == 0 or hit.sum() < len(t) / 2:
        return math.nan, math.nan, math.nan
    q, s, low, high = _km(t, hit)
    if len(t) < 2:  # one run: a median, no interval
        return _first_at_most_half(q, s), math.nan, math.nan
    return _first_at_most_half(q, s), _first_at_most_half(q, low), _first_at_most_half(q, high)


def _km(t: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(times, S, band low, band high) of the Kaplan-Meier fraction not yet at the target. Where S = 0 (every
    run still at risk has reached it) log(-log S) is undefined and scipy's band is NaN: it is 0 there."""
    res = stats.ecdf(_data(t, hit))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = res.sf.confidence_interval(CONFIDENCE, method=KM_CI_METHOD)
    s = res.sf.probabilities
    return (res.sf.quantiles, s, np.where(s == 0, 0.0, ci.low.probabilities),
            np.where(s == 0, 0.0, ci.high.probabilities))


def km_reached(t: np.ndarray, hit: np.ndarray) -> pd.DataFrame:
    """[t, reached, low, high]: the Kaplan-Meier fraction of runs that have reached the target by t seconds
    (1 - S(t), a step function starting at t = 0 with 0) and its pointwise 95 % log-log interval."""
    if hit.sum() == 0:
        return pd.DataFrame({"t": [0.0, float(t.max()) if len(t) else 0.0], "reached": 0.0, "low": 0.0,
                             "high": math.nan})
    q, s, low, high = _km(t, hit)
    return pd.DataFrame({"t": np.r_[0.0, q], "reached": np.r_[0.0, 1 - s], "low": np.r_[0.0, 1 - high],
                         "high": np.r_[0.0, 1 - low]})


def _first_at_most_half(q: np.ndarray, s: np.ndarray) -> float:
    i = np.flatnonzero(np.nan_to_num(s, nan=1.0) <= 0.5)  # a NaN band (nobody left at risk) is not a crossing
    return float(q[i[0]]) if len(i) else math.nan


def ert(t: np.ndarray, hit: np.ndarray) -> float:
    """Expected running time (COCO; Hansen et al. 2016): seconds spent by all runs until each reached the
    target or ended, divided by the number of runs that reached it; inf when none did, NaN with no runs."""
    if len(t) == 0:
        return math.nan
    return float(t.sum() / hit.sum()) if hit.sum() else math.inf


def logrank_p(ta: np.ndarray, ha: np.ndarray, tb: np.ndarray, hb: np.ndarray) -> float:
    """Two-sided log-rank p-value that A and B reach the target at the same rate; NaN when undefined
    (a group without timed runs, or no run of either reached the target)."""
    if len(ta) == 0 or len(tb) == 0 or ha.sum() + hb.sum() == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.logrank(_data(ta, ha), _data(tb, hb)).pvalue
    return float(p) if np.isfinite(p) else math.nan
