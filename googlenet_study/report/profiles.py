"""Report stage 2d: performance profiles (Dolan & More 2002; the scoring of MLCommons AlgoPerf, Dahl et al.
2023) and the ranking.

A workload is (model, dataset, target). On each, a configuration's ratio r = its ERT / the best ERT any
configuration reached on that workload (inf when it never reached the target). rho(tau) is the fraction of
its workloads with r <= tau: rho(1) is how often it was the fastest, rho(4) how often within 4x of the
fastest. profile_score = the integral of rho over [1, 4], divided by 3 (1 = fastest everywhere, 0 = never
within 4x)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import schema

TAU_MAX = 4.0      # AlgoPerf integrates the profile up to 4x the best time
MIN_RANKED_N = 2   # fewer runs than this: listed, not ranked (one run is an anecdote)
WORKLOAD_PARAMS = ("model", "dataset")


def ert_column(p: float) -> str:
    return f"{schema.time_to_target(p)}_ert"


def ratios(summ: pd.DataFrame, targets: tuple[float, ...]) -> pd.DataFrame:
    """configuration, model, dataset, target, ert, r: one row per configuration and workload. A missing ERT
    (never reached, or no timed run) is inf."""
    keys = [c for c in WORKLOAD_PARAMS if c in summ]
    rows = []
    for p in targets:
        d = summ[["configuration", *keys]].copy()
        d["target"] = p
        d["ert"] = summ[ert_column(p)].astype(float).fillna(math.inf).to_numpy()
        rows.append(d)
    d = pd.concat(rows, ignore_index=True)
    group = keys + ["target"]
    best = d.groupby([d[k].astype(str) for k in group])["ert"].transform("min") if group else d["ert"].min()
    with np.errstate(invalid="ignore", divide="ignore"):
        d["r"] = np.where(np.isfinite(d["ert"]) & np.isfinite(best), d["ert"] / best, math.inf)
    return d


def performance_profile(summ: pd.DataFrame, targets: tuple[float, ...], taus=None) -> pd.DataFrame:
    """[configuration, tau, rho] for drawing the profile: rho(tau) = the fraction of the configuration's
    workloads (model, dataset, target) on which its ERT is within tau times the best ERT there. `taus`
    defaults to 301 points on [1, 4] plus every ratio in that range (where rho steps up). `summ` is
    stats.summary's frame (it needs configuration and time_to_test_acc_P_ert; model and dataset if present)."""
    d = ratios(summ, targets)
    if taus is None:
        r = d["r"].to_numpy()
        taus = np.union1d(np.linspace(1.0, TAU_MAX, 301), r[(r >= 1) & (r <= TAU_MAX)])
    taus = np.asarray(taus, dtype=float)
    out = []
    for cfg, g in d.groupby("configuration", observed=True, sort=False):
        r = g["r"].to_numpy()
        rho = (r[None, :] <= taus[:, None]).mean(axis=1)
        out.append(pd.DataFrame({"configuration": cfg, "tau": taus, "rho": rho}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["configuration", "tau", "rho"])


def profile_scores(summ: pd.DataFrame, targets: tuple[float, ...]) -> pd.Series:
    """profile_score per row of `summ`: the mean over workloads of max(0, 4 - r) / 3, which is exactly
    the integral of the step function rho over [1, 4] divided by 3 (r >= 1, and r = inf scores 0)."""
    d = ratios(summ, targets)
    d["part"] = np.clip(TAU_MAX - d["r"].to_numpy(), 0.0, TAU_MAX - 1.0) / (TAU_MAX - 1.0)
    score = d.groupby("configuration", observed=True, sort=False)["part"].mean()
    return summ["configuration"].map(score).astype(float)


def ranking_target(summ: pd.DataFrame, targets: tuple[float, ...]) -> float | None:
    """The highest target that at least half the timed runs of every ranked configuration reached."""
    ranked = summ[summ["n_runs"] >= MIN_RANKED_N]
    if ranked.empty:
        return None
    for p in sorted(targets, reverse=True):
        if (ranked[f"{schema.time_to_target(p)}_reached"].fillna(0.0) >= 0.5).all():
            return p
    return None


def _loses(x: pd.Series, higher_is_better: bool) -> np.ndarray:
    """A sort key (ascending = better) where a missing value is the worst."""
    v = x.astype(float).to_numpy()
    return np.where(np.isnan(v), math.inf, -v if higher_is_better else v)


def ranking(summ: pd.DataFrame, targets: tuple[float, ...]) -> tuple[pd.DataFrame, float | None]:
    """(summ in rank order with `rank` ("1", "=2" for a tie, "" when unranked) and rank_best_acc, the
    ranking target). Ranked: configurations with >= 2 runs, by ERT to the ranking target, then
    profile_score; without a ranking target by best_test_acc's IQM, then profile_score. A configuration
    whose interval (ERT's, or the IQM's) overlaps the interval of the first of its group shares its rank."""
    p = ranking_target(summ, targets)
    r = summ.copy()
    r["rank_best_acc"] = pd.Series(_loses(r["best_test_acc_mean"], True)).rank(method="min").astype(int).to_numpy()
    if p is not None:
        k = ert_column(p)
        key, lo, hi = _loses(r[k], False), r[f"{k}_ci_low"], r[f"{k}_ci_high"].fillna(math.inf)
    else:
        key, lo, hi = _loses(r["best_test_acc_iqm"], True), r["best_test_acc_iqm_ci_low"], r["best_test_acc_iqm_ci_high"]
    r["_unranked"] = r["n_runs"] < MIN_RANKED_N
    r["_k1"], r["_k2"], r["_lo"], r["_hi"] = key, _loses(r["profile_score"], True), lo.to_numpy(), hi.to_numpy()
    r["_k3"] = r["configuration"].astype(str)  # a stable order for exact ties
    r = r.sort_values(["_unranked", "_k1", "_k2", "_k3"]).reset_index(drop=True)
    ranks, leader, size = [""] * len(r), None, {}
    for i, row in r.iterrows():
        if row["_unranked"]:
            continue
        if leader is None or not _overlap(r.loc[leader], row):
            leader = i
        ranks[i] = leader
        size[leader] = size.get(leader, 0) + 1
    r["rank"] = [("" if x == "" else ("=" if size[x] > 1 else "") + str(x + 1)) for x in ranks]
    r = r.drop(columns=["_unranked", "_k1", "_k2", "_k3", "_lo", "_hi"])
    return r[["rank", *[c for c in r.columns if c != "rank"]]], p


def _overlap(a: pd.Series, b: pd.Series) -> bool:
    if a["_k1"] == b["_k1"] and a["_k2"] == b["_k2"]:
        return True  # equal keys tie, intervals or not
    vals = [a["_lo"], a["_hi"], b["_lo"], b["_hi"]]
    if any(isinstance(v, float) and math.isnan(v) for v in vals):
        return False  # no interval (n < 2 timed runs): only an exact tie shares a rank
    return a["_lo"] <= b["_hi"] and b["_lo"] <= a["_hi"]
