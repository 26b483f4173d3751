"""The report's words and reading tables (numbers formatted for people; the CSVs keep full precision)."""

from __future__ import annotations

import math

import pandas as pd

from .. import schema
from . import render, stats


def method_paragraphs(main_p: float | None, targets: tuple[float, ...]) -> list[str]:
    rank = (f"The ranking orders configurations by the fraction of runs that reached {main_p:g} % test accuracy "
            f"(the highest target some configuration reached in every run), then by mean time to it."
            if main_p is not None else
            "No configuration reached a target in every run, so the ranking orders configurations by mean "
            "best test accuracy.")
    ttt = schema.TIME_TO_TARGET_PREFIX
    return [
        "Only FINISHED runs count; every other run in scope is listed under 'Runs excluded' with its status. "
        "Parent runs (a sweep's, or a trial that averages repeats) are not training runs and are listed there too. "
        "A configuration is the set of runs whose config params are equal except seed (data_dir, download and "
        "system_metrics do not count: they cannot change a result).",
        f"Every summary number is the mean across a configuration's runs (seeds) with a 95 % Student-t confidence "
        f"interval, mean ± t(0.975, n-1)·s/√n; no interval is given for n = 1. For times, the olympic mean "
        f"(MLPerf style: the fastest and the slowest run dropped) is given too when n ≥ {stats.OLYMPIC_MIN_N}.",
        f"{ttt}P is the elapsed training time (elapsed_time_s, the sum of epoch times: training plus "
        f"evaluation, no start-up) at the end of the first epoch whose test accuracy is at least P %, computed "
        f"from each run's per-epoch history for the targets {', '.join(f'{p:g}' for p in targets)} %. A run that "
        f"never reached P is counted in {ttt}P_reached (the fraction that did) and is never dropped "
        f"silently: means and intervals are over the runs that reached it, and in comparisons it loses to any run "
        f"that did.",
        "Configurations that differ in exactly one param are compared on best accuracy, total time and each time "
        "to target: the difference of means, Cohen's d (pooled standard deviation), Welch's t-test p-value and "
        "P(A better than B), the probability that a random run of A beats a random run of B (ties count half; "
        "Bouthillier et al. 2021). With few seeds these are wide: read the intervals, not the point estimates.",
        rank,
    ]


def _f(x, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _reached(row, p) -> str:
    """k/n: how many of the configuration's runs reached p %."""
    k = schema.time_to_target(p)
    return f"{round(row[f'{k}_reached'] * row['n_runs'])}/{row['n_runs']}"


def _olympic_or_mean(row, m, pct) -> str:
    o = row[f"{m}_olympic_mean"]
    return f"{pct(row[f'{m}_mean'], row[f'{m}_ci_low'], row[f'{m}_ci_high'], 1.0)}" + \
        (f" (olympic {o:.1f})" if not math.isnan(o) else "")


def _ranking_rows(rank, main_p, pct) -> list[dict]:
    rows = []
    for _, r in rank.iterrows():
        row = {"rank": r["rank"], "configuration": r["configuration"], "n": r["n_runs"],
               "best test acc %": pct(r.best_test_acc_mean, r.best_test_acc_ci_low, r.best_test_acc_ci_high)}
        if main_p is not None:
            k = schema.time_to_target(main_p)
            row[f"time to {main_p:g} % (s)"] = pct(r[f"{k}_mean"], r[f"{k}_ci_low"], r[f"{k}_ci_high"], 1.0)
            row[f"reached {main_p:g} %"] = _reached(r, main_p)
        row["total time (s)"] = pct(r.total_time_s_mean, r.total_time_s_ci_low, r.total_time_s_ci_high, 1.0)
        row["rank by accuracy"] = r["rank_best_acc"]
        rows.append(row)
    return rows


def _summary_rows(summ, targets, pct) -> list[dict]:
    rows = []
    for _, r in summ.iterrows():
        row = {"configuration": r["configuration"], "n": r["n_runs"],
               "best acc %": pct(r.best_test_acc_mean, r.best_test_acc_ci_low, r.best_test_acc_ci_high),
               "final acc %": pct(r.final_test_acc_mean, r.final_test_acc_ci_low, r.final_test_acc_ci_high),
               "s / epoch": _olympic_or_mean(r, "epoch_time_s", pct),
               "total s": _olympic_or_mean(r, "total_time_s", pct)}
        for p in targets:
            k = schema.time_to_target(p)
            row[f"to {p:g} % (s)"] = f"{pct(r[f'{k}_mean'], r[f'{k}_ci_low'], r[f'{k}_ci_high'], 1.0)} " \
                                     f"({_reached(r, p)})"
        rows.append(row)
    return rows


def _comparison_rows(comp, main_p) -> list[dict]:
    rows = []
    shown = {"best_test_acc", "total_time_s"} | ({schema.time_to_target(main_p)} if main_p is not None else set())
    for _, c in comp[comp["metric"].isin(shown)].iterrows() if len(comp) else ():
        acc = c["metric"] == "best_test_acc"
        scale, d = (100.0, 2) if acc else (1.0, 1)
        rows.append({"factor": c["factor"], "A": c["A"], "B": c["B"], "other params": c["others"],
                     "metric": c["metric"] + (" (%)" if acc else " (s)"),
                     "n A/B": f"{c['n_A']}/{c['n_B']}" if acc or c["metric"] == "total_time_s"
                     else f"{c['reached_A']}/{c['n_A']} vs {c['reached_B']}/{c['n_B']} reached",
                     "mean A": _f(scale * c["mean_A"], d), "mean B": _f(scale * c["mean_B"], d),
                     "A - B": _f(scale * c["diff_A_minus_B"], d), "Cohen's d": _f(c["cohens_d"], 2),
                     "Welch p": _f(c["welch_p"], 3), "P(A better)": _f(c["p_A_better"], 2)})
    return rows


def tables(f, runs, varying, summ, comp, rank, main_p, targets, pct) -> tuple[list, list]:
    """The report's tables: (main, appendix)."""
    r_rows, s_rows, c_rows = _ranking_rows(rank, main_p, pct), _summary_rows(summ, targets, pct), \
        _comparison_rows(comp, main_p)

    def frame(rows, cols=None) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=cols).astype(str) if rows or cols else pd.DataFrame()

    main = [
        render.Table("ranking", "Ranking", "Mean [95 % t-interval]; see Method for the order.", frame(r_rows)),
        render.Table("summary", "Summary per configuration",
                     "Mean [95 % t-interval] across seeds; (k/n): runs that reached the target. Full precision, "
                     "with olympic means: summary.csv.", frame(s_rows)),
    ]
    appendix = [
        render.Table("comparisons", "One-factor comparisons",
                     "Pairs of configurations that differ in one param only, on best accuracy, total time and time to "
                     "the ranking's target (comparisons.csv has every target and every digit). "
                     "Time-to-target means are over the runs that reached it; P(A better) counts the others as "
                     "losing.", frame(c_rows, None if c_rows else ["factor", "A", "B"])),
        render.Table("excluded", "Runs excluded", "Runs in scope that do not count, and why.",
                     f.excluded.astype(str)),
        render.Table("incomplete", "Runs missing some metrics",
                     "Counted FINISHED runs that lack some per-epoch or summary metrics (older or resumed runs); "
                     "summaries missing from MLflow are computed from the per-epoch history.",
                     f.incomplete.astype(str)),
    ]
    return main, appendix
