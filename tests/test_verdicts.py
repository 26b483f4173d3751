"""The report's verdicts (issue 11): hardware-aware configurations, times to target as censored data,
performance profiles, IQM with a seeded bootstrap, and a ranking that does not crown n = 1. Runs are logged
by the test into a real SQLite MLflow store; every expected number is worked out by hand below (the same
runs and numbers as the worked example in docs/reports.md)."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import time

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from googlenet_study import report
from googlenet_study.cli import main as cli_main
from googlenet_study.config import RunConfig, UserError
from googlenet_study.engine import Hooks
from googlenet_study.report import fetch, stats, text
from googlenet_study.statistics import clock, profiles, ranking, robust
from googlenet_study.statistics.clock import EPOCH, TRAIN
from googlenet_study.train import RunOptions, train

from helpers import ROOT, new_store
from helpers.runs import EXAMPLE, H100, T4, TARGETS, log_run

B32_H100, B64_H100 = f"batch_size=32, hardware={H100}", f"batch_size=64, hardware={H100}"
B32_T4, B128_H100 = f"batch_size=32, hardware={T4}", f"batch_size=128, hardware={H100}"
B16_H100 = f"batch_size=16, hardware={H100}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdicts")
    uri = new_store(root / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("example")
    ids = [log_run(c, exp, f"run-{i}", accs, sec, hw, seed=i, batch_size=b, **tags)
           for i, (b, hw, sec, accs, tags) in enumerate(EXAMPLE)]
    one = c.create_experiment("one-config")  # two runs, equal params, two GPUs of one host
    for i, dev in enumerate(("cuda:0", "cuda:1")):
        log_run(c, one, f"gpu{i}", [0.5, 0.7], 8.0 + i, H100, seed=i, device=dev)
    return {"uri": uri, "root": root, "ids": ids}


@pytest.fixture(scope="module")
def example(store):
    f = fetch.fetch("example", uri=store["uri"], cache_dir="off")
    n = stats.numbers(f, TARGETS, EPOCH)
    return {"n": n, "runs": n.runs, "varying": n.varying, "summ": n.summary.set_index("configuration"),
            "comp": n.comparisons, "rank": n.ranking.set_index("configuration"), "main_p": n.main_p}


def test_equal_params_on_two_kinds_of_hardware_are_two_configurations_named_by_their_hardware(example):
    s = example["summ"]
    assert set(s.index) == {B32_H100, B64_H100, B32_T4, B128_H100, B16_H100}
    assert s.loc[B32_T4, "hardware"] == T4 and s.loc[B32_H100, "hardware"] == H100
    assert s.loc[B32_T4, "batch_size"] == s.loc[B32_H100, "batch_size"] == 32
    assert "hardware" in example["varying"]
    facts = dict(text.scope_facts(example["n"]))
    assert facts["hardware per configuration"] == \
        f"{H100}: batch_size=16, batch_size=32, batch_size=64, batch_size=128; {T4}: batch_size=32"
    assert "HARDWARE POOLED" not in facts


def test_pool_hardware_makes_one_configuration_and_the_report_says_so_at_the_top(store):
    f = fetch.fetch("example", uri=store["uri"], cache_dir="off")
    n = stats.numbers(f, TARGETS, EPOCH, pool_hardware=True)
    summ = n.summary
    assert list(summ["configuration"]) == ["batch_size=16", "batch_size=32", "batch_size=64", "batch_size=128"]
    assert summ.loc[1, "hardware"] == f"{H100} + {T4}" and summ.loc[1, "n_runs"] == 6
    facts = text.scope_facts(n)
    assert facts[0][0] == "HARDWARE POOLED" and "--pool-hardware" in facts[0][1]


def test_cuda_0_and_cuda_1_of_one_host_are_one_configuration(store):
    f = fetch.fetch("one-config", uri=store["uri"], cache_dir="off")
    n = stats.numbers(f, TARGETS, EPOCH)
    runs, varying, summ = n.runs, n.varying, n.summary
    assert set(runs["device"]) == {"cuda"} and varying == []
    assert len(summ) == 1 and summ.loc[0, "n_runs"] == 2


def test_a_run_resumed_on_other_hardware_is_left_out_of_times_with_its_reason(example, store):
    runs = example["runs"].set_index("run_id")
    moved = runs.loc[store["ids"][8]]
    assert moved["time_excluded"] == f'resumed on other hardware: ["{H100}", "{T4}"]'
    assert math.isnan(moved["total_time_s"]) and math.isnan(moved["time_to_test_acc_50"])
    assert bool(moved["reached_80"])  # its accuracy still counts ...
    s = example["summ"].loc[B32_T4]
    assert s["n_runs"] == 3 and s["n_timed"] == 2
    assert s["best_test_acc_mean"] == pytest.approx(np.mean([0.90, 0.82, 0.88]))
    assert s["total_time_s_mean"] == pytest.approx(120.0)  # ... its 4 x 20 s do not
    appendix = text.tables(example["n"])[1]
    listed = next(t for t in appendix if t.id == "time-excluded").frame
    assert list(listed["run_id"]) == [store["ids"][8]] and "resumed on other hardware" in listed["reason"].iloc[0]


def test_censored_times_give_the_kaplan_meier_median_and_ert_computed_by_hand(example):
    s = example["summ"]
    a = s.loc[B32_H100]  # 50 %: 20, 10, 20 s; 80 %: 30, 40 s and one censored at 40 s
    assert a["time_to_test_acc_50_reached"] == 1.0
    assert a["time_to_test_acc_50_median"] == 20.0  # S(10) = 2/3, S(20) = 0
    assert a["time_to_test_acc_50_ert"] == pytest.approx(50 / 3)
    # The log-log band at S(10) = 2/3 (n = 3) spans about [0.05, 0.94]; at 20 s S = 0, where the band is 0.
    assert (a["time_to_test_acc_50_median_ci_low"], a["time_to_test_acc_50_median_ci_high"]) == (10.0, 20.0)
    assert a["time_to_test_acc_80_reached"] == pytest.approx(2 / 3)
    assert a["time_to_test_acc_80_median"] == 40.0  # S(30) = 2/3, S(40) = 2/3 * 1/2 = 1/3
    assert a["time_to_test_acc_80_ert"] == pytest.approx((30 + 40 + 40) / 2)
    assert a["time_to_test_acc_80_mean_reached"] == pytest.approx(35.0)
    b = s.loc[B64_H100]  # 80 %: one of three at 24 s, two censored at 24 s
    assert b["time_to_test_acc_50_median"] == 12.0 and b["time_to_test_acc_50_ert"] == pytest.approx(12.0)
    assert math.isnan(b["time_to_test_acc_80_median"])  # fewer than half reached it
    assert b["time_to_test_acc_80_ert"] == pytest.approx(72.0)
    t4 = s.loc[B32_T4]  # two timed runs: 50 % at 60 and 30 s; 80 % at 90 and 120 s
    assert t4["time_to_test_acc_50_median"] == 30.0 and t4["time_to_test_acc_50_ert"] == pytest.approx(45.0)
    assert t4["time_to_test_acc_80_median"] == 90.0 and t4["time_to_test_acc_80_ert"] == pytest.approx(105.0)
    lo, hi = a["time_to_test_acc_80_median_ci_low"], a["time_to_test_acc_80_median_ci_high"]
    assert lo == 30.0 and math.isnan(hi)  # the band's upper edge never falls to 1/2: unbounded above
    # Comparisons of times use the censored data: the log-rank test, never Welch on the survivors.
    c = example["comp"]
    row = c[(c["configuration_A"] == B32_H100) & (c["configuration_B"] == B64_H100)
            & (c["metric"] == "time_to_test_acc_50")].iloc[0]
    assert math.isnan(row["welch_p"]) and math.isnan(row["mean_A"]) and 0 < row["logrank_p"] <= 1
    assert row["p_A_better"] == pytest.approx(2 / 9)  # A's 10 s beats B's 12 and 18 s; nothing else wins
    assert (row["median_A"], row["median_B"], row["ert_B"]) == (20.0, 12.0, pytest.approx(12.0))


def test_the_train_clock_counts_training_seconds_only(store):
    f = fetch.fetch("example", uri=store["uri"], cache_dir="off")
    n = stats.numbers(f, TARGETS, TRAIN)
    a = n.summary.set_index("configuration").loc[B32_H100]
    assert a["time_to_test_acc_50_median"] == pytest.approx(0.75 * 20.0)
    assert a["time_to_test_acc_80_ert"] == pytest.approx(0.75 * 55.0)
    assert n.clock == TRAIN and "clock" not in f.source  # the clock is the numbers', not the fetch's
    with pytest.raises(UserError, match="--clock: got 'wall'; allowed: epoch | train"):
        clock.parse("wall")


def test_profile_score_of_three_configurations_by_hand():
    # ERTs (s) on two workloads (targets 50 and 80): a is fastest at 50, b at 80; c never reaches 80.
    summ = pd.DataFrame({"configuration": ["a", "b", "c"], "model": "googlenet", "dataset": "digits",
                         "time_to_test_acc_50_ert": [10.0, 20.0, 30.0],
                         "time_to_test_acc_80_ert": [50.0, 40.0, math.nan]})
    # r: a (1, 1.25), b (2, 1), c (3, inf); score = mean over workloads of max(0, 4 - r) / 3.
    expected = {"a": (3 + 2.75) / 6, "b": (2 + 3) / 6, "c": (1 + 0) / 6}
    assert profiles.profile_scores(summ, TARGETS).tolist() == pytest.approx(list(expected.values()))
    prof = profiles.performance_profile(summ, TARGETS, taus=[1.0, 1.25, 2.0, 3.0, 4.0]).set_index(["configuration", "tau"])
    assert prof.loc[("a", 1.0), "rho"] == 0.5 and prof.loc[("a", 1.25), "rho"] == 1.0
    assert prof.loc[("c", 3.0), "rho"] == 0.5 and prof.loc[("c", 4.0), "rho"] == 0.5
    fine = profiles.performance_profile(summ, TARGETS)  # the default grid: its area agrees with the score
    for cfg, g in fine.groupby("configuration"):
        area = np.sum(g["rho"].to_numpy()[:-1] * np.diff(g["tau"].to_numpy())) / 3
        assert area == pytest.approx(expected[cfg], abs=0.01)


def test_iqm_and_its_bootstrap_interval_are_identical_across_two_builds(example, store):
    s = example["summ"].loc[B32_H100]
    assert s["best_test_acc_iqm"] == pytest.approx(np.mean([0.90, 0.82, 0.75]))  # n = 3 cuts int(3/4) = 0
    assert s["best_test_acc_iqm_ci_low"] <= s["best_test_acc_iqm"] <= s["best_test_acc_iqm_ci_high"]
    assert 0.75 <= s["best_test_acc_iqm_ci_low"] < s["best_test_acc_iqm_ci_high"] <= 0.90
    again = stats.numbers(fetch.fetch("example", uri=store["uri"], cache_dir="off"), TARGETS, EPOCH)
    for mine, theirs in ((example["summ"].reset_index(), again.summary), (example["comp"], again.comparisons)):
        assert mine.to_csv(index=False) == theirs.to_csv(index=False)  # byte for byte
    row = example["comp"].dropna(subset=["p_A_better_ci_low"]).iloc[0]
    assert row["p_A_better_ci_low"] <= row["p_A_better"] <= row["p_A_better_ci_high"]


def test_comparisons_csv_without_pairs_still_has_its_header(store):
    f = fetch.fetch("one-config", uri=store["uri"], cache_dir="off")
    comp = stats.numbers(f, TARGETS, EPOCH).comparisons
    back = pd.read_csv(io.StringIO(comp.to_csv(index=False)))
    assert back.empty and list(back.columns) == list(stats.COMPARISON_COLUMNS)


def test_a_configuration_with_one_run_is_listed_not_ranked_and_overlaps_share_a_rank(example):
    r, s = example["rank"], example["summ"]
    # Batch 128's one run (5 s to 50 %, 10 s to 80 %) dominates every other configuration: it alone is the
    # front, and it reached 80 %. (Among the rankable ones only, batch 64's 1 in 3 would have meant 50 %.)
    assert example["main_p"] == 80.0
    assert r.loc[B128_H100, "rank"] == "" and list(r.index)[-1] == B128_H100  # fastest, but n = 1
    assert math.isnan(s.loc[B128_H100, "time_to_test_acc_50_median_ci_low"])  # one run: no interval
    # ERT to 80 %: 55 [30, ∞) < 72 [24, ∞) < 105 [90, 120] s: a chain of overlaps, one shared rank.
    assert (r.loc[B32_H100, "rank"], r.loc[B64_H100, "rank"], r.loc[B32_T4, "rank"]) == ("=1", "=1", "=1")
    assert list(r.index)[:3] == [B32_H100, B64_H100, B32_T4]
    assert r.loc[B16_H100, "rank"] == "4"  # never reached 80 %: after, by accuracy
    # Best ERTs 5 s (50 %) and 10 s (80 %), both batch 128's: r = (3.33, 5.5), (2.4, 7.2), (9, 10.5), (1, 1).
    scores = [s.loc[c, "profile_score"] for c in (B32_H100, B64_H100, B32_T4, B128_H100)]
    assert scores == pytest.approx([(4 - 50 / 3 / 5) / 6, (4 - 2.4) / 6, 0.0, 1.0])
    assert s.loc[B32_T4, "best_test_acc_iqm"] == pytest.approx(np.mean([0.90, 0.82, 0.88]))
    assert s.loc[B32_T4, "rank"] == "=1" and (pd.isna(s.loc[B128_H100, "rank"]) or s.loc[B128_H100, "rank"] == "")


def test_missing_values_lose_in_the_direction_of_the_metric():
    assert robust.prob_better([math.nan, 0.9], [0.5, 0.6], higher_is_better=True) == pytest.approx(0.5)
    assert robust.prob_better([math.nan], [100.0], higher_is_better=False) == 0.0
    summ = pd.DataFrame({"configuration": ["a", "b"], "n_runs": [3, 3], "best_test_acc_mean": [math.nan, 0.1],
                         "best_test_acc_iqm": [math.nan, 0.1], "best_test_acc_iqm_ci_low": [math.nan, 0.05],
                         "best_test_acc_iqm_ci_high": [math.nan, 0.15], "profile_score": [math.nan, 0.0],
                         "time_to_test_acc_50_reached": [0.0, 0.0], "time_to_test_acc_50_ert": [math.nan, math.nan]})
    r, p = ranking.ranking(summ, (50.0,), EPOCH)
    assert p is None and list(r["configuration"]) == ["b", "a"] and list(r["rank_best_acc"]) == [1, 2]


@pytest.mark.slow  # seconds of CPU (3-15 s): the full suite runs it, `make test-fast` does not
def test_the_command_line_report_pools_on_request_and_its_csvs_carry_hardware_and_times(store, tmp_path, capsys,
                                                                                       no_pdf):
    out = tmp_path / "rep"
    assert cli_main(["report", "--experiment", "example", "--targets", "50,80", "--pool-hardware", "--clock", "train",
                     "--tracking-uri", store["uri"], "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert html.index("HARDWARE POOLED") < html.index("experiment</dt>")  # the first line of Scope
    assert "train: cumulative train_time_s" in html
    r = pd.read_csv(out / "runs.csv")
    assert {"device_name", "host", "hardware", "time_to_test_acc_80", "reached_80"} <= set(r.columns)
    first = r.drop_duplicates("run_id").set_index("run_name")
    assert first.loc["run-0", "time_to_test_acc_80"] == 0.75 * 30.0 and bool(first.loc["run-0", "reached_80"])
    assert math.isnan(first.loc["run-2", "time_to_test_acc_80"]) and not first.loc["run-2", "reached_80"]
    assert (first.loc["run-0", "device_name"], first.loc["run-0", "hardware"]) == (H100, f"{H100} + {T4}")
    assert r["batch_size"].dtype.kind == "i" and r["train_size"].isna().all()
    s = pd.read_csv(out / "summary.csv")
    assert {"hardware", "rank", "profile_score", "best_test_acc_iqm_ci_high", "time_to_test_acc_50_ert"} <= set(s.columns)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    readme = (ROOT / "reports" / "README.md").read_text()
    documented = {re.sub(r"_P(?=_|$)", "_50", t) for t in re.findall(r"`([A-Za-z_0-9]+)`", readme)}
    documented |= {t.replace("_50", "_80") for t in documented}
    assert [c for c in s.columns if c not in fields and c not in documented] == []


@pytest.mark.slow  # trains, twice
def test_resuming_on_other_hardware_records_hardware_changed(tiny_cfg, tracking_uri, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, epochs=1, batch_size=10, train_size=10, test_size=10)  # one batch
    first = train(cfg, tracking_uri, "moved", RunOptions(hooks=Hooks(should_stop=lambda: True), checkpoint_dir=tmp_path / "ck"))
    assert first.status == "KILLED"
    c = MlflowClient(tracking_uri)
    here = c.get_run(first.run_id).data.tags["device_name"]
    c.set_tag(first.run_id, "device_name", T4)  # as if it had started on another machine
    second = train(cfg, tracking_uri, "moved", RunOptions(checkpoint_dir=tmp_path / "ck"))
    assert second.run_id == first.run_id and second.status == "FINISHED"
    tags = c.get_run(first.run_id).data.tags
    assert json.loads(tags["hardware_changed"]) == [T4, here] and tags["device_name"] == here


# ---- issue 17: verdicts that hold with losers, lost clocks, NaNs and re-logged runs ------------------------
def test_a_loser_ranks_after_every_configuration_that_reached_the_target_and_removing_it_changes_nothing(example):
    r, s = example["rank"], example["summ"]
    # Batch 16 reached 50 % once in 3 runs (ERT (32 + 32 + 16) / 1 = 80 s), 80 % never: dominated by batch 32
    # on the H100 (16.7 and 55 s), so it cannot move the ranking target, 80 %.
    assert s.loc[B16_H100, "time_to_test_acc_50_ert"] == pytest.approx(80.0)
    assert s.loc[B16_H100, "time_to_test_acc_50_ert_ci_low"] == 16.0  # and unbounded above:
    assert math.isnan(s.loc[B16_H100, "time_to_test_acc_50_ert_ci_high"]) and math.isnan(
        s.loc[B16_H100, "time_to_test_acc_50_median"])
    assert s.loc[B16_H100, "best_test_acc_iqm"] == pytest.approx(0.49) and s.loc[B16_H100, "profile_score"] == 0.0
    assert math.isnan(s.loc[B16_H100, "time_to_test_acc_80_ert"]) and example["main_p"] == 80.0
    assert list(r.index) == [B32_H100, B64_H100, B32_T4, B16_H100, B128_H100]
    assert list(r["rank_by"])[:4] == ["ERT to 80 % (epoch clock)"] * 3 + ["accuracy: did not reach 80 %"]
    assert r.loc[B128_H100, "rank_by"] == "not ranked: 1 timed run (< 2)"
    without, p = ranking.ranking(example["summ"].drop(index=B16_H100).reset_index(), TARGETS, EPOCH)
    assert p == 80.0 and list(without["configuration"]) == [c for c in r.index if c != B16_H100]
    assert list(without["rank"]) == [x for c, x in r["rank"].items() if c != B16_H100]


def test_under_the_train_clock_a_run_without_train_time_s_is_left_out_of_every_time_statistic(store):
    f = fetch.fetch("example", uri=store["uri"], cache_dir="off")
    n = stats.numbers(f, TARGETS, TRAIN)
    runs, summ, comp, rank, p = n.runs, n.summary, n.comparisons, n.ranking, n.main_p
    lost = runs.set_index("run_name").loc["run-12"]
    assert lost["time_excluded"] == "no train_time_s at some epoch (--clock train)"
    assert math.isnan(lost["time_to_test_acc_50"]) and bool(lost["reached_50"])  # its accuracy still counts
    b16 = summ.set_index("configuration").loc[B16_H100]
    assert (b16["n_runs"], b16["n_timed"], b16["time_to_test_acc_50_reached"]) == (3, 2, 0.0)  # 0/2, not 1/3
    assert math.isnan(b16["time_to_test_acc_50_ert"]) and b16["best_test_acc_mean"] == pytest.approx(0.49)
    assert rank.set_index("configuration").loc[B16_H100, "rank_by"] == "accuracy: did not reach 80 %"
    assert list(rank["configuration"])[-2:] == [B16_H100, B128_H100] and p == 80.0
    row = comp[(comp["configuration_A"] == B16_H100) & (comp["configuration_B"] == B32_H100)
               & (comp["metric"] == "time_to_test_acc_50")].iloc[0]
    assert (row["n_A"], row["reached_A"], row["n_B"]) == (2, 0, 3) and row["p_A_better"] == 0.0
    # On the epoch clock the same run is timed: 1 of 3 reached 50 %, ERT 80 s.
    e = stats.numbers(fetch.fetch("example", uri=store["uri"], cache_dir="off"), TARGETS, EPOCH).summary
    b16e = e.set_index("configuration").loc[B16_H100]
    assert b16e["n_timed"] == 3 and b16e["time_to_test_acc_50_reached"] == pytest.approx(1 / 3)


def test_the_worked_examples_verdict_is_the_one_docs_reports_md_quotes(example):
    """docs, code and the worked example say the same (issue 24, item 5): the quoted sentences are the
    verdict's, all but its second (the ERT ratio and log-rank p of the next configuration)."""
    from googlenet_study.report import verdict

    words = verdict.verdict(example["rank"].reset_index(), example["runs"], example["main_p"], EPOCH)
    section = (ROOT / "docs" / "reports.md").read_text().split("### A worked example", 1)[1].split("\n## ", 1)[0]
    quoted = [line[2:] for line in section.splitlines() if line.startswith("> ")]  # the worked example's only
    assert words[1].startswith("The next, batch_size=64, hardware=NVIDIA H100 80GB HBM3, is expected to take")
    assert [w for i, w in enumerate(words) if i != 1] == quoted
