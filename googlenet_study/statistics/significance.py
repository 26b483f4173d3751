"""Tests at the sample sizes studies have (3-10 seeds): the log-rank test by permutation, Welch, Cohen's d,
and Holm's correction.

The log-rank statistic is scipy's: Z = (O_A - E_A) / sqrt(V), O_A the runs of A that reached the target, E_A
their expected number given who was still at risk at each time, V the hypergeometric variance
(survival.logrank_p gives its asymptotic normal p). At 3 runs against 3 that p is about 4x too small (every
run of A before every run of B: 0.0246; exact 0.1), so the p the report prints comes from the permutation
distribution of Z instead: under the null hypothesis (A and B reach the target at the same rate, and are
censored alike) every relabelling of the pooled runs into n_A and n_B is equally likely. Three methods, by
the number of relabellings C(n_A + n_B, n_A):

- `exact`: every relabelling, when there are at most EXACT_MAX (10 vs 10: 184,756, some 0.1 s; Z depends on
  the times only through their order and ties, so the null distribution is cached per pattern and the next
  pair of the same sizes and pattern costs microseconds);
- `monte carlo (N)`: MONTE_CARLO_N relabellings drawn with PERMUTATION_SEED (the same p for the same runs),
  p = (1 + hits) / (N + 1), which keeps the test's size <= alpha (Phipson & Smyth 2010); its Monte Carlo
  standard error is sqrt(p (1 - p) / N), < 0.0022 at p = 0.05;
- `asymptotic`: the normal p, only when both groups have ASYMPTOTIC_MIN_N runs or more.

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
    order = np.lexsort((~hit, t))  # by time; the order within a tie does not change Z
    # Z depends on the times only through their order and ties: each run's tie group stands for its time, and
    # the null distribution is cached per pooled pattern (tie groups, reached) and n_A (_null).
    t, hit = np.unique(t[order], return_inverse=True)[1].astype(float), hit[order]
    in_a = np.zeros(na + nb, dtype=bool)
    in_a[np.argsort(order)[:na]] = True  # A's positions in the sorted pool
    z_obs = _z(t, hit, in_a[None, :])[0]
    if not np.isfinite(z_obs):
        return LogRank(math.nan, method)
    if method == ASYMPTOTIC:
        from scipy import stats
        return LogRank(float(_tail(stats.norm.cdf, z_obs, alternative)), method)
    z, total = _null(tuple(t.astype(int).tolist()), tuple(hit.tolist()), na, method == EXACT)
    hits = _as_extreme(z, z_obs, alternative)
    if method == EXACT:
        return LogRank(hits / total, method)
    p = (1 + hits) / (total + 1)
    return LogRank(p, method, math.sqrt(p * (1 - p) / total))


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


def _as_extreme(z: np.ndarray, z_obs: float, alternative: str) -> int:
    """How many relabellings (z: their statistics, sorted) are at least as extreme as the observed one, in the
    alternative's direction (up to rounding: _TOL)."""
    tol = _TOL * (1 + abs(z_obs))
    if alternative == "less":
        return int(np.searchsorted(z, z_obs + tol, side="right"))
    if alternative == "greater":
        return int(len(z) - np.searchsorted(z, z_obs - tol, side="left"))
    c = abs(z_obs) - tol
    if c <= 0:
        return len(z)
    return int(len(z) - np.searchsorted(z, c, side="left") + np.searchsorted(z, -c, side="right"))


@functools.lru_cache(maxsize=32)
def _null(t: tuple, hit: tuple, na: int, exact: bool) -> tuple[np.ndarray, int]:
    """(the statistic over the relabellings, sorted; how many relabellings): every relabelling, or
    MONTE_CARLO_N drawn from a fresh PERMUTATION_SEED generator. Runs in time order: t their tie groups, hit
    whether each reached the target. Cached: a report's pairs share few patterns (no ties and every run at the
    target is one pattern per n_A, n_B), so a 10 vs 10 test costs its enumeration once (some 50 ms), then
    microseconds; at most 32 patterns (10 vs 10: 1.5 MB each) are kept."""
    t, hit = np.asarray(t, dtype=float), np.asarray(hit, dtype=bool)
    if exact:
        labels = _labellings(len(t), na)
    else:
        base = np.zeros(len(t), dtype=np.float32)
        base[:na] = 1.0
        labels = np.random.default_rng(PERMUTATION_SEED).permuted(np.tile(base, (MONTE_CARLO_N, 1)), axis=1)
    z = _z(t, hit, labels)
    out = np.sort(z[np.isfinite(z)])
    out.flags.writeable = False
    return out, len(z)


def _z(t: np.ndarray, hit: np.ndarray, in_a: np.ndarray) -> np.ndarray:
    """scipy.stats.logrank's statistic for each row of in_a (relabellings x runs, bool, runs sorted by time t):
    (O_A - E_A) / sqrt(V), 0 where V = 0 (then O_A = E_A: nobody of one group was at risk at any event)."""
    times, d = np.unique(t[hit], return_counts=True)          # event times; runs that reached it then
    n = (t[:, None] >= times[None, :]).sum(axis=0).astype(float)  # runs at risk at each event time
    risk = (t[:, None] >= times[None, :]).astype(np.float32)  # (runs, event times): at risk then
    a = in_a if in_a.dtype == np.float32 else in_a.astype(np.float32)
    at_risk_a = (a @ risk).astype(float)                        # (rows, event times), exact small integers
    o = a @ hit.astype(np.float32)
    e = at_risk_a @ (d / n)
    w = np.where(n > 1, d * (n - d) / (n ** 2 * np.maximum(n - 1, 1)), 0.0)
    v = at_risk_a @ (n * w) - (at_risk_a * at_risk_a) @ w      # sum of n_A (n - n_A) w per event time
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (o - e) / np.sqrt(v)
    return np.where(v > 1e-12, z, np.where(np.abs(o - e) > 1e-9, np.nan, 0.0))


def _labellings(n: int, k: int) -> np.ndarray:
    """Every way to pick k of n runs, as a (C(n, k), n) float32 0/1 matrix (a matrix product then counts each
    relabelling's runs at risk); read-only, cached per (n, k): a report asks for the same sizes again and again."""
    return _picks(n, k)[1]


@functools.lru_cache(maxsize=None)
def _picks(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(bool, float32) matrices of _labellings: those with run 0 in A, then those without it (10 of 20: 3.7 MB
    and 15 MB)."""
    if k in (0, n):
        out = np.full((1, n), k == n, dtype=bool)
    else:
        with_first, without = _picks(n - 1, k - 1)[0], _picks(n - 1, k)[0]
        out = np.empty((len(with_first) + len(without), n), dtype=bool)
        out[:len(with_first), 0], out[len(with_first):, 0] = True, False
        out[:len(with_first), 1:], out[len(with_first):, 1:] = with_first, without
    as_float = out.astype(np.float32)
    out.flags.writeable = as_float.flags.writeable = False
    return out, as_float


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
