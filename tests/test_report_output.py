"""The report's output as bytes and as a reader meets it: the bulk history read against MLflow's public API,
byte-identical report.html / report.pdf under SOURCE_DATE_EPOCH, clocks named in the headers, the verdict
first. Runs are logged into a real SQLite MLflow store in tmp; no training."""

from __future__ import annotations

import math
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from helpers import new_store

from googlenet_study import report
from googlenet_study.config import SOURCE_DATE_EPOCH, UserError
from googlenet_study.report import document, fetch, stats, text
from googlenet_study.statistics.clock import TRAIN
from googlenet_study.tracking import bulk, read


@pytest.mark.parametrize("fast", [True, False], ids=["ADBC", "MLflow's engine"])
def test_bulk_history_read_equals_mlflows_public_per_run_history(fast, tmp_path):
    """NaN, inf, a re-logged step and two runs of one chunk come back exactly as get_metric_history gives them,
    read through ADBC's SQLite driver (the default for a SQLite file) or MLflow's SQLAlchemy engine."""
    uri = new_store(tmp_path / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("bulk")
    now = int(time.time() * 1000)
    values = {"test_acc": [0.5, float("nan"), 0.7, 0.65], "elapsed_time_s": [10.0, 20.0, float("inf"), -1.0]}
    ids = []
    for r in range(3):
        rid = c.create_run(exp).info.run_id
        ms = [Metric(k, v + r, now + s, s + 1) for k, vs in values.items() for s, v in enumerate(vs)]
        ms.append(Metric("test_acc", 0.9, now + 9, 2))  # epoch 2 logged again (a resume), later
        c.log_batch(rid, metrics=ms)
        ids.append(rid)
    keys = {rid: ["elapsed_time_s", "test_acc"] for rid in ids}
    keys[ids[2]] = ["test_acc"]  # a key a run is not asked for is not returned for it
    store = bulk.database_store(read.client(uri))
    with bulk.sqlite_reader(store) as reader:  # None (and a TypeError here) if ADBC could not read the file
        assert reader.uri.startswith("file:/") and reader.uri.endswith("?mode=ro")
    got = bulk.histories(store, keys, None, chunk=2, fast=fast)
    for rid, ks in keys.items():
        assert list(got[rid]) == ks
        for k in ks:
            want = [(m.step, m.value, m.timestamp) for m in c.get_metric_history(rid, k)]
            assert got[rid][k].dtype == bulk.POINT
            have = got[rid][k].tolist()
            assert [(s, t) for s, _, t in have] == [(s, t) for s, _, t in want]
            assert all((math.isnan(a) and math.isnan(b)) or a == b for (_, a, _), (_, b, _) in zip(have, want))
    assert math.isnan(got[ids[0]]["test_acc"][1][1]) and got[ids[0]]["test_acc"].tolist()[-1] == (2, 0.9, now + 9)
    assert got[ids[1]]["elapsed_time_s"][2][1] > 1e308  # MLflow stores inf as the largest double


@pytest.fixture(scope="module")
def example_store(tmp_path_factory):
    """The worked example of docs/reports.md (tests/test_verdicts.py), with a loser and a run without the
    training clock, in a real SQLite store."""
    from helpers.runs import EXAMPLE, log_run

    root = tmp_path_factory.mktemp("output")
    uri = new_store(root / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("example")
    for i, (b, hw, sec, accs, tags) in enumerate(EXAMPLE):
        log_run(c, exp, f"run-{i}", accs, sec, hw, seed=i, batch_size=b, **tags)
    return {"uri": uri, "root": root}


@pytest.mark.slow  # two whole reports with their PDFs: 11 s of CPU
def test_the_same_runs_and_source_date_epoch_give_byte_identical_html_and_pdf(example_store, tmp_path, monkeypatch):
    import pypdf

    monkeypatch.setenv("GOOGLENET_STUDY_CACHE", "off")
    monkeypatch.delenv("GOOGLENET_STUDY_PDF", raising=False)
    monkeypatch.setenv(SOURCE_DATE_EPOCH, "1700000000")  # 2023-11-14 22:13:20 UTC
    outs = [report.build(report.Request("example", out=tmp_path / f"r{i}", uri=example_store["uri"]))[0] for i in (1, 2)]
    for name in ("report.html", "report.pdf", "runs.csv", "summary.csv", "comparisons.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    html = (outs[0] / "report.html").read_text()
    assert "<dt>written</dt><dd>2023-11-14 22:13 UTC</dd>" in html
    meta = pypdf.PdfReader(outs[0] / "report.pdf").metadata
    assert meta["/CreationDate"].startswith("D:20231114221320") and meta["/ModDate"] == meta["/CreationDate"]
    # The figures are PNGs without metadata: no matplotlib version, no time.
    assert b"Software" not in (outs[0] / "report.html").read_bytes() and "Matplotlib" not in html


def test_a_bad_source_date_epoch_is_one_line_naming_it_and_writes_nothing(example_store, tmp_path, monkeypatch):
    monkeypatch.setenv(SOURCE_DATE_EPOCH, "yesterday")
    with pytest.raises(UserError, match=r"^SOURCE_DATE_EPOCH: got 'yesterday'; allowed: an integer"):
        report.build(report.Request("example", out=tmp_path / "r", uri=example_store["uri"]))
    assert not (tmp_path / "r").exists()
    assert document.written({}).tzinfo is not None  # unset: now, in UTC
    assert document.written({SOURCE_DATE_EPOCH: "0"}).isoformat() == "1970-01-01T00:00:00+00:00"


def test_every_time_header_names_its_clock_and_epoch_seconds_stay_on_the_epoch_clock(example_store, monkeypatch):
    """Under --clock train, times to target (ERT, medians) are training seconds; s / epoch and the totals are
    epoch_time_s and total_time_s as recorded (the epoch clock), and their headers say so."""
    monkeypatch.setenv("GOOGLENET_STUDY_CACHE", "off")
    f = fetch.fetch("example", uri=example_store["uri"])
    n = stats.numbers(f, (50.0, 80.0), TRAIN)
    main_p, (main, appendix) = n.main_p, text.tables(n)
    ranking, summary = main[0].frame, main[1].frame
    assert main_p == 80.0 and "ERT to 80 % (s, train clock)" in ranking and "median to 80 % (s, train clock)" in ranking
    assert {"s / epoch (epoch clock)", "total IQM (s, epoch clock)", "to 50 % (s, train clock)",
            "to 80 % (s, train clock)"} <= set(summary)
    for t in main + appendix:  # no header of seconds without its clock
        assert not [c for c in t.frame.columns if "(s" in c and "clock)" not in c], t.id
    metrics = set(next(t for t in appendix if t.id == "comparisons").frame["metric"])
    assert {"total_time_s (s, epoch clock)", "time_to_test_acc_80 (s, train clock)"} <= metrics
    # The ERT in the train clock's column is training seconds: batch 32 on the H100 reached 80 % after 30 and
    # 40 s of epochs, the third run not by its end at 40 s, 0.75 of them training: 0.75 * 110 / 2 = 41.25 s
    # (the epoch clock would say 55).
    row = ranking.set_index("configuration").loc["batch_size=32, hardware=NVIDIA H100 80GB HBM3"]
    assert row["ERT to 80 % (s, train clock)"].split()[0] == "41.2"
    assert row["n (timed)"] == "3 (3)"
