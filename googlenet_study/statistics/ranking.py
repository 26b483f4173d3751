"""Report stage 2e: the ranking, an order that a losing configuration cannot change.

Rankable on time: a configuration with at least MIN_RANKED_N timed runs (runs whose seconds count; see
stats.time_excluded). The ranking target P is the highest target that at least half the timed runs of every
*undominated* rankable configuration reached, where one configuration dominates another when its ERT is no
larger on every target and smaller on one (inf: never reached). Then:

1. configurations that reached P (finite ERT to P): by ERT to P, then profile_score, then accuracy;
2. the rest of the rankable ones ("did not reach P", ERT inf): by the IQM of best test accuracy;
3. configurations with fewer than MIN_RANKED_N timed runs: listed, not ranked.
Without a ranking target every configuration with MIN_RANKED_N accuracies is ranked by accuracy (2.).

The invariance (tests/test_report_property.py): adding or removing a configuration that is dominated never
changes the relative order of the others. Each configuration's sort key is its own (ERT, accuracy); the
only shared input is P, and a dominated configuration is never on the front P is chosen from; the
profile_score tie-break divides by the best ERT on each workload, which a dominated configuration never holds.

Every function takes stats.summary's frame (plain DataFrames, no MLflow), so a sweep can rank as it goes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import schema

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
    """The highest target that at least half the timed runs of every undominated configuration with
    >= MIN_RANKED_N timed runs reached; None when there is none (or no such configuration)."""
    timed = summ[n_timed(summ) >= MIN_RANKED_N]
    if timed.empty or not targets:
        return None
    front = timed[undominated(erts(timed, targets))]
    for p in sorted(targets, reverse=True):
        if (front[f"{schema.time_to_target(p)}_reached"].astype(float).fillna(0.0) >= 0.5).all():
            return p
    return None


def _worst_last(x: pd.Series, higher_is_better: bool) -> np.ndarray:
    """A sort key (ascending = better) where a missing value is the worst."""
    v = x.astype(float).to_numpy()
    return np.where(np.isnan(v), math.inf, -v if higher_is_better else v)


def ranking(summ: pd.DataFrame, targets: tuple[float, ...],
            clock: str = "epoch") -> tuple[pd.DataFrame, float | None]:
    """(summ in rank order with `rank` ("1", "=2" for a shared rank, "" when not ranked), `rank_by` (the
    criterion that placed it) and `rank_best_acc`; the ranking target). Within a group a configuration whose
    interval (ERT's, or the accuracy IQM's) overlaps that of the group's first configuration shares its rank."""
    p = ranking_target(summ, targets)
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
        by = np.where(group == 0, f"ERT to {p:g} % ({clock} clock)", f"accuracy: did not reach {p:g} %")
    untimed = (p is not None) & (n_timed(r).to_numpy() < MIN_RANKED_N)
    by = np.where(group == 2, [f"not ranked: {n} {'timed' if t else 'accuracy'} run{'' if n == 1 else 's'} "
                               f"(< {MIN_RANKED_N})" for n, t in zip(np.where(untimed, n_timed(r), n_accuracy(r)),
                                                                      np.broadcast_to(untimed, len(r)))], by)
    profile = _worst_last(r["profile_score"], True) if "profile_score" in r else np.zeros(len(r))
    k2 = np.where(group == 0, profile, 0.0)  # ties in ERT: the profile, then accuracy, then the name
    r = r.assign(rank_by=by, _g=group, _k1=k1, _k2=k2, _k3=acc, _k4=r["configuration"].astype(str), _lo=lo, _hi=hi)
    r = r.sort_values(["_g", "_k1", "_k2", "_k3", "_k4"], kind="stable").reset_index(drop=True)
    r["rank"] = _shared_ranks(r)
    r = r.drop(columns=["_g", "_k1", "_k2", "_k3", "_k4", "_lo", "_hi"])
    return r[["rank", "rank_by", *[c for c in r.columns if c not in ("rank", "rank_by")]]], p


def _shared_ranks(r: pd.DataFrame) -> list[str]:
    """Rank labels in sorted order: positions 1, 2, ... over the ranked groups; a row that overlaps its
    group's leader (the first row since the last change of leader) shares the leader's number."""
    ranks, leader, size = [None] * len(r), None, {}
    for i in range(len(r)):
        if r["_g"].iat[i] == 2:
            continue
        if leader is None or r["_g"].iat[leader] != r["_g"].iat[i] or not _overlap(r.iloc[leader], r.iloc[i]):
            leader = i
        ranks[i] = leader
        size[leader] = size.get(leader, 0) + 1
    return ["" if x is None else ("=" if size[x] > 1 else "") + str(x + 1) for x in ranks]


def _overlap(a: pd.Series, b: pd.Series) -> bool:
    if a["_k1"] == b["_k1"] and a["_k2"] == b["_k2"]:
        return True  # equal keys tie, intervals or not
    if any(math.isnan(float(v)) for v in (a["_lo"], a["_hi"], b["_lo"], b["_hi"])):
        return False  # no interval: only an exact tie shares a rank
    return a["_lo"] <= b["_hi"] and b["_lo"] <= a["_hi"]
