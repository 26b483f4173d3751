"""Report stage 2e: the ranking, an order that a losing configuration cannot change.

Rankable on time: a configuration with at least MIN_RANKED_N timed runs (runs whose seconds count; see
stats.time_excluded). One configuration dominates another when its ERT is no larger on every target and
smaller on one (inf: never reached); dominance is judged among every configuration with a timed run, one-run
configurations included, across models and datasets. The front is the undominated ones. The ranking
target P is the highest target that at least half the timed runs of every rankable configuration on the
front reached (when no rankable configuration is on the front: of every configuration on the front). Then:

1. configurations that reached P (finite ERT to P): by ERT to P, then tie_scores (the profile score with the
   best ERT over all timed configurations as the denominator, the set dominance is judged on), then accuracy;
2. the rest of the rankable ones ("did not reach P", ERT inf): by the IQM of best test accuracy;
3. configurations with fewer than MIN_RANKED_N timed runs: listed, not ranked.
Without a ranking target every configuration with MIN_RANKED_N accuracies is ranked by accuracy (2.).

Shared ranks: within groups 1. and 2., configurations whose intervals (ERT's, or the accuracy IQM's) are linked
by a chain of overlaps share one rank, the position of the first of them (so a rank is never shared with a
configuration whose interval is clear of every other in its block, and the first ranks alone exactly when no
other interval overlaps its own). Equal keys share a rank, intervals or not.

The invariance (tests/test_report_property.py): adding or removing a configuration that is dominated never
changes the relative order of the others. Each configuration's sort key is its own (ERT, tie score,
accuracy); the only shared inputs are P, which depends on the front alone, and the tie score's best ERT per
target, which a dominated configuration never holds alone (its dominator is no slower on every target).

Every function takes stats.summary's frame (plain DataFrames, no MLflow), so a sweep can rank as it goes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import schema
from .clock import Clock

MIN_RANKED_N = 2   # fewer timed runs than this: listed, not ranked on time (one run is an anecdote)
ACCURACY_KEY = "best_test_acc_iqm"


def ert_column(p: float) -> str:
    return f"{schema.time_to_target(p)}_ert"


def n_timed(summ: pd.DataFrame) -> pd.Series:
    """Runs in the time statistics (n_runs for a frame that predates n_timed)."""
    return summ["n_timed"] if "n_timed" in summ else summ["n_runs"]


def n_accuracy(summ: pd.DataFrame) -> pd.Series:
    """Runs with a best test accuracy (n_runs for a frame without best_test_acc_n)."""
    return summ["best_test_acc_n"] if "best_test_acc_n" in summ else summ["n_runs"]


def erts(summ: pd.DataFrame, targets: tuple[float, ...]) -> np.ndarray:
    """(configurations x targets) ERTs in seconds, inf where never reached (an empty ERT)."""
    if not targets:
        return np.empty((len(summ), 0))
    return np.column_stack([summ[ert_column(p)].astype(float).fillna(math.inf).to_numpy() for p in targets])


def undominated(e: np.ndarray) -> np.ndarray:
    """Per row of e (configurations x targets): True when no other row is <= on every target and < on one."""
    le = (e[None, :, :] <= e[:, None, :]).all(axis=2)  # le[i, j]: j is no worse than i everywhere
    lt = (e[None, :, :] < e[:, None, :]).any(axis=2)
    return ~(le & lt).any(axis=1)


def ranking_target(summ: pd.DataFrame, targets: tuple[float, ...]) -> float | None:
    """The highest target that at least half the timed runs of every rankable (>= MIN_RANKED_N timed runs)
    configuration on the front reached, the front being the undominated among all configurations with a timed
    run (when none on it is rankable: of every one on the front); None when there is none."""
    timed = summ[n_timed(summ) >= 1]
    if timed.empty or not targets:
        return None
    front = timed[undominated(erts(timed, targets))]
    rankable = front[n_timed(front) >= MIN_RANKED_N]
    consulted = rankable if len(rankable) else front
    for p in sorted(targets, reverse=True):
        if (consulted[f"{schema.time_to_target(p)}_reached"].astype(float).fillna(0.0) >= 0.5).all():
            return p
    return None


def tie_scores(summ: pd.DataFrame, targets: tuple[float, ...]) -> np.ndarray:
    """The ERT tie-break per row: the mean over targets of max(0, 4 - r) / 3 (profiles.profile_scores's
    formula), r = ERT / the best ERT of any configuration with a timed run (across models: the same set as
    dominance, so a dominated configuration never sets it); NaN without a timed run."""
    e = erts(summ, targets)
    timed = n_timed(summ).to_numpy() >= 1
    if not targets or not timed.any():
        return np.full(len(summ), math.nan)
    best = e[timed].min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(np.isfinite(e) & np.isfinite(best), e / best, math.inf)
    score = (np.clip(4.0 - r, 0.0, 3.0) / 3.0).mean(axis=1)
    return np.where(timed, score, math.nan)


def _worst_last(x: pd.Series, higher_is_better: bool) -> np.ndarray:
    """A sort key (ascending = better) where a missing value is the worst."""
    v = x.astype(float).to_numpy()
    return np.where(np.isnan(v), math.inf, -v if higher_is_better else v)


def ranking(summ: pd.DataFrame, targets: tuple[float, ...], clock: Clock,
            target: float | None = None) -> tuple[pd.DataFrame, float | None]:
    """(summ in rank order with `rank` ("1", "=2" for a shared rank, "" when not ranked), `rank_by` (the
    criterion that placed it) and `rank_best_acc`; the ranking target). Within a group, configurations whose
    intervals (ERT's, or the accuracy IQM's) are linked by a chain of overlaps share a rank. `target`: rank
    at this target instead of ranking_target's (the verdict's look at a higher one)."""
    p = ranking_target(summ, targets) if target is None else target
    r = summ.reset_index(drop=True).copy()
    r["rank_best_acc"] = pd.Series(_worst_last(r["best_test_acc_mean"], True)).rank(method="min").astype(int)
    acc = _worst_last(r[ACCURACY_KEY], True)
    acc_lo, acc_hi = r[f"{ACCURACY_KEY}_ci_low"].to_numpy(float), r[f"{ACCURACY_KEY}_ci_high"].to_numpy(float)
    if p is None:
        group = np.where(n_accuracy(r).to_numpy() >= MIN_RANKED_N, 1, 2)
        k1, lo, hi = acc, acc_lo, acc_hi
        by = np.where(group == 1, "accuracy: no target reached", "")
    else:
        k = ert_column(p)
        ert = r[k].astype(float).fillna(math.inf).to_numpy()
        timed = n_timed(r).to_numpy() >= MIN_RANKED_N
        group = np.where(~timed, 2, np.where(np.isfinite(ert), 0, 1))
        k1 = np.where(group == 0, ert, acc)
        lo = np.where(group == 0, r[f"{k}_ci_low"].to_numpy(float), acc_lo)
        hi = np.where(group == 0, r[f"{k}_ci_high"].astype(float).fillna(math.inf).to_numpy(), acc_hi)
        by = np.where(group == 0, f"ERT to {p:g} % ({clock.label})", f"accuracy: did not reach {p:g} %")
    untimed = (p is not None) & (n_timed(r).to_numpy() < MIN_RANKED_N)
    by = np.where(group == 2, [f"not ranked: {n} {'timed' if t else 'accuracy'} run{'' if n == 1 else 's'} "
                               f"(< {MIN_RANKED_N})" for n, t in zip(np.where(untimed, n_timed(r), n_accuracy(r)),
                                                                      np.broadcast_to(untimed, len(r)))], by)
    k2 = np.where(group == 0, _worst_last(pd.Series(tie_scores(r, targets)), True), 0.0)  # ties in ERT: the
    # tie score, then accuracy, then the name
    r = r.assign(rank_by=by, _g=group, _k1=k1, _k2=k2, _k3=acc, _k4=r["configuration"].astype(str), _lo=lo, _hi=hi)
    r = r.sort_values(["_g", "_k1", "_k2", "_k3", "_k4"], kind="stable").reset_index(drop=True)
    r["rank"] = _shared_ranks(r)
    r = r.drop(columns=["_g", "_k1", "_k2", "_k3", "_k4", "_lo", "_hi"])
    return r[["rank", "rank_by", *[c for c in r.columns if c not in ("rank", "rank_by")]]], p


def _shared_ranks(r: pd.DataFrame) -> list[str]:
    """Rank labels in sorted order: positions 1, 2, ... over the ranked groups (0 and 1); within a group,
    rows linked by a chain of overlapping intervals (or equal keys) form one block, made contiguous (a block
    spans from its first row to its last), and share the number of the block's first row."""
    g = r["_g"].to_numpy()
    labels = [""] * len(r)
    for group in (0, 1):
        idx = np.flatnonzero(g == group)
        if not len(idx):
            continue
        linked = _overlaps(*(r[c].to_numpy(float)[idx] for c in ("_k1", "_k2", "_lo", "_hi")))
        reach = _chain_ends(linked)
        start, end = 0, -1
        for j in range(len(idx)):
            if j > end:
                start = j
            end = max(end, reach[j])
            labels[idx[j]] = start
        sizes = pd.Series([labels[i] for i in idx]).value_counts()
        for i in idx:
            labels[i] = ("=" if sizes[labels[i]] > 1 else "") + str(idx[labels[i]] + 1)
    return labels


def _overlaps(k1: np.ndarray, k2: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(n x n) True where two rows tie on their keys or their intervals overlap (a NaN edge: no interval)."""
    tie = (k1[:, None] == k1[None, :]) & (k2[:, None] == k2[None, :])
    with np.errstate(invalid="ignore"):
        cross = (lo[:, None] <= hi[None, :]) & (lo[None, :] <= hi[:, None])  # NaN compares False
    return tie | cross


def _chain_ends(linked: np.ndarray) -> np.ndarray:
    """Per row, the last row of its connected component in the graph `linked` (rows in sorted order)."""
    n = len(linked)
    comp = np.full(n, -1)
    for i in range(n):
        if comp[i] >= 0:
            continue
        stack, comp[i] = [i], i
        while stack:
            j = stack.pop()
            for k in np.flatnonzero(linked[j] & (comp < 0)):
                comp[k] = i
                stack.append(k)
    last = pd.Series(np.arange(n)).groupby(comp).transform("max").to_numpy()
    return last
