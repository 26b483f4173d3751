"""Report stage 2: numbers. Per-run summaries, configurations, mean and 95 % t-intervals across seeds,
olympic means, one-factor comparisons (P(A better than B), Cohen's d, Welch) and a ranking.

A configuration is the set of runs whose config params are equal except `seed`."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .. import schema
from .fetch import Fetched

CONFIDENCE = 0.95
OLYMPIC_MIN_N = 5  # MLPerf-style: drop the fastest and slowest run when there are at least five
# Factors the study is about come first in labels and tables; other varying params follow.
FACTOR_ORDER = ("model", "weights", "backbone", "aux_weight", "batch_size", "optimizer", "lr", "image_size",
                "epochs", "amp", "channels_last", "compile", "device", "threads")
FACTORS = ("aux_weight", "batch_size", "backbone")


def t_interval(x) -> tuple[float, float, float]:
    """(mean, low, high): Student-t 95 % interval of the mean; low/high are NaN for n < 2."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan
    h = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return m, m - h, m + h


def olympic_mean(x) -> float:
    """Mean without the single smallest and largest value (n >= 5), else NaN."""
    x = np.sort(np.asarray(x, dtype=float)[np.isfinite(np.asarray(x, dtype=float))])
    return float(x[1:-1].mean()) if len(x) >= OLYMPIC_MIN_N else math.nan


def _num(s: pd.Series) -> pd.Series:
    """Param strings as numbers where every value is one (so 32 < 128), else unchanged."""
    n = pd.to_numeric(s, errors="coerce")
    return n if n.notna().all() else s


def per_run(f: Fetched, targets: tuple[float, ...]) -> tuple[pd.DataFrame, list[str]]:
    """One row per counted run with its config label and summary numbers; and the params that vary."""
    ep = f.epochs.sort_values(["run_id", "epoch"])
    g = ep.groupby("run_id", sort=False)
    d = pd.DataFrame({"n_epochs": g["epoch"].max(), "best_from_history": g["test_acc"].max(),
                      "final_from_history": g["test_acc"].last(), "total_from_history": g["elapsed_time_s"].max(),
                      "epoch_time_s": g["epoch_time_s"].mean()})
    for p in targets:  # elapsed_time_s at the first epoch with test_acc >= P/100 (NaN: never reached)
        hit = ep[ep["test_acc"] >= p / 100 - 1e-12].groupby("run_id", sort=False)["elapsed_time_s"].first()
        d[schema.time_to_target(p)] = hit
    runs = f.runs.merge(d, left_on="run_id", right_index=True).merge(f.logged_summary, on="run_id", how="left",
                                                                     suffixes=("", "_logged"))
    # What the run logged wins; older runs without summaries get them from their history.
    for k, h in (("best_test_acc", "best_from_history"), ("final_test_acc", "final_from_history"),
                 ("total_time_s", "total_from_history")):
        runs[k] = runs[k].fillna(runs[h]) if k in runs else runs[h]
    for p in targets:
        runs[schema.time_to_target(p) + "_hit"] = runs[schema.time_to_target(p)].notna()
    varying = [p for p in f.params if runs[p].nunique(dropna=False) > 1]
    varying.sort(key=lambda p: (FACTOR_ORDER.index(p) if p in FACTOR_ORDER else len(FACTOR_ORDER), p))
    for p in varying + ["seed"]:
        runs[p] = _num(runs[p])
    runs = runs.sort_values(varying + ["seed", "run_id"]).reset_index(drop=True)
    if varying:
        runs["configuration"] = runs[varying].astype(str).apply(
            lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1)
    else:
        runs["configuration"] = runs["model"].astype(str) if "model" in runs else "all runs"
    order = list(dict.fromkeys(runs["configuration"]))
    runs["configuration"] = pd.Categorical(runs["configuration"], categories=order, ordered=True)
    return runs, varying


# summary.csv's numbers per configuration (columns in this order): per_run's columns, not schema.SUMMARY_METRICS:
# epoch_time_s here is a run's mean epoch time.
SUMMARIZED = ("best_test_acc", "final_test_acc", "epoch_time_s", "total_time_s")
TIME_METRICS = ("epoch_time_s", "total_time_s")


def summary(runs: pd.DataFrame, varying: list[str], targets: tuple[float, ...]) -> pd.DataFrame:
    """summary.csv: one row per configuration (names as in issue 4, accuracies as fractions)."""
    rows = []
    for cfg, g in runs.groupby("configuration", observed=True, sort=True):
        row = {"configuration": cfg, **{p: g[p].iloc[0] for p in varying}, "n_runs": len(g)}
        for m in SUMMARIZED + tuple(schema.time_to_target(p) for p in targets):
            row[f"{m}_mean"], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = t_interval(g[m])
            if schema.is_time_to_target(m):
                row[f"{m}_reached"] = float(g[m].notna().mean())
        for m in TIME_METRICS + tuple(schema.time_to_target(p) for p in targets):
            row[f"{m}_olympic_mean"] = olympic_mean(g[m])
        rows.append(row)
    return pd.DataFrame(rows)


def prob_better(a, b, higher_is_better: bool) -> float:
    """P(a random run of A beats a random run of B), ties count half (Bouthillier et al. 2021).
    Times use +inf for a target never reached, so such a run loses to every run that reached it."""
    a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[None, :]
    if a.size == 0 or b.size == 0:
        return math.nan
    win = (a > b) if higher_is_better else (a < b)
    return float(win.mean() + 0.5 * (a == b).mean())


def cohens_d(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else math.nan


def welch_p(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return math.nan
    with warnings.catch_warnings():  # near-identical samples: scipy warns about precision, the p is still usable
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def comparisons(runs: pd.DataFrame, varying: list[str], targets: tuple[float, ...]) -> pd.DataFrame:
    """Configurations that differ in exactly one param: A vs B on best accuracy, total time, time to target."""
    metrics = [("best_test_acc", True), ("total_time_s", False)]
    metrics += [(schema.time_to_target(p), False) for p in targets]
    configs = runs.groupby("configuration", observed=True, sort=True)
    keyed = {cfg: (tuple(g[varying].iloc[0]), g) for cfg, g in configs}
    rows = []
    for (ca, (ka, ga)), (cb, (kb, gb)) in itertools.combinations(keyed.items(), 2):
        diff = [i for i in range(len(varying)) if ka[i] != kb[i]]
        if len(diff) != 1:
            continue
        factor = varying[diff[0]]
        for m, higher in metrics:
            a, b = ga[m].to_numpy(dtype=float), gb[m].to_numpy(dtype=float)
            fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
            rows.append({
                "factor": factor, "A": f"{factor}={ka[diff[0]]}", "B": f"{factor}={kb[diff[0]]}",
                "others": ", ".join(f"{v}={ka[i]}" for i, v in enumerate(varying) if i != diff[0]) or "-",
                "metric": m, "n_A": len(a), "n_B": len(b), "reached_A": len(fa), "reached_B": len(fb),
                "mean_A": fa.mean() if len(fa) else math.nan, "mean_B": fb.mean() if len(fb) else math.nan,
                "diff_A_minus_B": (fa.mean() - fb.mean()) if len(fa) and len(fb) else math.nan,
                "cohens_d": cohens_d(fa, fb), "welch_p": welch_p(fa, fb),
                "p_A_better": prob_better(np.where(np.isfinite(a), a, np.inf), np.where(np.isfinite(b), b, np.inf),
                                          higher),
                "configuration_A": ca, "configuration_B": cb,
            })
    return pd.DataFrame(rows)


def main_target(summ: pd.DataFrame, targets: tuple[float, ...]) -> float | None:
    """The highest target some configuration reached in every one of its runs."""
    for p in sorted(targets, reverse=True):
        if (summ[f"{schema.time_to_target(p)}_reached"] == 1.0).any():
            return p
    return None


def ranking(summ: pd.DataFrame, targets: tuple[float, ...]) -> tuple[pd.DataFrame, float | None]:
    """Rank by time to the main target (configurations that reached it less often rank below), else by
    best accuracy."""
    p = main_target(summ, targets)
    r = summ.copy()
    r["rank_best_acc"] = r["best_test_acc_mean"].rank(ascending=False, method="min").astype(int)
    if p is None:
        r = r.sort_values("best_test_acc_mean", ascending=False)
    else:
        k = schema.time_to_target(p)
        r = r.sort_values([f"{k}_reached", f"{k}_mean", "best_test_acc_mean"], ascending=[False, True, False])
    r.insert(0, "rank", range(1, len(r) + 1))
    return r.reset_index(drop=True), p


# ---- curves, aggregated before plotting (1,000 runs stay fast) -------------------------------------------
def _band(g) -> pd.DataFrame:
    """mean and t-interval per group from count/mean/std (vectorised)."""
    a = g.agg(["count", "mean", "std"])
    t = stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(a["count"] - 1, 1))
    h = np.where(a["count"] > 1, t * a["std"] / np.sqrt(a["count"]), np.nan)
    return a.assign(low=a["mean"] - h, high=a["mean"] + h)


def by_epoch(runs: pd.DataFrame, epochs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """configuration, epoch, count, mean, std, low, high of `metric` across seeds."""
    e = epochs[["run_id", "epoch", metric]].merge(runs[["run_id", "configuration"]], on="run_id")
    return _band(e.groupby(["configuration", "epoch"], observed=True)[metric]).reset_index()


def by_time(runs: pd.DataFrame, epochs: pd.DataFrame, points: int = 400) -> pd.DataFrame:
    """test_acc on a common wall-clock grid. A run holds its last evaluated accuracy from the end of one
    epoch to the end of the next, and its final accuracy once it has finished (the model one would have at
    that second); a configuration's curve runs until its longest run ends and starts once at least half its
    runs have finished an epoch."""
    ends = epochs.groupby("run_id")["elapsed_time_s"].max()
    cfg = dict(zip(runs["run_id"], runs["configuration"]))
    # ... plus each configuration's last end, so every curve reaches its final mean.
    grid = np.union1d(np.linspace(0.0, float(ends.max()), points), ends.groupby(ends.index.map(cfg)).max())
    out = []
    for rid, e in epochs.sort_values(["run_id", "epoch"]).groupby("run_id", sort=False):
        t, acc = e["elapsed_time_s"].to_numpy(float), e["test_acc"].to_numpy(float)
        i = np.searchsorted(t, grid, side="right") - 1
        v = np.where(i >= 0, acc[np.clip(i, 0, None)], np.nan)
        out.append(pd.DataFrame({"configuration": cfg[rid], "t": grid, "acc": v, "end": t[-1]}))
    d = pd.concat(out, ignore_index=True)
    n = runs.groupby("configuration", observed=True).size()
    last = d.groupby("configuration", observed=True)["end"].max()
    b = _band(d.groupby(["configuration", "t"], observed=True)["acc"]).reset_index()
    c = b["configuration"]
    keep = (b["count"] >= np.ceil(c.map(n).astype(float) / 2)) & (b["t"] <= c.map(last).astype(float))
    return b[keep]
