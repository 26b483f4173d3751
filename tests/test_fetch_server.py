"""Histories through a real `mlflow server`: its bulk endpoint (many runs per request) gives exactly what MLflow's
public per-run get_metric_history gives, NaN, inf, a re-logged step, several keys and answers cut off at the
endpoint's limit included."""

from __future__ import annotations

import math
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from helpers import new_store
from helpers.servers import mlflow_server

from googlenet_study.tracking import bulk, read


def same(have: list, want: list) -> bool:
    """Equal (step, value, timestamp) lists, NaN equal to NaN."""
    return len(have) == len(want) and all(
        (s, t) == (s2, t2) and (v == v2 or (math.isnan(v) and math.isnan(v2)))
        for (s, v, t), (s2, v2, t2) in zip(have, want))


@pytest.mark.slow
def test_server_bulk_histories_equal_mlflows_per_run_history(tmp_path, monkeypatch):
    uri = new_store(tmp_path / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("bulk")
    now = int(time.time() * 1000)
    values = {"test_acc": [0.5, float("nan"), 0.7, 0.65], "elapsed_time_s": [10.0, 20.0, float("inf"), -1.0],
              "train_loss": [2.0, 1.0]}
    ids = []
    for r in range(5):
        rid = c.create_run(exp).info.run_id
        ms = [Metric(k, v + r, now + s, s + 1) for k, vs in values.items() for s, v in enumerate(vs)]
        ms.append(Metric("test_acc", 0.9, now + 9, 2))  # epoch 2 logged again (a resume), later
        ms.append(Metric("train_loss", 0.5, now - 5, 7))  # a later step logged earlier: MLflow orders by time
        c.log_batch(rid, metrics=ms)
        ids.append(rid)
    c.log_batch(ids[4], metrics=[Metric("lr", 0.1 / s, now + s, s) for s in range(1, 9)])  # 8 values
    keys = {rid: ["elapsed_time_s", "test_acc", "train_loss"] for rid in ids}
    keys[ids[4]] = ["elapsed_time_s", "lr", "test_acc", "train_loss"]
    keys[ids[2]] = ["test_acc"]  # a key a run is not asked for is not returned for it
    want = {rid: {k: [(m.step, m.value, m.timestamp) for m in c.get_metric_history(rid, k)] for k in ks}
            for rid, ks in keys.items()}

    with mlflow_server(uri, tmp_path) as http:
        monkeypatch.setattr(bulk, "SERVER_RUNS", 2)  # 3 requests per key: runs split across requests
        store = bulk.rest_store(read.client(http))
        got, left = bulk.server_histories(store, keys, None, workers=3)
        done = []
        through_read = read.metric_histories(keys, http, progress=done.append, workers=3)
        # The endpoint's limit per answer, lowered to 7 values: an answer that is full may cut off its last
        # run, which is asked again; a run whose history alone fills an answer (lr) is read per run.
        monkeypatch.setattr(bulk, "SERVER_VALUES", 7)
        cut, cut_left = bulk.server_histories(store, keys, None, workers=3)
        cut_read = read.metric_histories(keys, http, workers=3)

    assert left == {} and cut_left == {ids[4]: ["lr"]}
    for rid, ks in keys.items():
        for have in (got, through_read, cut_read):
            assert list(have[rid]) == ks
            assert all(same(have[rid][k], want[rid][k]) for k in ks), (rid, have[rid], want[rid])
        assert all(same(cut[rid][k], want[rid][k]) for k in ks if (rid, k) != (ids[4], "lr"))
    assert math.isnan(got[ids[0]]["test_acc"][1][1]) and got[ids[0]]["test_acc"][-1] == (2, 0.9, now + 9)
    assert got[ids[1]]["elapsed_time_s"][2][1] > 1e308  # MLflow stores inf as the largest double
    assert got[ids[0]]["train_loss"] == [(7, 0.5, now - 5), (1, 2.0, now), (2, 1.0, now + 1)]
    assert len(got[ids[4]]["lr"]) == 8
    assert sum(done) == len(keys)  # progress counts every run once


def test_runs_read_from_the_tables_equal_mlflows_search_runs(tmp_path):
    """bulk.runs (no filter: the report's usual case) gives search_runs' dicts in its order: a NaN latest
    metric, params and tags, a deleted run and another experiment's run left out."""
    uri = new_store(tmp_path / "mlflow.db")
    c = MlflowClient(uri)
    exp, other = c.create_experiment("runs"), c.create_experiment("other")
    for i in range(4):
        rid = c.create_run(exp, run_name=f"r{i}", start_time=1000 + i % 2, tags={"t": str(i)}).info.run_id
        c.log_batch(rid, metrics=[Metric("test_acc", float("nan") if i == 1 else i / 10, 5, 1)],
                    params=[Param("lr", str(i))])
        if i == 2:
            c.delete_run(rid)
        elif i == 3:
            c.set_terminated(rid, "FINISHED")
    c.create_run(other, run_name="elsewhere")
    got = bulk.runs(bulk.database_store(read.client(uri)), exp)
    want = read.search_runs_all("runs", "attributes.run_name != 'no such run'", uri)  # a filter: MLflow's search
    assert [r["run_name"] for r in got] == [r["run_name"] for r in want] and len(got) == 3
    for a, b in zip(got, want):
        assert math.isnan(a["metrics"]["test_acc"]) == math.isnan(b["metrics"]["test_acc"])
        assert {**a, "metrics": {}} == {**b, "metrics": {}}
        assert a["metrics"] == b["metrics"] or a["run_name"] == "r1"
    unfiltered = read.search_runs_all("runs", None, uri)  # no filter: read.search_runs_all reads the tables
    assert [r["run_id"] for r in unfiltered] == [r["run_id"] for r in want]


def test_the_sqlite_history_queries_find_a_chunks_rows_by_run_not_by_walking_every_runs_rows_of_each_key(tmp_path):
    """The bulk read was quadratic: SQLite walked the primary key (key, ...) for every chunk of runs."""
    import sqlite3

    from sqlalchemy.dialects import sqlite

    uri = new_store(tmp_path / "mlflow.db")
    c = MlflowClient(uri)
    rid = c.create_run(c.create_experiment("plan")).info.run_id
    c.log_batch(rid, metrics=[Metric("test_acc", 0.5, 1, 1)])
    others = [f"{i:032x}" for i in range(bulk.CHUNK - 1)]  # a whole chunk: 200 runs x 12 keys
    keys = ["test_acc"] + [f"key_{i}" for i in range(11)]
    counts, points = (q.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
                      for q in bulk.history_queries([rid, *others], keys))
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        plans = [" ".join(row[-1] for row in con.execute(f"EXPLAIN QUERY PLAN {q}")) for q in (counts, points)]
        assert con.execute(str(counts)).fetchall() == [(rid, "test_acc", 1)]
        assert con.execute(str(points)).fetchall() == [(1, 0.5, 1)]
    for plan in plans:
        assert "INDEX index_metrics_run_uuid" in plan and "(key=?)" not in plan, plan
