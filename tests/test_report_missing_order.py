"""Issue 24, items 6-8: missing is missing (best and final accuracy from the per-epoch history, a logged summary
that disagrees listed with both values), order-free tables and figures (the same runs in two stores, logged in
different orders), and SOURCE_DATE_EPOCH refused before anything heavy is imported."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from helpers import ROOT, new_store
from helpers.runs import EXAMPLE, H100, TARGETS, log_run

from googlenet_study import config, engine, schema
from googlenet_study.cli import main as cli_main
from googlenet_study.report import curves, fetch, stats, text
from googlenet_study.statistics.clock import EPOCH


# ---- 6. missing is missing --------------------------------------------------------------------------------
def test_the_engine_takes_best_over_the_finite_accuracies_and_final_from_the_last_epoch():
    def hist(accs):
        return [{schema.ACCURACY: a, schema.CLOCK: 10.0 * (i + 1)} for i, a in enumerate(accs)]

    s = engine.summarize(hist([math.nan, 0.6, 0.4]), ())
    assert s[schema.BEST_ACC] == 0.6 and s[schema.FINAL_ACC] == 0.4  # max() of [nan, ...] was nan
    s = engine.summarize(hist([0.5, 0.7, math.nan]), ())
    assert s[schema.BEST_ACC] == 0.7 and math.isnan(s[schema.FINAL_ACC])  # never an earlier epoch's
    assert math.isnan(engine.summarize(hist([math.nan, math.nan]), ())[schema.BEST_ACC])


@pytest.fixture(scope="module")
def disagreeing(tmp_path_factory):
    uri = new_store(tmp_path_factory.mktemp("disagree") / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("disagree")
    ids = {"final": log_run(c, exp, "final-logged", [0.5, 0.7, math.nan], 10.0, H100, seed=0,
                        summary={"final_test_acc": 0.74, "best_test_acc": 0.7}),
           "best": log_run(c, exp, "best-nan", [math.nan, 0.6, 0.8], 10.0, H100, seed=1,  # the old engine's max()
                       summary={"best_test_acc": math.nan}),
           "fine": log_run(c, exp, "fine", [0.5, 0.6, 0.9], 10.0, H100, seed=2)}
    return uri, ids


def test_a_logged_summary_never_overrides_its_history_and_is_listed_with_both_values(disagreeing):
    uri, ids = disagreeing
    f = fetch.fetch("disagree", uri=uri, cache_dir="off")
    s = f.logged_summary.set_index("run_id")
    assert math.isnan(s.loc[ids["final"], schema.FINAL_ACC])  # was the logged 0.74
    assert s.loc[ids["best"], schema.BEST_ACC] == 0.8          # was the logged NaN
    d = {(r.run_name, r.metric): r for r in f.disagreeing.itertuples()}
    assert set(d) == {("final-logged", "final_test_acc"), ("best-nan", "best_test_acc")}
    assert d["final-logged", "final_test_acc"].value == 0.74
    assert d["final-logged", "final_test_acc"].problem == \
        "disagrees with its history: logged 0.74, per-epoch test_acc gives none (NaN)"
    assert d["best-nan", "best_test_acc"].problem == \
        "disagrees with its history: logged nan, per-epoch test_acc gives 0.8"
    n = stats.numbers(f, TARGETS, EPOCH)
    r, summ = n.runs.set_index("run_name"), n.summary
    assert math.isnan(r.loc["final-logged", "final_test_acc"]) and r.loc["final-logged", "best_test_acc"] == 0.7
    assert (r["time_excluded"] == "").all()  # the history is sound: the run's times and best accuracy count
    assert summ.loc[0, "final_test_acc_n"] == 2 and summ.loc[0, "best_test_acc_n"] == 3
    main, appendix = text.tables(n)
    listed = next(t for t in appendix if t.id == "invalid").frame
    assert set(zip(listed["run_name"], listed["metric"])) == set(d)
    assert dict(text.scope_facts(n))["runs with invalid metrics"] == "2"


# ---- 7. order-free: the same runs in two stores, logged in different orders --------------------------------
def _tables_and_curves(uri: str) -> tuple:
    f = fetch.fetch("example", uri=uri, cache_dir="off")
    n = stats.numbers(f, TARGETS, EPOCH)
    runs, (main, appendix) = n.runs, text.tables(n)
    shown = {t.id: t.frame.drop(columns=[c for c in ("run_id",) if c in t.frame]).to_csv(index=False)
             for t in main + appendix}
    timed = curves.timed(runs, f.epochs, EPOCH)
    drawn = {"steps": curves.run_steps(runs, timed).drop(columns="run_id").to_csv(index=False),
             "epochs": curves.run_steps(runs, f.epochs, "epoch").drop(columns="run_id").to_csv(index=False),
             "mean": curves.mean_curve(runs, timed).to_csv(index=False)}
    return shown, drawn


@pytest.mark.slow  # two stores of 19 runs each, logged and read: about 10 s
def test_two_stores_in_different_orders_give_the_same_tables_and_figure_data(tmp_path):
    # The worked example plus runs that the appendix lists: invalid values, missing metrics, excluded runs.
    extra = [("inf-a", [0.5, math.inf, 0.7], {}), ("inf-b", [0.4, -1.0, 0.7], {}),
             ("nan-a", [0.6, 0.8, math.nan], {"summary": {"final_test_acc": 0.8}}),
             ("nan-b", [0.6, 0.7, math.nan], {"drop": ("final_test_acc", "best_test_acc")})]
    got = []
    for name, order in (("a", 1), ("b", -1)):
        uri = new_store(tmp_path / f"{name}.db")
        c = MlflowClient(uri)
        exp = c.create_experiment("example")
        runs = [(f"run-{i}", accs, sec, hw, dict(seed=i, batch_size=b, **tags))
                for i, (b, hw, sec, accs, tags) in enumerate(EXAMPLE)]
        runs += [(n, accs, 7.0, H100, dict(seed=20 + i, batch_size=48, **kw)) for i, (n, accs, kw) in enumerate(extra)]
        for n, accs, sec, hw, kw in runs[::order]:
            log_run(c, exp, n, accs, sec, hw, start_time=1_700_000_000_000 + int(n.split("-")[-1], 36), **kw)
        for n in ("failed-x", "failed-y")[::order]:  # excluded: not FINISHED
            c.set_terminated(c.create_run(exp, run_name=n).info.run_id, "FAILED")
        got.append(_tables_and_curves(uri))
    (tables_a, curves_a), (tables_b, curves_b) = got
    assert "inf-a" in tables_a["invalid"] and "nan-b" in tables_a["incomplete"] and "failed-x" in tables_a["excluded"]
    for k in tables_a:
        assert tables_a[k] == tables_b[k], k
    for k in curves_a:
        assert curves_a[k] == curves_b[k], k


# ---- 8. SOURCE_DATE_EPOCH ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["garbage", "99999999999999999", "253402300800", "-1", " 5", "1_000", "１２"])
def test_a_bad_source_date_epoch_is_refused_by_the_one_rule(value):
    with pytest.raises(config.UserError, match=r"^SOURCE_DATE_EPOCH: got .*; allowed: an integer, seconds since "
                                               r"1970-01-01 00:00 UTC, 0 to 253402300799 \(or unset: now\)$"):
        config.source_date_epoch({"SOURCE_DATE_EPOCH": value})
    assert config.source_date_epoch({"SOURCE_DATE_EPOCH": "253402300799"}) == 253402300799
    assert config.source_date_epoch({}) is None and config.source_date_epoch({"SOURCE_DATE_EPOCH": ""}) is None


def test_the_cli_refuses_a_bad_source_date_epoch_in_one_line_before_it_opens_the_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1e10")
    db = tmp_path / "never.db"
    assert cli_main(["report", "--experiment", "x", "--tracking-uri", f"sqlite:///{db}",
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["googlenet-study report: error: SOURCE_DATE_EPOCH: got '1e10'; allowed: an integer, seconds "
                   "since 1970-01-01 00:00 UTC, 0 to 253402300799 (or unset: now)"]
    assert not db.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow  # a process: numpy.f2py reads SOURCE_DATE_EPOCH when it is imported
@pytest.mark.parametrize("value", ["garbage", "99999999999999999"])
def test_a_bad_source_date_epoch_is_one_line_exit_2_not_an_import_traceback(value, tmp_path):
    p = subprocess.run([sys.executable, "-m", "googlenet_study", "report", "--experiment", "x", "--tracking-uri",
                        f"sqlite:///{tmp_path / 'm.db'}", "--out", str(tmp_path / "out")], cwd=ROOT, timeout=120,
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": value})
    assert p.returncode == 2 and p.stderr.startswith(f"googlenet-study report: error: SOURCE_DATE_EPOCH: got '{value}'")
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
