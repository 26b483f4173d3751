"""Random studies through the report (issue 17, items 1 and 2), with Hypothesis.

Every study is logged into a real SQLite MLflow store (one per test session, one experiment per example):
k configurations x n runs with random censoring (targets never reached), NaN and missing metrics, invalid
values (inf, -1, a clock that goes back), runs left out of time statistics (resumed on other hardware, no
train_time_s under --clock train), one or two kinds of hardware. The report must build from every one.
Examples are bounded so each test stays well under a minute; the invariance of the ranking is checked on
plain summary frames (milliseconds an example)."""

from __future__ import annotations

import itertools
import math
import warnings

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from conftest import new_store

from googlenet_study import report
from googlenet_study.report import fetch, stats, text, verdict
from googlenet_study.statistics import ranking

from test_verdicts import H100, T4, log

TARGETS = (50.0, 80.0)
# An accuracy: mostly a value, else a NaN or an impossible one (inf is stored as 1.8e308).
ACC = st.one_of(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.just(math.nan), st.sampled_from([math.inf, -1.0, 1.5]))
RUN = st.fixed_dictionaries({
    "accs": st.lists(ACC, min_size=1, max_size=3),
    "epoch_s": st.sampled_from([1.0, 5.0, 20.0]),
    "gpu": st.sampled_from([H100, T4]),
    "moved": st.booleans(),                                     # resumed on other hardware: times left out
    "drop": st.sampled_from([(), (), ("train_time_s",), ("final_test_acc", "best_test_acc")]),
    "clock_back": st.booleans(),                                # elapsed_time_s goes down at the last epoch
})
STUDY = st.fixed_dictionaries({
    "configs": st.lists(st.lists(RUN, min_size=1, max_size=3), min_size=1, max_size=3),
    "one_gpu": st.booleans(),
    "clock": st.sampled_from(["epoch", "train"]),
})
_count = itertools.count()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    uri = new_store(tmp_path_factory.mktemp('property') / "mlflow.db")
    return MlflowClient(uri), uri


def log_study(c: MlflowClient, study: dict) -> str:
    name = f"study-{next(_count)}"
    exp = c.create_experiment(name)
    for i, runs in enumerate(study["configs"]):
        for j, r in enumerate(runs):
            n = len(r["accs"])
            elapsed = [r["epoch_s"] * (e + 1) for e in range(n)]
            if r["clock_back"] and n > 1:
                elapsed[-1] = elapsed[0] / 2
            log(c, exp, f"c{i}-r{j}", r["accs"], r["epoch_s"], H100 if study["one_gpu"] else r["gpu"], seed=j,
                batch_size=16 * 2 ** i, hardware_changed=[T4, H100] if r["moved"] else None, drop=r["drop"],
                per_epoch={"elapsed_time_s": elapsed}, summary={"best_test_acc": max(r["accs"], default=0.0)})
    return name


def check_numbers(runs, summ, rank, main_p, clock) -> None:
    assert (summ["n_timed"] <= summ["n_runs"]).all() and (summ["best_test_acc_n"] <= summ["n_runs"]).all()
    assert (summ["profile_score"].isna() == (summ["n_timed"] == 0)).all()  # no timed run: no score, not 0
    means = summ["best_test_acc_mean"].dropna()
    assert ((means >= 0) & (means <= 1)).all()  # never an impossible value averaged in
    ranked = rank["rank"] != ""
    assert not (ranked.to_numpy()[1:] & ~ranked.to_numpy()[:-1]).any()  # ranked rows come first
    assert rank["rank_by"].str.len().gt(0).all()
    if main_p is not None:
        assert (rank.loc[ranked, "n_timed"] >= ranking.MIN_RANKED_N).all()
        by_time = rank["rank_by"] == f"ERT to {main_p:g} % ({clock} clock)"
        assert not (by_time.to_numpy()[1:] & ~by_time.to_numpy()[:-1]).any()  # every one that reached P first
    words = verdict.verdict(rank, runs, main_p, clock)
    assert words and all(isinstance(w, str) and w for w in words)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(study=STUDY)
def test_every_random_study_gives_numbers_tables_and_a_verdict_without_a_warning(client, study):
    c, uri = client
    name = log_study(c, study)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy warning reaches the terminal
        f = fetch.fetch(name, uri=uri, cache_dir="off")
        runs, varying, summ, comp, rank, main_p = report.numbers(f, TARGETS, study["clock"])
        check_numbers(runs, summ, rank, main_p, study["clock"])
        text.tables(f, runs, varying, summ, comp, rank, main_p, TARGETS, report._pct)
        stats.performance_profile(summ, TARGETS)


@pytest.mark.slow  # three whole reports with their PDFs
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(study=STUDY)
def test_every_random_study_builds_every_report_file(client, study, tmp_path_factory):
    c, uri = client
    name = log_study(c, study)
    out = tmp_path_factory.mktemp("rep") / name
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # figures and PDF included: no numpy warning either
        report.build(name, uri=uri, targets=TARGETS, out=out, clock_name=study["clock"])
    for file in ("report.html", "report.pdf", "runs.csv", "summary.csv", "comparisons.csv"):
        assert (out / file).stat().st_size > 0, file
    assert len(pd.read_csv(out / "summary.csv")) == len(pd.read_csv(out / "runs.csv")["configuration"].unique())


# ---- the invariance: a dominated configuration never reorders the others -------------------------------
ERT = st.one_of(st.floats(1.0, 100.0), st.just(math.inf))
CONFIG = st.fixed_dictionaries({"erts": st.tuples(ERT, ERT), "reached": st.tuples(st.floats(0, 1), st.floats(0, 1)),
                                "n_timed": st.integers(0, 4), "acc": st.one_of(st.floats(0, 1), st.just(math.nan)),
                                "width": st.floats(0.0, 30.0)})


def summary_frame(configs: list[dict]) -> pd.DataFrame:
    """stats.summary's columns that the ranking reads, from drawn ERTs, reached fractions and intervals."""
    rows = []
    for i, c in enumerate(configs):
        row = {"configuration": f"c{i}", "n_runs": max(c["n_timed"], 1), "n_timed": c["n_timed"],
               "best_test_acc_n": max(c["n_timed"], 1), "best_test_acc_mean": c["acc"], "best_test_acc_iqm": c["acc"],
               "best_test_acc_iqm_ci_low": c["acc"] - 0.01, "best_test_acc_iqm_ci_high": c["acc"] + 0.01}
        for p, e, r in zip(TARGETS, c["erts"], c["reached"]):
            k = ranking.ert_column(p)
            reached = 0.0 if math.isinf(e) else max(r, 1 / 3)
            row.update({k: math.nan if math.isinf(e) else e, f"{k}_ci_low": e - c["width"] / 2,
                        f"{k}_ci_high": e + c["width"] / 2, k.replace("_ert", "_reached"): reached})
        rows.append(row)
    s = pd.DataFrame(rows)
    s["profile_score"] = stats.profiles.profile_scores(s.assign(model="m", dataset="d"), TARGETS)
    return s


@settings(max_examples=80, deadline=None)
@given(configs=st.lists(CONFIG, min_size=1, max_size=6), which=st.integers(0, 5), worse=st.tuples(
    st.floats(1.01, 3.0), st.floats(1.01, 3.0)), never=st.tuples(st.booleans(), st.booleans()), acc=st.floats(0, 1))
def test_adding_a_configuration_worse_on_every_target_never_reorders_the_others(configs, which, worse, never, acc):
    base = summary_frame(configs)
    rank, _ = ranking.ranking(base, TARGETS)
    timed = [i for i, c in enumerate(configs) if c["n_timed"] >= ranking.MIN_RANKED_N]
    if not timed:
        return
    model = configs[timed[which % len(timed)]]
    # Worse than `model` on every target: a larger ERT (or never reached), any accuracy, any interval.
    erts = tuple(math.inf if n else e * w for e, w, n in zip(model["erts"], worse, never))
    if erts == model["erts"]:  # model never reached anything: nothing can be worse on every target
        return
    loser = {**model, "erts": erts, "acc": acc, "reached": (0.5, 0.9)}
    more, _ = ranking.ranking(summary_frame(configs + [loser]), TARGETS)
    order = [c for c in more["configuration"] if c != f"c{len(configs)}"]
    assert order == list(rank["configuration"])
    assert [more.set_index("configuration").loc[c, "rank_by"] for c in order] == list(rank["rank_by"])
