"""Small studies that broke the report (issue 17): a configuration with no timed run beside a one-param
neighbour, NaN accuracies, impossible values, and the same runs logged into two stores. Each is logged into a
real SQLite MLflow store; the expected numbers are worked out by hand in the tests."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from helpers import new_store
from helpers.runs import H100, T4, TARGETS, log_run

from googlenet_study import report
from googlenet_study.report import fetch, stats, text
from googlenet_study.statistics.clock import EPOCH


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return {"uri": new_store(tmp_path_factory.mktemp('hard') / "mlflow.db")}


@pytest.fixture(scope="module")
def hard(store):
    """Small studies that broke the report (issue 17), each its own experiment in the module's store."""
    c = MlflowClient(store["uri"])
    crash = c.create_experiment("crash")  # one config's only run resumed on other hardware, beside a config
    log_run(c, crash, "moved", [0.5, 0.9], 10.0, T4, seed=0, batch_size=32, hardware_changed=[H100, T4])
    for i in range(2):                    # that differs from it in one param
        log_run(c, crash, f"b64-{i}", [0.5, 0.9], 10.0 + i, T4, seed=i, batch_size=64)
    nan = c.create_experiment("nan")
    log_run(c, nan, "nan-final", [0.6, 0.8, math.nan], 10.0, H100, seed=0, summary={"final_test_acc": math.nan})
    log_run(c, nan, "nan-history", [0.6, 0.7, math.nan], 10.0, H100, seed=1, drop=("final_test_acc", "best_test_acc"))
    log_run(c, nan, "all-nan", [math.nan] * 3, 10.0, H100, seed=2, drop=("best_test_acc", "final_test_acc"))
    log_run(c, nan, "fine", [0.5, 0.6, 0.7], 10.0, H100, seed=3)
    bad = c.create_experiment("invalid")
    log_run(c, bad, "inf", [0.5, math.inf, 0.7], 10.0, H100, seed=0, summary={"best_test_acc": math.inf})
    log_run(c, bad, "minus-one", [0.5, -1.0, 0.7], 10.0, H100, seed=1, summary={"best_test_acc": 0.7})
    log_run(c, bad, "clock-back", [0.5, 0.6, 0.7], 10.0, H100, seed=2, per_epoch={"elapsed_time_s": [10.0, -5.0, 30.0]})
    log_run(c, bad, "fine-1", [0.5, 0.6, 0.8], 10.0, H100, seed=3)
    log_run(c, bad, "fine-2", [0.5, 0.7, 0.9], 12.0, H100, seed=4)
    return store


def test_a_configuration_whose_only_run_is_untimed_beside_a_one_param_neighbour_does_not_crash(hard):
    f = fetch.fetch("crash", uri=hard["uri"], cache_dir="off")
    n = stats.numbers(f, TARGETS, EPOCH)  # was: IndexError in stats.censored
    summ, comp, rank = n.summary, n.comparisons, n.ranking
    moved = summ.set_index("configuration").loc["batch_size=32"]
    assert moved["n_timed"] == 0 and math.isnan(moved["profile_score"])  # no time at all: not a slow one
    assert rank.set_index("configuration").loc["batch_size=32", "rank"] == ""
    assert rank.set_index("configuration").loc["batch_size=32", "rank_by"] == "not ranked: 0 timed runs (< 2)"
    row = comp[comp["metric"] == "time_to_test_acc_80"].iloc[0]
    assert (row["n_A"], row["n_B"], row["reached_B"]) == (0, 2, 2) and math.isnan(row["logrank_p"])


def test_nan_final_accuracy_is_missing_never_an_earlier_epochs(hard):
    f = fetch.fetch("nan", uri=hard["uri"], cache_dir="off")
    n = stats.numbers(f, TARGETS, EPOCH)
    r, summ = n.runs.set_index("run_name"), n.summary
    assert math.isnan(r.loc["nan-final", "final_test_acc"])      # logged NaN: was 0.8 (pandas last() skips NaN)
    assert math.isnan(r.loc["nan-history", "final_test_acc"])    # from the history: the last epoch is NaN
    assert r.loc["nan-history", "best_test_acc"] == pytest.approx(0.7)
    s = summ.iloc[0]
    assert (s["n_runs"], s["best_test_acc_n"], s["final_test_acc_n"]) == (4, 3, 1)
    assert s["final_test_acc_mean"] == pytest.approx(0.7)  # "fine" only
    assert s["best_test_acc_mean"] == pytest.approx(np.mean([0.8, 0.7, 0.7]))  # all-nan has none
    # Tables without comparisons or a ranking target still say each statistic's own n.
    main = text.tables(dataclasses.replace(n, varying=[], comparisons=pd.DataFrame(columns=stats.COMPARISON_COLUMNS),
                                           main_p=None))[0]
    shown = next(t for t in main if t.id == "summary").frame
    assert shown["n (timed)"].iloc[0] == "4 (4); best acc n = 3, final acc n = 1"  # where a run was left out
    missing = f.incomplete.set_index("run_name")["missing"]
    assert "test_acc (NaN at every epoch)" in missing["all-nan"] and "final_test_acc (NaN)" in missing["nan-final"]


def test_impossible_values_are_listed_and_never_averaged_without_a_numpy_warning(hard):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # any numpy warning fails the test
        f = fetch.fetch("invalid", uri=hard["uri"], cache_dir="off")
        n = stats.numbers(f, TARGETS, EPOCH)
    runs, summ = n.runs, n.summary
    got = {(r.run_name, r.metric, None if pd.isna(r.epoch) else int(r.epoch)): r.value for r in f.invalid.itertuples()}
    assert got == {("inf", "test_acc", 2): math.inf, ("inf", "train_acc", 2): math.inf,  # stored as 1.8e308
                   ("inf", "best_test_acc", None): math.inf, ("minus-one", "test_acc", 2): -1.0,
                   ("minus-one", "train_acc", 2): -1.0, ("clock-back", "elapsed_time_s", 2): -5.0}
    r = runs.set_index("run_name")
    assert math.isnan(r.loc["inf", "best_test_acc"]) and math.isnan(r.loc["minus-one", "final_test_acc"])
    assert r.loc["clock-back", "best_test_acc"] == pytest.approx(0.7)  # a bad clock leaves its accuracy alone
    assert r.loc["clock-back", "time_excluded"] == "invalid elapsed_time_s"
    assert r.loc["inf", "time_excluded"] == "invalid test_acc, best_test_acc"
    s = summ.iloc[0]
    assert s["best_test_acc_mean"] == pytest.approx(np.mean([0.7, 0.8, 0.9]))  # was 6e307
    assert (s["best_test_acc_n"], s["n_timed"]) == (3, 2)
    appendix = text.tables(n)[1]
    listed = next(t for t in appendix if t.id == "invalid").frame
    assert set(listed["run_name"]) == {"inf", "minus-one", "clock-back"}


@pytest.mark.slow  # seconds of CPU (3-15 s): the full suite runs it, `make test-fast` does not
def test_the_same_runs_logged_into_two_stores_give_byte_identical_csvs(tmp_path, no_pdf):
    """Run ids are random per store; with equal seeds the bootstrap used to resample in run-id order."""
    csvs = []
    for store in ("a", "b"):
        uri = f"sqlite:///{tmp_path / store}.db"
        c = MlflowClient(uri)
        exp = c.create_experiment("twice")
        t0 = 1_700_000_000_000
        for i in range(16):  # 2 configurations x 8 runs, two of each seed, different numbers (with 2 runs
            accs = [0.3 + 0.011 * i, 0.5 + 0.013 * (i % 5), 0.6 + 0.017 * (i % 7)]  # a config's bounds never moved)
            log_run(c, exp, f"r{i}", accs, 5.0 + 0.7 * (i % 5), H100, seed=(i % 8) // 2, batch_size=16 * (1 + i // 8),
                start_time=t0 + i)
        n = stats.numbers(fetch.fetch("twice", uri=uri, cache_dir="off"), TARGETS, EPOCH)
        runs, epochs = report._tidy(n)  # runs.csv is their merge
        csvs.append((n.summary.to_csv(index=False), n.comparisons.to_csv(index=False),
                     runs.merge(epochs, on="run_id").drop(columns="run_id").to_csv(index=False)))
    assert csvs[0] == csvs[1]
