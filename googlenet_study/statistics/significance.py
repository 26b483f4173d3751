"""Tests at the sample sizes studies have (3-10 seeds): the log-rank test by permutation, Welch, Cohen's d,
and Holm's correction.

The log-rank test compares O_A, the runs of A that reached the target, with E_A, their expected number given
who was still at risk at each time. scipy's statistic is Z = (O_A - E_A) / sqrt(V), V the hypergeometric
variance, and its p the normal tail (survival.logrank_p). At 3 runs against 3 that p is about 4x too small
(every run of A before every run of B: 0.0246; exact 0.1), so the p the report prints comes from the
permutation distribution instead: under the null hypothesis (A and B reach the target at the same rate, and
are censored alike) every relabelling of the pooled runs into n_A and n_B is equally likely. The permuted
statistic is U = O_A - E_A = the sum over A's runs of their log-rank scores (reached 0/1 minus the
Nelson-Aalen cumulative rate at their time), as coin's exact logrank_test (Hothorn et al. 2006): its
permutation variance is the same for every relabelling, so U orders relabellings as the standardised
statistic does, and a relabelling costs one sum. Three methods, by the number of relabellings C(n_A + n_B, n_A):

- `exact`: every relabelling, when there are at most EXACT_MAX (10 vs 10: 184,756, counted by meeting in
  the middle in about a millisecond: _exact_count);
- `monte carlo (N)`: MONTE_CARLO_N relabellings drawn with PERMUTATION_SEED (the same p for the same runs),
  p = (1 + hits) / (N + 1), which keeps the test's size <= alpha (Phipson & Smyth 2010); its Monte Carlo
  standard error is sqrt(p (1 - p) / N), < 0.0022 at p = 0.05;
- `asymptotic`: scipy's normal p of Z, only when both groups have ASYMPTOTIC_MIN_N runs or more.

Permuting labels assumes exchangeable runs: where A's clock ends much earlier than B's (censoring unlike),
the permutation p is no longer exact; benchmarks/coverage.py measures the size in that case too
(docs/reports.md)."""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

EXACT_MAX = 200_000        # relabellings enumerated at most (10 vs 10 = 184,756); beyond: Monte Carlo
MONTE_CARLO_N = 10_000     # relabellings drawn beyond EXACT_MAX: standard error < 0.0022 at p = 0.05
PERMUTATION_SEED = 0       # the Monte Carlo's generator seed, fresh for every test (stated in the report)
ASYMPTOTIC_MIN_N = 30      # runs in each group for the normal approximation
EXACT, ASYMPTOTIC = "exact", "asymptotic"
ALTERNATIVES = ("two-sided", "less", "greater")  # less: A reaches the target later than B (A's rate lower)
_TOL = 1e-9                # relative: relabellings as extreme as the observed one, up to rounding


def monte_carlo(n: int) -> str:
    """logrank_method's text for a Monte Carlo over n relabellings."""
    return f"monte carlo ({n})"


@dataclass(frozen=True)
class LogRank:
    """A log-rank test's result: p (NaN: undefined), the method that gave it and its Monte Carlo standard
    error (0 for exact and asymptotic)."""
    p: float
    method: str
    se: float = 0.0


def logrank(ta, ha, tb, hb, alternative: str = "two-sided", method: str | None = None) -> LogRank:
    """The log-rank test of A = (times, reached) against B on time to target (censored data): exact,
    Monte Carlo or asymptotic by the groups' sizes (module docstring; `method` forces one, for
    benchmarks/coverage.py). NaN p where it is undefined (a group without timed runs, no run reached the
    target, or no time when both groups were at risk and one reached it)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative: {alternative!r}; allowed: {', '.join(ALTERNATIVES)}")
    ta, ha, tb, hb = (np.asarray(x, dtype=float) for x in (ta, ha, tb, hb))
    na, nb = len(ta), len(tb)
    method = method or method_for(na, nb)
    if method not in (EXACT, ASYMPTOTIC, monte_carlo(MONTE_CARLO_N)):
        raise ValueError(f"method: {method!r}; allowed: {EXACT}, {monte_carlo(MONTE_CARLO_N)}, {ASYMPTOTIC}")
    if na == 0 or nb == 0 or ha.sum() + hb.sum() == 0:
        return LogRank(math.nan, method)
    t, hit = np.concatenate([ta, tb]), np.concatenate([ha, hb]) > 0
    in_a = np.arange(na + nb) < na
    z_obs = _z(t, hit, in_a)  # scipy's statistic: the asymptotic p, and NaN where V = 0 (undefined)
    if not np.isfinite(z_obs):
        return LogRank(math.nan, method)
    if method == ASYMPTOTIC:
        from scipy import stats
        return LogRank(float(_tail(stats.norm.cdf, z_obs, alternative)), method)
    score = scores(t, hit)
    u_obs = float(score[:na].sum())
    if method == EXACT:
        return LogRank(_exact_count(score, na, u_obs, alternative) / math.comb(na + nb, na), method)
    draws = np.random.default_rng(PERMUTATION_SEED).random((MONTE_CARLO_N, na + nb))
    u = score[np.argpartition(draws, na - 1, axis=1)[:, :na]].sum(axis=1)  # n_A random runs per row
    p = (1 + _as_extreme(u, u_obs, alternative)) / (MONTE_CARLO_N + 1)
    return LogRank(p, method, math.sqrt(p * (1 - p) / MONTE_CARLO_N))


def scores(t: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Each run's log-rank score: 1 if it reached the target, minus the Nelson-Aalen cumulative rate at its time
    (the sum of reached / at risk over the times <= its own; ties: every run at a time is at risk then). The
    scores sum to 0, and O_A - E_A is the sum of A's."""
    times, d = np.unique(t[hit], return_counts=True)
    n = (t[:, None] >= times[None, :]).sum(axis=0)            # at risk at each time a run reached the target
    rate = np.concatenate([[0.0], np.cumsum(d / n)])
    return hit.astype(float) - rate[np.searchsorted(times, t, side="right")]


def how(r: LogRank) -> str:
    """The words after a p that say how it was computed: nothing when exact, " (asymptotic)", or
    " (Monte Carlo, 10,000 relabellings, ± its standard error)"."""
    if r.method == EXACT:
        return ""
    if r.method == ASYMPTOTIC:
        return f" ({ASYMPTOTIC})"
    return f" (Monte Carlo, {MONTE_CARLO_N:,} relabellings, ± {r.se:.3f})"


def method_for(na: int, nb: int) -> str:
    """Which log-rank p a comparison of na against nb runs gets: EXACT, monte_carlo(N) or ASYMPTOTIC."""
    if min(na, nb) >= ASYMPTOTIC_MIN_N:
        return ASYMPTOTIC
    return EXACT if math.comb(na + nb, na) <= EXACT_MAX else monte_carlo(MONTE_CARLO_N)


def _tail(cdf, z: float, alternative: str) -> float:
    if alternative == "less":
        return cdf(z)
    if alternative == "greater":
        return cdf(-z)
    return min(1.0, 2 * cdf(-abs(z)))


def _as_extreme(u: np.ndarray, u_obs: float, alternative: str) -> int:
    """How many relabellings (u: their statistics) are at least as extreme as the observed one, in the
    alternative's direction (up to rounding: _TOL). E[U] = 0 over the relabellings, so two-sided is |U|."""
    tol = _TOL * (1 + abs(u_obs))
    if alternative == "less":
        return int(np.count_nonzero(u <= u_obs + tol))
    if alternative == "greater":
        return int(np.count_nonzero(u >= u_obs - tol))
    return int(np.count_nonzero(np.abs(u) >= abs(u_obs) - tol))


def _z(t: np.ndarray, hit: np.ndarray, in_a: np.ndarray) -> float:
    """scipy.stats.logrank's statistic (O_A - E_A) / sqrt(V) for the runs (times t, hit: reached) with A where
    in_a; NaN where V = 0 (no time at which both groups were at risk and a run reached the target)."""
    times, d = np.unique(t[hit], return_counts=True)          # event times; runs that reached it then
    risk = t[:, None] >= times[None, :]                       # (runs, event times): at risk then
    n, n_a = risk.sum(axis=0).astype(float), risk[in_a].sum(axis=0).astype(float)
    o, e = float(np.sum(hit & in_a)), float(np.sum(n_a * d / n))
    v = float(np.sum(np.where(n > 1, n_a * (n - n_a) * d * (n - d) / (n ** 2 * np.maximum(n - 1, 1)), 0.0)))
    return (o - e) / math.sqrt(v) if v > 1e-12 else math.nan


def _exact_count(score: np.ndarray, k: int, u_obs: float, alternative: str) -> int:
    """How many of the C(n, k) ways to pick A's k runs give a U (the sum of their scores) at least as extreme as
    u_obs. Up to 2 x HALF_MAX runs by meeting in the middle: the sums of every subset of each half, by size, then
    for each left sum the right sums that complete it, counted by binary search (10 vs 10: 2 x 1,024 sums, not
    184,756); beyond, every pick (few: C(n, k) <= EXACT_MAX with n > 32 means a small k)."""
    n = len(score)
    if n > 2 * HALF_MAX:
        return _as_extreme(score[_picks(n, k)].sum(axis=1), u_obs, alternative)
    h = n // 2
    (left, left_size), (right, right_size) = _subset_sums(score[:h]), _subset_sums(score[h:])
    tol = _TOL * (1 + abs(u_obs))
    total = 0
    for j in range(max(0, k - (n - h)), min(k, h) + 1):
        ell, r = left[left_size == j], np.sort(right[right_size == k - j])
        if alternative == "less":      # ell + r <= u_obs
            total += int(np.searchsorted(r, u_obs + tol - ell, side="right").sum())
        elif alternative == "greater":  # ell + r >= u_obs
            total += int((len(r) - np.searchsorted(r, u_obs - tol - ell, side="left")).sum())
        elif abs(u_obs) - tol <= 0:    # |U| >= 0: every pick
            total += len(ell) * len(r)
        else:                          # ell + r >= |u_obs| or ell + r <= -|u_obs|
            c = abs(u_obs) - tol
            total += int((len(r) - np.searchsorted(r, c - ell, side="left")).sum()
                         + np.searchsorted(r, -c - ell, side="right").sum())
    return total


HALF_MAX = 16  # runs per half when meeting in the middle: 2**16 subset sums


def _subset_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum, size) of every subset of x (2**len(x) of them)."""
    bits = _bits(len(x))
    return bits @ x, bits.sum(axis=1)


@functools.lru_cache(maxsize=None)
def _bits(m: int) -> np.ndarray:
    """Every subset of m items as a (2**m, m) 0/1 matrix, read-only."""
    out = ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1).astype(float)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=None)
def _picks(n: int, k: int) -> np.ndarray:
    """Every way to pick k of n runs, as a (C(n, k), k) matrix of run indices, read-only: those with run 0,
    then those without it. Cached per (n, k): a report asks for the same sizes again and again (10 of 20:
    3.7 MB)."""
    if k == 0:
        out = np.zeros((1, 0), dtype=np.uint16)
    elif k == n:
        out = np.arange(n, dtype=np.uint16)[None, :]
    else:
        with_first, without = _picks(n - 1, k - 1), _picks(n - 1, k)
        out = np.empty((len(with_first) + len(without), k), dtype=np.uint16)
        out[:len(with_first), 0] = 0
        out[:len(with_first), 1:] = with_first + 1
        out[len(with_first):] = without + 1
    out.flags.writeable = False
    return out


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (Holm 1979): the i-th smallest of m is max over j <= i of min(1, (m-j+1) p_(j));
    reject where adjusted <= alpha. NaN (no test) stays NaN and does not count in m."""
    p = np.asarray(p, dtype=float)
    out = np.full(len(p), math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[k]))
        out[k] = running
    return out


def cohens_d(a, b) -> float:
    """(mean A - mean B) / pooled standard deviation; NaN with fewer than 2 values a side or no spread."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else math.nan


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p (unequal variances); NaN with fewer than 2 values a side or no spread at all."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return math.nan
    with warnings.catch_warnings():  # near-identical samples: scipy warns about precision, the p is still usable
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
