"""The report's words and reading tables (numbers formatted for people; the CSVs keep full precision)."""

from __future__ import annotations

import math

import pandas as pd

from .. import schema
from ..statistics import ranking, robust, significance
from ..statistics.clock import EPOCH, Clock
from . import fmt, render, stats


FAKE_DATASET = "fake"  # random pixels: a run on it times the pipeline, its accuracy is chance


def in_run_order(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """A frame of counted runs' rows (run_id) in stats.per_run's canonical order, a run's rows as they were:
    the same runs in two stores give the same tables, whatever order each store returns them in."""
    pos = pd.Series(range(len(runs)), index=runs["run_id"].to_numpy())
    return frame.assign(_pos=pos.reindex(frame["run_id"]).to_numpy()).sort_values(
        "_pos", kind="stable").drop(columns="_pos")


def invalid_rows(f, runs: pd.DataFrame) -> pd.DataFrame:
    """The "Runs with invalid metrics" table: values refused (fetch.refuse_invalid) and logged best/final
    accuracies that disagree with their history (fetch.summaries), in canonical run order."""
    return in_run_order(pd.concat([f.invalid, f.disagreeing], ignore_index=True) if len(f.disagreeing)
                        else f.invalid, runs)


def scope_facts(n: stats.Numbers) -> list[tuple[str, str]]:
    """The report's Scope lines: what was counted, on which hardware and clock, and what was pooled."""
    f, runs, summ = n.fetched, n.runs, n.summary
    facts = []
    if n.pool_hardware:
        facts.append(("HARDWARE POOLED", "--pool-hardware: runs with equal params on different hardware are one "
                                         "configuration, so their times mix machines"))
    fake = int((runs["dataset"].astype(str) == FAKE_DATASET).sum()) if "dataset" in runs else 0
    if fake:
        facts.append(("timing only", f"{fake} runs use dataset {FAKE_DATASET} (random pixels): their accuracies "
                                     "are chance; only their times mean something"))
    left_out = runs[runs["time_excluded"] != ""]
    facts += [("experiment", f.source["experiment"]), ("study", f.source["study"] or "-"),
              ("parent run", f.source["parent_run"] or "-"), ("filter", f.source["filter"] or "-"),
              ("tracking URI", f.source["tracking_uri"]),
              ("runs counted", f"{len(runs)} FINISHED runs in {len(summ)} configurations"),
              ("runs excluded", str(len(f.excluded))), ("runs missing some metrics", str(len(f.incomplete))),
              *_not_recorded_facts(f),
              ("runs left out of time statistics", f"{len(left_out)}" + (" (listed with the reason in the "
                                                                          "appendix)" if len(left_out) else "")),
              ("runs with invalid metrics", str(invalid_rows(f, runs)["run_id"].nunique())),
              *_reading_facts(f),
              ("varying params", ", ".join(n.varying) or "none"),
              ("targets", ", ".join(f"{p:g} %" for p in n.targets)),
              ("clock", n.clock.words),
              ("hardware per configuration", _hardware(summ)),
              ("hosts", ", ".join(sorted(set(runs["host"].astype(str)) - {""})) or "-"),
              ("bootstrap", f"percentile, {robust.BOOTSTRAP_RESAMPLES} resamples, numpy default_rng seed "
                            f"{robust.BOOTSTRAP_SEED} (the same runs give the same numbers)")]
    return facts


def _hardware(summ) -> str:
    by = summ.groupby(stats.HARDWARE, sort=True)["configuration"].apply(lambda c: [str(x) for x in c])
    if len(by) == 1:
        return f"{by.index[0]} (all {len(summ)} configurations)"
    short = {hw: [c.replace(f", {stats.HARDWARE}={hw}", "").replace(f"{stats.HARDWARE}={hw}", "") or "all params equal"
                  for c in cfgs] for hw, cfgs in by.items()}  # the label names the hardware already
    return "; ".join(f"{hw}: {', '.join(cfgs)}" for hw, cfgs in short.items())


def _reading_facts(f) -> list[tuple[str, str]]:
    """Scope's lines on runs read by --accuracy-metric/--clock/--by (report/reading.py): whose runs they are,
    which metric is the accuracy, what makes a configuration, and which params were left out of it."""
    src = f.source
    if "accuracy_metric" not in src:  # this tool's runs, read as logged: nothing to say
        return []
    ours, theirs = src["ours"], src["theirs"]
    whose = (f"{theirs} runs not logged by googlenet-study" if not ours else
             f"{ours} runs logged by googlenet-study and {theirs} runs not" if theirs else
             f"{ours} runs logged by googlenet-study")
    facts = [("whose runs", whose),
             ("accuracy metric", f"{src['accuracy_metric']} (a fraction in [0, 1] per step; its k-th value is "
                                 f"epoch k)"),
             ("configurations by", f"--by {','.join(src['by'])}" if src["by"] else
              f"every param that varies, except the seed (--seed-param {src['seed_param']})")]
    if src["unique_params"]:
        facts.append(("params left out", f"{', '.join(src['unique_params'])} differs in every run: each run would "
                                         f"be its own configuration; name the configuration's params with --by"))
    return facts


def reading_paragraphs(n: stats.Numbers) -> list[str]:
    """Method's words for another tool's runs (none for this tool's, read as logged)."""
    f = n.fetched
    if "accuracy_metric" not in f.source:
        return []
    bare = int((n.runs[schema.DEVICE_NAME_TAG].astype(str) == "").sum())
    return [f"Runs of other tools are read by what the command names: the accuracy is "
            f"{f.source['accuracy_metric']} (the k-th logged value is epoch k, in step order), time is the "
            f"{n.clock.label} ({n.clock.words}); a run that never reaches a target is censored at its last "
            f"accuracy value's time. Hardware comes from the device_name tag"
            + (f"; {bare} runs have none: hardware not recorded, and those runs count as one kind of hardware."
               if bare else ".")]


def method_paragraphs(main_p: float | None, targets: tuple[float, ...], clock: Clock) -> list[str]:
    ttt = schema.TIME_TO_TARGET_PREFIX
    n = ranking.MIN_RANKED_N
    rank = (f"Timed runs are the runs whose seconds count (none left out of time statistics); a configuration "
            f"with fewer than {n} is listed, not ranked on time. One configuration dominates another when its ERT "
            f"is no larger on every target and smaller on one; every configuration with a timed run (one is "
            f"enough) may dominate, across models. The ranking target is {main_p:g} %: the highest target that at "
            f"least half the timed runs of every undominated configuration with {n} or more timed runs reached (of "
            f"every undominated one, when none has {n}). Configurations that reached it are ranked by ERT to it, "
            f"then a profile score whose best ERT per target is over every timed configuration; those that did "
            f"not (ERT ∞) come after, by the interquartile mean of best test accuracy. Configurations whose "
            f"intervals (ERT's, or the IQM's) are linked by a chain of overlaps share the rank of the first of "
            f"them (=k): the first ranks alone only when no other interval overlaps its own. Adding or removing a "
            f"configuration that is worse than another on every target never changes the order of the others."
            if main_p is not None else
            f"No target was reached by at least half the timed runs of every undominated configuration, so "
            f"configurations with at least {n} accuracies are ranked by the interquartile mean of best test "
            f"accuracy; intervals linked by a chain of overlaps share a rank (=k).")
    return [
        "Only FINISHED runs count; every other run in scope is listed under 'Runs excluded' with its status. "
        "Parent runs (a sweep's, or a trial that averages repeats) are not training runs and are listed there too. "
        "A configuration is the set of runs whose config params are equal except seed (data_dir, download and "
        "system_metrics do not count: they cannot change a result), on the same hardware (the device_name tag; "
        "device cuda:N counts as cuda). A run resumed on other hardware than it started on (tag "
        "hardware_changed) is left out of every time statistic; its accuracy counts.",
        f"Summary numbers across a configuration's runs: the mean with a 95 % Student-t interval "
        f"(mean ± t(0.975, n-1)·s/√n, none for n = 1), and the interquartile mean (IQM, the mean of the middle "
        f"50 % of runs) with a 95 % percentile-bootstrap interval (Agarwal et al. 2021). For times, the olympic "
        f"mean (the fastest and slowest run dropped) is given too when n ≥ {stats.OLYMPIC_MIN_N}.",
        f"{ttt}P is the clock ({clock.words}) at the end of the first epoch whose test accuracy is at least "
        f"P %, for the targets {', '.join(f'{p:g}' for p in targets)} %. A run that never reached P is censored "
        f"at its end, never dropped: the median time to P is the Kaplan-Meier median with its 95 % interval "
        f"(empty when fewer than half reached P), and the expected running time ERT is the seconds all runs "
        f"spent until they reached P or ended, divided by the number that reached it (COCO; empty = infinite).",
        "Performance profiles (Dolan & More 2002, as AlgoPerf scores): on each workload (model, dataset, target) "
        "r = a configuration's ERT / the best ERT; rho(tau) = the share of its workloads with r <= tau; "
        "profile_score = the area under rho on [1, 4] / 3 (1: fastest on every workload).",
        "Configurations that differ in exactly one param are compared on best accuracy, total time and each time "
        "to target: for accuracy and total time the difference of means, Cohen's d and Welch's p; for times to "
        "target the Kaplan-Meier medians, ERTs and the log-rank test (censored runs included; its p is exact, "
        "from every relabelling of the pooled runs, up to 10 runs against 10, else from 10,000 relabellings drawn "
        "with seed 0, or asymptotic when both have 30 runs or more; Holm-adjusted over every pair at the same "
        "target). P(A better than B) "
        "is the probability that a random run of A beats a random run of B (ties half; a missing accuracy or an "
        "unreached target loses; Bouthillier et al. 2021), with a bootstrap interval.",
        rank,
        coverage_paragraph(),
    ]


def coverage_paragraph() -> str:
    """How often the 95 % intervals held the true value on simulated studies (robust.MEASURED_COVERAGE)."""
    at = " / ".join(str(n) for n in robust.MEASURED_AT)
    held = "; ".join(f"{k} {' / '.join(str(math.floor(c + 0.5)) for c in v)} %"
                     for k, v in robust.MEASURED_COVERAGE.items())
    return (f"How sure the intervals are, measured (benchmarks/coverage.py; docs/reports.md): on simulated studies "
            f"with 10 % of runs diverging, the 95 % intervals held the true value at {at} seeds per configuration "
            f"in: {held}. Where a configuration's runs never failed, its ERT interval cannot show a failure rate and "
            f"is too narrow at few seeds; the IQM, not the mean, is the accuracy interval to read.")


def _reached(row, p) -> str:
    """k/n: how many of the configuration's timed runs reached p %."""
    k, n = schema.time_to_target(p), row["n_timed"]
    return "-" if n == 0 else f"{round(row[f'{k}_reached'] * n)}/{n}"


def _olympic_or_mean(row, m, pct) -> str:
    o = row.get(f"{m}_olympic_mean", math.nan)  # times only (stats.TIME_METRICS)
    return f"{pct(row[f'{m}_mean'], row[f'{m}_ci_low'], row[f'{m}_ci_high'], 1.0)}" + \
        (f" (olympic {o:.1f})" if not math.isnan(o) else "")


def _target_cell(r, p, pct) -> str:
    """KM median [CI] · ERT (k/n) for one target."""
    k = schema.time_to_target(p)
    ert = r[f"{k}_ert"]
    return f"{fmt.ci(r, f'{k}_median', pct, 1.0)} · ERT {fmt.ert(ert)} ({_reached(r, p)})"


def _ranking_rows(rank, main_p, pct, clock: Clock) -> list[dict]:
    rows, sec = [], fmt.seconds(clock)
    for _, r in rank.iterrows():
        row = {"rank": r["rank"] or "not ranked", "rank_by": r["rank_by"], "configuration": r["configuration"],
               "hardware": r[stats.HARDWARE], "n (timed)": f"{r['n_runs']} ({r['n_timed']})"}
        if main_p is not None:
            k = schema.time_to_target(main_p)
            row[f"reached {main_p:g} %"] = _reached(r, main_p)
            row[f"ERT to {main_p:g} % {sec}"] = fmt.ci(r, f"{k}_ert", pct, 1.0) if r["n_timed"] else "-"
            row[f"median to {main_p:g} % {sec}"] = fmt.ci(r, f"{k}_median", pct, 1.0)
        row["profile score"] = fmt.num(r["profile_score"], 3)
        row["best test acc % IQM"] = fmt.ci(r, "best_test_acc_iqm", pct)
        row["rank by accuracy"] = r["rank_best_acc"]
        rows.append(row)
    return rows


def _fewer(r) -> str:
    """Where an accuracy statistic used fewer runs than n (a NaN or invalid value): its own n."""
    parts = [f"{w} n = {r[f'{m}_n']}" for m, w in ((schema.BEST_ACC, "best acc"), (schema.FINAL_ACC, "final acc"))
             if f"{m}_n" in r and r[f"{m}_n"] != r["n_runs"]]
    return f"; {', '.join(parts)}" if parts else ""


def _summary_rows(summ, targets, pct, clock: Clock) -> list[dict]:
    rows, epoch_sec = [], fmt.seconds(EPOCH)  # s / epoch and totals stay on the epoch clock under --clock train
    for _, r in summ.iterrows():
        row = {"configuration": r["configuration"], "hardware": r[stats.HARDWARE],
               "n (timed)": f"{r['n_runs']} ({r['n_timed']})" + _fewer(r),
               "best acc %": pct(r.best_test_acc_mean, r.best_test_acc_ci_low, r.best_test_acc_ci_high),
               "best acc % IQM": fmt.ci(r, "best_test_acc_iqm", pct),
               "final acc % IQM": fmt.ci(r, "final_test_acc_iqm", pct),
               **{_header(m, header): _olympic_or_mean(r, m, pct) for m, header in schema.PER_EPOCH_MEANS.items()},
               f"total IQM {epoch_sec}": fmt.ci(r, "total_time_s_iqm", pct, 1.0)}
        for p in targets:
            row[f"to {p:g} % {fmt.seconds(clock)}"] = _target_cell(r, p, pct)
        rows.append(row)
    return rows


def _header(m: str, header: str) -> str:
    """A per-epoch mean's header, with the clock of its seconds: "s / epoch (epoch clock)"."""
    return f"{header} ({EPOCH.label})" if m in fmt.EPOCH_CLOCK_METRICS else header


def _comparison_rows(comp, main_p, clock: Clock) -> list[dict]:
    rows = []
    shown = {schema.BEST_ACC, schema.TOTAL_TIME} | ({schema.time_to_target(main_p)} if main_p is not None else set())
    for _, c in comp[comp["metric"].isin(shown)].iterrows() if len(comp) else ():
        acc, ttt = c["metric"] == schema.BEST_ACC, schema.is_time_to_target(c["metric"])
        scale, d = (100.0, 2) if acc else (1.0, 1)
        p_ci = "" if math.isnan(c["p_A_better_ci_low"]) else \
            f" [{c['p_A_better_ci_low']:.2f}, {c['p_A_better_ci_high']:.2f}]"
        rows.append({"factor": c["factor"], "A": c["A"], "B": c["B"], "other params": c["others"],
                     "metric": c["metric"] + (" (%)" if acc else " " + fmt.seconds(clock if ttt else EPOCH)),
                     "n A/B": f"{c['reached_A']}/{c['n_A']} vs {c['reached_B']}/{c['n_B']} reached" if ttt
                     else f"{c['n_A']}/{c['n_B']}",
                     "mean or KM median A": fmt.num(scale * (c["median_A"] if ttt else c["mean_A"]), d),
                     "mean or KM median B": fmt.num(scale * (c["median_B"] if ttt else c["mean_B"]), d),
                     "A - B or ERT A / B": f"{fmt.ert(c['ert_A'])} / {fmt.ert(c['ert_B'])}" if ttt
                     else fmt.num(scale * c["diff_A_minus_B"], d),
                     "Cohen's d": "-" if ttt else fmt.num(c["cohens_d"], 2),
                     "p (Welch; log-rank)": _logrank_cell(c) if ttt else fmt.num(c["welch_p"], 3),
                     "P(A better) [CI]": fmt.num(c["p_A_better"], 2) + p_ci})
    return rows


def _logrank_cell(c) -> str:
    """A comparison's log-rank p, its method when not exact, and its Holm-adjusted p (comparisons.csv)."""
    if math.isnan(c["logrank_p"]):
        return fmt.num(c["logrank_p"], 3)
    how = "" if c["logrank_method"] == significance.EXACT else f", {c['logrank_method']}"
    return f"{fmt.num(c['logrank_p'], 3)}{how}; Holm {fmt.num(c['logrank_p_holm'], 3)}"


def ranking_caption(main_p: float | None, clock: Clock) -> str:
    """The Ranking table's criterion, in words (rank_by gives it per configuration)."""
    n = ranking.MIN_RANKED_N
    how = (f"Configurations with at least {n} timed runs that reached {main_p:g} % (the ranking target) first, by "
           f"ERT to {main_p:g} % on the {clock.label}; then those that did not reach it, by the IQM of best test "
           f"accuracy; configurations with fewer than {n} timed runs are listed, not ranked."
           if main_p is not None else
           f"No ranking target: configurations with at least {n} accuracies are ranked by the IQM of best test "
           f"accuracy.")
    return how + " rank_by: the criterion that placed each row. =k: a shared rank (intervals linked by a chain " \
        "of overlaps). " \
        "[ ]: 95 % bootstrap intervals, ∞: unbounded or never reached."


def tables(n: stats.Numbers, pct=fmt.pct) -> tuple[list, list]:
    """The report's tables: (main, appendix). Every header of seconds names its clock (fmt.seconds)."""
    f, runs, main_p, clk = n.fetched, n.runs, n.main_p, n.clock
    r_rows, s_rows = _ranking_rows(n.ranking, main_p, pct, clk), _summary_rows(n.summary, n.targets, pct, clk)
    c_rows = _comparison_rows(n.comparisons, main_p, clk)

    def frame(rows, cols=None) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=cols).astype(str) if rows or cols else pd.DataFrame()

    left_out = runs.loc[runs["time_excluded"] != "", ["run_id", "run_name", "configuration", "time_excluded"]]
    main = [
        render.Table("ranking", "Ranking", ranking_caption(main_p, clk), frame(r_rows)),
        render.Table("summary", "Summary per configuration",
                     "Mean [95 % t-interval] and IQM [95 % bootstrap interval] across seeds; per target: Kaplan-Meier "
                     "median [95 % interval] · ERT (k/n timed runs that reached it). Full precision, with every "
                     "column: summary.csv (reports/README.md). What the intervals cover at few seeds, measured: "
                     "Method.", frame(s_rows)),
    ]
    appendix = [
        render.Table("comparisons", "One-factor comparisons",
                     "Pairs of configurations that differ in one param only, on best accuracy, total time and time to "
                     "the ranking's target (comparisons.csv has every target and every digit). Times to target are "
                     "censored data: Kaplan-Meier medians, ERTs and the log-rank test (exact permutation p unless "
                     "marked Monte Carlo or asymptotic; Holm: adjusted over every pair at that target); P(A better) "
                     "counts an unreached run as the slowest.", frame(c_rows, None if c_rows else ["factor", "A", "B"])),
        render.Table("time-excluded", "Runs left out of time statistics",
                     "Counted runs whose seconds are not used by any time statistic (KM, ERT, reached, log-rank, "
                     "P(A better), means and IQMs of times): resumed on other hardware than they started on (tag "
                     "hardware_changed, the device_names in order), an invalid value, or an epoch without a value "
                     "on the report's clock. Their accuracy counts unless it is invalid.",
                     left_out.rename(columns={"time_excluded": "reason"}).astype(str)),
        render.Table("invalid", "Runs with invalid metrics",
                     "Values that are not finite or out of range (an accuracy outside [0, 1], a negative time, an "
                     "elapsed_time_s that goes down): never averaged. An invalid accuracy leaves the run out of the "
                     "accuracy statistics and, since times to target are read off it, of the time statistics; an "
                     "invalid time leaves it out of the time statistics. A logged best or final accuracy that its "
                     "per-epoch test_acc does not give is listed with both values; the history's is used.",
                     invalid_rows(f, runs).astype(str)),
        render.Table("excluded", "Runs excluded", "Runs in scope that do not count, and why.",
                     f.excluded.sort_values(["run_name", "status", "reason", "run_id"], kind="stable")
                     .astype(str)),
        render.Table("incomplete", "Runs missing some metrics",
                     "Counted FINISHED runs that lack some per-epoch or summary metrics (older or resumed runs); "
                     "summaries missing from MLflow are computed from the per-epoch history.",
                     in_run_order(f.incomplete, runs).astype(str)),
    ]
    return main, appendix + _not_recorded_table(f, runs)


def _not_recorded_facts(f) -> list[tuple[str, str]]:
    """A Scope line only when some counted run was logged before a metric existed (fetch.Fetched.not_recorded):
    per metric, how many runs its version did not record; they are not missing."""
    if not len(f.not_recorded):
        return []
    per = f.not_recorded["not_recorded"].str.split(", ").explode().value_counts()
    said = "; ".join(f"{m} (added in record version {schema.METRIC_SINCE[m]}) by {n} run{'s' * (n != 1)}"
                     for m, n in sorted(per.items()))
    return [("not recorded by this version", f"{said}: logged by an older version, so not counted as missing "
                                             "(listed in the appendix)")]


def _not_recorded_table(f, runs) -> list:
    if not len(f.not_recorded):
        return []  # no metric is newer than a counted run: the appendix is as it was
    return [render.Table("not-recorded", "Metrics not recorded by this version",
                         f"Counted FINISHED runs logged by an older record version (tag {schema.RECORD_VERSION_TAG}; "
                         f"a run without it is version {schema.FIRST_RECORD_VERSION}) than the metrics named: the "
                         "code that logged them did not have those metrics yet. They are not missing, and not in "
                         "\"Runs missing some metrics\".", in_run_order(f.not_recorded, runs).astype(str))]
