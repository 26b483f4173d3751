"""Report stage 2d: performance profiles (Dolan & More 2002; the scoring of MLCommons AlgoPerf, Dahl et al.
2023) and the ranking.

A workload is (model, dataset, target). On each, a configuration's ratio r = its ERT / the best ERT any
configuration reached on that workload (inf when it never reached the target). rho(tau) is the fraction of
its workloads with r <= tau: rho(1) is how often it was the fastest, rho(4) how often within 4x of the
fastest. profile_score = the integral of rho over [1, 4], divided by 3 (1 = fastest everywhere, 0 = never
within 4x). A configuration without a timed run has no ratio at all: no profile, profile_score empty.
The ranking itself is ranking.py's."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .ranking import ert_column

TAU_MAX = 4.0      # AlgoPerf integrates the profile up to 4x the best time
WORKLOAD_PARAMS = ("model", "dataset")


def ratios(summ: pd.DataFrame, targets: tuple[float, ...]) -> pd.DataFrame:
    """configuration, model, dataset, target, ert, r: one row per configuration and workload. A missing ERT
    (never reached) is inf; a configuration with no timed run (n_timed 0) has NaN: no time, not a slow one."""
    keys = [c for c in WORKLOAD_PARAMS if c in summ]
    rows = []
    for p in targets:
        d = summ[["configuration", *keys]].copy()
        d["target"] = p
        d["ert"] = summ[ert_column(p)].astype(float).fillna(math.inf).to_numpy()
        if "n_timed" in summ:
            d.loc[summ["n_timed"].to_numpy() == 0, "ert"] = math.nan
        rows.append(d)
    d = pd.concat(rows, ignore_index=True)
    group = keys + ["target"]
    best = d.groupby([d[k].astype(str) for k in group])["ert"].transform("min") if group else d["ert"].min()
    with np.errstate(invalid="ignore", divide="ignore"):
        d["r"] = np.where(np.isfinite(d["ert"]) & np.isfinite(best), d["ert"] / best, math.inf)
    d.loc[d["ert"].isna(), "r"] = math.nan
    return d


def performance_profile(summ: pd.DataFrame, targets: tuple[float, ...], taus=None) -> pd.DataFrame:
    """[configuration, tau, rho] for drawing the profile: rho(tau) = the fraction of the configuration's
    workloads (model, dataset, target) on which its ERT is within tau times the best ERT there. `taus`
    defaults to 301 points on [1, 4] plus every ratio in that range (where rho steps up). `summ` is
    stats.summary's frame (it needs configuration and time_to_test_acc_P_ert; model and dataset if present)."""
    d = ratios(summ, targets).dropna(subset=["r"])
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
    d["part"] = np.clip(TAU_MAX - d["r"].to_numpy(), 0.0, TAU_MAX - 1.0) / (TAU_MAX - 1.0)  # NaN stays NaN
    score = d.groupby("configuration", observed=True, sort=False)["part"].mean()
    return summ["configuration"].map(score).astype(float)
