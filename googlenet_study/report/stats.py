"""Report stage 2: numbers. Per-run summaries, configurations, mean and 95 % t-intervals across seeds,
olympic means, IQMs with bootstrap intervals (robust.py), times to target as censored data (survival.py),
one-factor comparisons (P(A better than B) with its interval, Cohen's d, Welch; log-rank for times to
target), performance profiles (profiles.py) and the ranking (ranking.py). Which runs' seconds count
(time_excluded) is decided once, in per_run, and every time statistic follows it.

A configuration is the set of runs whose config params are equal except `seed`, on the same hardware (the
device_name tag; `device` cuda:N counts as cuda) unless the report pools hardware. docs/reports.md explains
every number; reports/README.md lists summary.csv's columns."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import schema
from ..statistics.clock import Clock, on_clock
from ..statistics.target import reached  # noqa: F401 - runs.csv's reached_P column
from ..statistics import profiles, ranking as ranking_, robust, significance, survival, target
from .fetch import ACCURACY_FEEDS, TIMES, Fetched
from ..statistics.robust import t_interval

OLYMPIC_MIN_N = 5  # MLPerf-style: drop the fastest and slowest run when there are at least five
# Factors the study is about come first in labels and tables; other varying params follow.
FACTOR_ORDER = ("model", "weights", "backbone", "aux_weight", "batch_size", "optimizer", "lr", "image_size",
                "epochs", "amp", "channels_last", "compile", "device", "threads", "hardware")
FACTORS = ("aux_weight", "batch_size", "backbone")


def olympic_mean(x) -> float:
    """Mean without the single smallest and largest value (n >= 5), else NaN."""
    x = np.sort(np.asarray(x, dtype=float)[np.isfinite(np.asarray(x, dtype=float))])
    return float(x[1:-1].mean()) if len(x) >= OLYMPIC_MIN_N else math.nan


def _num(s: pd.Series) -> pd.Series:
    """Param strings as one type per column: integers (Int64) or floats where every value given is one
    ("none" and "" missing, so 32 < 128 and train_size none/100 stays a number), else unchanged strings."""
    text = s.astype(str)
    missing = text.isin(["", "none", "None", "nan"])
    n = pd.to_numeric(s.where(~missing), errors="coerce")
    if not (~missing).any() or n[~missing].isna().any():
        return s
    return n.astype("Int64") if text[~missing].str.fullmatch(r"[+-]?\d+").all() else n.astype(float)


def _label(v) -> str:
    return "none" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


HARDWARE = "hardware"  # the device_name tag as a configuration key (pooled: every device_name, joined)
NOT_RECORDED = "not recorded"  # a run without a device_name tag (another tool's): such runs are one kind


def per_run(f: Fetched, targets: tuple[float, ...], clock: Clock,
            pool_hardware: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """One row per counted run with its config label and summary numbers; and the params that vary
    (with `hardware` among them when runs of equal params ran on different hardware, unless pooled).

    time_to_test_acc_P and clock_end_s are on `clock`; a run whose seconds cannot be used (time_excluded
    gives why: resumed on other hardware, an invalid value, no value on the clock) has NaN for every time
    (epoch_time_s, total_time_s, time_to_test_acc_P, clock_end_s). A run with an invalid accuracy has NaN
    best and final accuracy. Rows are in canonical order: configuration, seed, start time (never run ids),
    so a bootstrap resamples the same runs in the same order whatever store they were logged to."""
    ep = on_clock(f.epochs, clock)
    g = ep.groupby("run_id", sort=False)
    d = pd.DataFrame({"n_epochs": g["epoch"].max(), **{m: g[m].mean() for m in schema.PER_EPOCH_MEANS},
                      "clock_end_s": g["clock_s"].max(),
                      "_no_clock": g[clock.metric].count() < g["epoch"].count()})
    for p in targets:  # the clock at the first epoch at target P (statistics.target; NaN: never reached)
        at = pd.Series(target.at_target(ep[schema.ACCURACY], p), index=ep.index)
        d[schema.time_to_target(p)] = ep[at].groupby("run_id", sort=False)["clock_s"].first()
        d[reached(p)] = at.groupby(ep["run_id"], sort=False).any()  # not isin(groups): 0.8 s per target at 10,000 runs
    summaries = f.logged_summary[["run_id", *schema.SUMMARY_METRICS]]
    runs = f.runs.merge(d, left_on="run_id", right_index=True).merge(summaries, on="run_id", how="left")
    bad_acc = set(f.invalid.loc[f.invalid["metric"].isin(ACCURACY_FEEDS), "run_id"])
    runs.loc[runs["run_id"].isin(bad_acc), [schema.BEST_ACC, schema.FINAL_ACC]] = np.nan
    runs["time_excluded"] = time_excluded(runs, f.invalid, clock)
    times = [*TIME_METRICS, "clock_end_s", *(schema.time_to_target(p) for p in targets)]
    runs.loc[runs["time_excluded"] != "", times] = np.nan
    runs = runs.drop(columns="_no_clock")
    runs[HARDWARE] = runs[schema.DEVICE_NAME_TAG].fillna("").astype(str).replace("", NOT_RECORDED)
    varying = [p for p in f.params if runs[p].nunique(dropna=False) > 1]
    key = varying + ([HARDWARE] if not pool_hardware and runs[HARDWARE].nunique() > 1 else [])
    key.sort(key=lambda p: (FACTOR_ORDER.index(p) if p in FACTOR_ORDER else len(FACTOR_ORDER), p))
    for p in list(f.params) + ["seed"]:
        runs[p] = _num(runs[p])
    # Equal seeds: the run's start, then its name and numbers; the run id (random per store) only last.
    runs = runs.sort_values(key + ["seed", "start_time", "run_name", *schema.SUMMARY_METRICS, "run_id"])
    runs = runs.reset_index(drop=True)
    if key:  # labelled once per distinct combination (as a row of runs[key]: 32.0 beside a float), not per run
        same = runs[key].astype(str).groupby(key, sort=False, dropna=False).ngroup().to_numpy()  # "-0.0" != "0.0"
        first = runs[key].iloc[np.unique(same, return_index=True)[1]]
        labels = first.apply(lambda r: ", ".join(f"{k}={_label(v)}" for k, v in r.items()), axis=1)
        runs["configuration"] = labels.iloc[same].set_axis(runs.index)
    else:
        runs["configuration"] = runs["model"].astype(str) if "model" in runs else "all runs"
    if pool_hardware:  # a configuration's hardware: every device_name its runs ran on
        runs[HARDWARE] = runs.groupby("configuration")[HARDWARE].transform(lambda h: " + ".join(sorted(set(h))))
    order = list(dict.fromkeys(runs["configuration"]))
    runs["configuration"] = pd.Categorical(runs["configuration"], categories=order, ordered=True)
    return runs, key


def time_excluded(runs: pd.DataFrame, invalid: pd.DataFrame, clock: Clock) -> np.ndarray:
    """Per run, why its seconds are left out of every time statistic ("" when they count): resumed on other
    hardware (tag hardware_changed), an invalid time or accuracy (times to target are read off test_acc),
    or an epoch without a value on the clock (e.g. no train_time_s under --clock train)."""
    changed = runs[schema.HARDWARE_CHANGED_TAG].fillna("").astype(str)
    why = [np.where(changed != "", "resumed on other hardware: " + changed, "")]
    bad = invalid[invalid["metric"].isin((*TIMES, *ACCURACY_FEEDS))]
    text = bad.groupby("run_id", sort=False)["metric"].agg(lambda m: ", ".join(dict.fromkeys(m)))
    text = ("invalid " + text).to_dict()
    refused = np.array([text.get(rid, "") for rid in runs["run_id"]], dtype=object)
    why.append(refused)  # an invalid clock value is NaN now: say "invalid", not "no value" as well
    why.append(np.where(runs["_no_clock"].to_numpy(dtype=bool) & (refused == ""),
                        f"no {clock.metric} at some epoch (--clock {clock.name})", ""))
    return np.array(["; ".join(w for w in ws if w) for ws in zip(*why)], dtype=object)


# summary.csv's numbers per configuration (columns in this order): per_run's columns, not schema.SUMMARY_METRICS:
# a per-epoch metric (schema.PER_EPOCH_MEANS, epoch_time_s among them) here is a run's mean over its epochs.
SUMMARIZED = (schema.BEST_ACC, schema.FINAL_ACC, *schema.PER_EPOCH_MEANS, schema.TOTAL_TIME)
IQM_METRICS = (schema.BEST_ACC, schema.FINAL_ACC, schema.TOTAL_TIME)
TIME_METRICS = (schema.EPOCH_TIME, schema.TOTAL_TIME)


def _target_numbers(g: pd.DataFrame, p: float) -> dict:
    """summary.csv's columns for one configuration and target: the runs as censored data."""
    k = schema.time_to_target(p)
    t, hit = survival.observed(g[k], g[reached(p)], g["clock_end_s"])
    e = survival.ert(t, hit)
    med = survival.km_median(t, hit)
    ert_lo, ert_hi = robust.ratio_interval(t, hit)
    return {f"{k}_reached": float(hit.mean()) if len(hit) else math.nan,
            f"{k}_median": med[0], f"{k}_median_ci_low": med[1], f"{k}_median_ci_high": med[2],
            f"{k}_ert": e if math.isfinite(e) else math.nan,  # empty = infinite: no timed run reached it
            f"{k}_ert_ci_low": ert_lo, f"{k}_ert_ci_high": ert_hi if math.isfinite(ert_hi) else math.nan,
            f"{k}_mean_reached": float(t[hit > 0].mean()) if hit.sum() else math.nan}


def summary(runs: pd.DataFrame, varying: list[str], targets: tuple[float, ...]) -> pd.DataFrame:
    """summary.csv: one row per configuration (accuracies as fractions; reports/README.md has every column)."""
    rows = []
    for cfg, g in runs.groupby("configuration", observed=True, sort=True):
        row = {"configuration": cfg, **{p: g[p].iloc[0] for p in varying if p != HARDWARE},
               **{p: g[p].iloc[0] for p in profiles.WORKLOAD_PARAMS if p in g and p not in varying},
               HARDWARE: g[HARDWARE].iloc[0], "n_runs": len(g), "n_timed": int((g["time_excluded"] == "").sum())}
        for m in SUMMARIZED:  # m_n: the runs with a value, i.e. the n of m's mean, interval and IQM
            v = g[m] if m in g else pd.Series(np.nan, index=g.index)  # a per-epoch mean no run here has
            row[f"{m}_n"] = int(np.isfinite(v.to_numpy(dtype=float)).sum())
            row[f"{m}_mean"], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = t_interval(v)
        for m in IQM_METRICS:
            row[f"{m}_iqm"], row[f"{m}_iqm_ci_low"], row[f"{m}_iqm_ci_high"] = robust.iqm_interval(g[m])
        for m in TIME_METRICS:
            row[f"{m}_olympic_mean"] = olympic_mean(g[m])
        for p in targets:
            row.update(_target_numbers(g, p))
        rows.append(row)
    s = pd.DataFrame(rows)
    s["profile_score"] = profiles.profile_scores(s, targets)  # NaN without a timed run: no time, not slow
    return s


COMPARISON_COLUMNS = ("factor", "A", "B", "others", "metric", "n_A", "n_B", "reached_A", "reached_B",
                      "mean_A", "mean_B", "diff_A_minus_B", "cohens_d", "welch_p", "median_A", "median_B",
                      "ert_A", "ert_B", "logrank_p", "logrank_method", "logrank_p_holm", "p_A_better",
                      "p_A_better_ci_low", "p_A_better_ci_high", "configuration_A", "configuration_B")


def _censored(g: pd.DataFrame, m: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(times, reached, KM median, ERT) of one configuration's timed runs for time-to-target metric m
    (no timed run: empty arrays, NaN median and ERT)."""
    t, hit = survival.observed(g[m], g[reached(float(schema.target_of(m)))], g["clock_end_s"])
    e = survival.ert(t, hit)
    return t, hit, survival.km_median(t, hit)[0], e if math.isfinite(e) else math.nan


def _compare(ga: pd.DataFrame, gb: pd.DataFrame, m: str, higher: bool, cens: tuple | None = None) -> dict:
    """One metric, A vs B. Accuracies over all runs, times over the timed runs; missing values lose.
    Times to target as censored data: KM medians, ERTs, log-rank; P(A better) counts an unreached run as
    slower than every run that reached the target."""
    if m in TIME_METRICS or schema.is_time_to_target(m):
        ga, gb = ga[ga["time_excluded"] == ""], gb[gb["time_excluded"] == ""]
    a, b = ga[m].to_numpy(dtype=float), gb[m].to_numpy(dtype=float)
    p, lo, hi = robust.prob_better_interval(a, b, higher)
    row = {"n_A": len(a), "n_B": len(b), "reached_A": int(np.isfinite(a).sum()), "reached_B": int(np.isfinite(b).sum()),
           "p_A_better": p, "p_A_better_ci_low": lo, "p_A_better_ci_high": hi}
    if not schema.is_time_to_target(m):
        fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
        return {**row, "mean_A": fa.mean() if len(fa) else math.nan, "mean_B": fb.mean() if len(fb) else math.nan,
                "diff_A_minus_B": (fa.mean() - fb.mean()) if len(fa) and len(fb) else math.nan,
                "cohens_d": significance.cohens_d(fa, fb), "welch_p": significance.welch_p(fa, fb)}
    (ta, ha, ma, ea), (tb, hb, mb, eb) = cens or (_censored(ga, m), _censored(gb, m))
    lr = significance.logrank(ta, ha, tb, hb)  # exact, Monte Carlo or asymptotic by n (significance.py)
    return {**row, "median_A": ma, "median_B": mb, "ert_A": ea, "ert_B": eb, "logrank_p": lr.p,
            "logrank_method": lr.method if not math.isnan(lr.p) else ""}


def comparisons(runs: pd.DataFrame, varying: list[str], targets: tuple[float, ...]) -> pd.DataFrame:
    """Configurations that differ in exactly one param: A vs B on best accuracy, total time, time to target
    (COMPARISON_COLUMNS, the header even when nothing differs in one param)."""
    metrics = [(schema.BEST_ACC, True), (schema.TOTAL_TIME, False)]
    metrics += [(schema.time_to_target(p), False) for p in targets]
    configs = runs.groupby("configuration", observed=True, sort=True)
    keyed = {cfg: (tuple(_label(v) for v in g[varying].iloc[0]), g) for cfg, g in configs}
    rows, memo = [], {}

    def censored(cfg, g: pd.DataFrame, m: str):  # once per configuration and target, not once per pair
        if (cfg, m) not in memo:  # keyed by name: g may have no timed run at all
            memo[(cfg, m)] = _censored(g[g["time_excluded"] == ""], m)
        return memo[(cfg, m)]

    for (ca, (ka, ga)), (cb, (kb, gb)) in itertools.combinations(keyed.items(), 2):
        diff = [i for i in range(len(varying)) if ka[i] != kb[i]]
        if len(diff) != 1:
            continue
        factor = varying[diff[0]]
        for m, higher in metrics:
            rows.append({"factor": factor, "A": f"{factor}={ka[diff[0]]}", "B": f"{factor}={kb[diff[0]]}",
                         "others": ", ".join(f"{v}={ka[i]}" for i, v in enumerate(varying) if i != diff[0]) or "-",
                         "metric": m, **_compare(ga, gb, m, higher, (censored(ca, ga, m), censored(cb, gb, m))
                                                 if schema.is_time_to_target(m) else None), "configuration_A": ca,
                         "configuration_B": cb})
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    for _, family in out.groupby("metric", sort=False):  # Holm per target: the rows a report table prints
        out.loc[family.index, "logrank_p_holm"] = significance.holm(family["logrank_p"])
    return out


@dataclass(frozen=True)
class Numbers:
    """Stage 2's result, the one value every later stage reads (CSVs, tables, figures, verdict, Scope): the
    fetched runs, every number the report states, and the targets, clock and pooling they were computed with."""
    fetched: Fetched
    runs: pd.DataFrame            # per_run: one row per counted run, in canonical order
    varying: list[str]            # the params that make configurations (hardware too, unless pooled)
    summary: pd.DataFrame         # summary.csv: one row per configuration, with its rank and rank_by
    comparisons: pd.DataFrame     # comparisons.csv: one-factor pairs
    ranking: pd.DataFrame         # the summary in rank order (statistics.ranking.ranking)
    main_p: float | None          # the ranking target, % (None: ranked by accuracy)
    targets: tuple[float, ...]    # % test accuracy
    clock: Clock                  # what every time to target is read on
    pool_hardware: bool           # runs of equal params on different hardware are one configuration


def numbers(f: Fetched, targets: tuple[float, ...], clock: Clock, pool_hardware: bool = False) -> Numbers:
    """Stage 2 in one call; the summary gets its `rank` and `rank_by` columns from the ranking."""
    runs, varying = per_run(f, targets, clock, pool_hardware)
    summ = summary(runs, varying, targets)
    comp = comparisons(runs, varying, targets)
    rank, main_p = ranking_.ranking(summ, targets, clock)
    for c in ("rank", "rank_by"):  # summary.csv says each configuration's rank and the criterion behind it
        summ[c] = summ["configuration"].map(dict(zip(rank["configuration"], rank[c])))
    return Numbers(f, runs, varying, summ, comp, rank, main_p, targets, clock, pool_hardware)


# ---- curves, aggregated before plotting (1,000 runs stay fast) -------------------------------------------
def _band(g) -> pd.DataFrame:
    """mean and t-interval per group from count/mean/std (vectorised)."""
    a = g.agg(["count", "mean", "std"])
    h = robust.t_half_width(a["std"], a["count"])
    return a.assign(low=a["mean"] - h, high=a["mean"] + h)


def by_epoch(runs: pd.DataFrame, epochs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """configuration, epoch, count, mean, std, low, high of `metric` across seeds."""
    e = epochs[["run_id", "epoch", metric]].merge(runs[["run_id", "configuration"]], on="run_id")
    return _band(e.groupby(["configuration", "epoch"], observed=True)[metric]).reset_index()
