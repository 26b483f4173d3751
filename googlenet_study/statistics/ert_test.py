"""A permutation test of the ERT ratio: is configuration A's expected running time to a target larger than B's?

ERT (COCO's expected running time, survival.ert) is the seconds all runs spent until each reached the target or
ended, divided by the number that reached it: inf when none did. The statistic is log ERT_A - log ERT_B; under
the null hypothesis the runs of A and B are exchangeable (one distribution of (seconds, reached)), so every
split of the pooled runs into groups of A's and B's sizes is equally likely, and the one-sided p-value is the
fraction of splits whose statistic is at least the observed one (the observed split included).

Exact (every split enumerated) while the splits number at most MAX_EXACT: 3 runs against 3 gives 20 splits,
10 against 10 gives 184,756. Beyond that, DRAWS random splits from a fixed seed (deterministic: the same data
give the same p), p = (1 + splits at least as extreme) / (1 + DRAWS), which is a valid p-value too.

Why not the log-rank test: at 3 runs against 3 its asymptotic p can be 0.0123 where the exact permutation
p is 1/20 = 0.05; and a group whose runs all ended (censored) before the other's times to target gives the
log-rank test nothing to compare, while its ERT is inf against a finite one (docs/sweeps.md, Racing)."""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations

import numpy as np

MAX_EXACT = 20_000   # splits enumerated exactly up to this many (C(n_a + n_b, n_a))
DRAWS = 20_000       # random splits beyond it
SEED = 20_260_101    # of the random splits: a fixed seed, so a decision is reproducible


@lru_cache(maxsize=64)
def _splits(n: int, k: int) -> tuple[np.ndarray, bool]:
    """((splits, n) 0/1 float matrix: which of the n pooled runs go to the first group of k), exact?"""
    if math.comb(n, k) <= MAX_EXACT:
        idx = np.array(list(combinations(range(n), k)), dtype=np.intp).reshape(-1, k)
        exact = True
    else:
        idx = np.argsort(np.random.default_rng(SEED).random((DRAWS, n)), axis=1)[:, :k]
        exact = False
    m = np.zeros((len(idx), n))
    np.put_along_axis(m, idx, 1.0, axis=1)
    m.setflags(write=False)
    return m, exact


def _log_ert(t: np.ndarray, hit: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(t) - np.log(hit)  # hit 0: +inf (ERT inf)


def ert_ratio_p(t_a: np.ndarray, hit_a: np.ndarray, t_b: np.ndarray, hit_b: np.ndarray) -> float:
    """One-sided permutation p-value for "A's ERT is larger than B's" (seconds t, hit 1.0 where the run reached
    the target, else its end); NaN when a group has no runs or no run of either reached the target."""
    t_a, hit_a, t_b, hit_b = (np.asarray(x, dtype=float) for x in (t_a, hit_a, t_b, hit_b))
    if len(t_a) == 0 or len(t_b) == 0 or hit_a.sum() + hit_b.sum() == 0:
        return math.nan
    t, hit = np.r_[t_a, t_b], np.r_[hit_a, hit_b]
    t = np.maximum(t, 1e-12)  # a zero clock would make log ERT -inf
    split, exact = _splits(len(t), len(t_a))
    ta, ha = split @ t, split @ hit
    with np.errstate(invalid="ignore"):
        stat = _log_ert(ta, ha) - _log_ert(t.sum() - ta, hit.sum() - ha)  # +inf: A none, -inf: B none
        observed = _log_ert(t_a.sum(), hit_a.sum()) - _log_ert(t_b.sum(), hit_b.sum())
    tol = 1e-9 * max(1.0, abs(observed)) if np.isfinite(observed) else 0.0  # float sums of equal splits differ
    at_least = stat >= observed - tol
    if exact:
        return float(at_least.mean())
    return float((1 + at_least.sum()) / (1 + len(stat)))
