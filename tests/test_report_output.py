"""The report's output as bytes and as a reader meets it: the bulk history read against MLflow's public API,
byte-identical report.html / report.pdf under SOURCE_DATE_EPOCH, clocks named in the headers, the verdict
first. Runs are logged into a real SQLite MLflow store in tmp; no training."""

from __future__ import annotations

import math
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from googlenet_study.tracking import bulk, read


def test_bulk_history_read_equals_mlflows_public_per_run_history(tmp_path):
    """NaN, inf, a re-logged step and two runs of one chunk come back exactly as get_metric_history gives them."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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
    got = bulk.histories(bulk.database_store(read.client(uri)), keys, None, chunk=2)
    for rid, ks in keys.items():
        assert list(got[rid]) == ks
        for k in ks:
            want = [(m.step, m.value, m.timestamp) for m in c.get_metric_history(rid, k)]
            have = got[rid][k]
            assert [(s, t) for s, _, t in have] == [(s, t) for s, _, t in want]
            assert all((math.isnan(a) and math.isnan(b)) or a == b for (_, a, _), (_, b, _) in zip(have, want))
    assert math.isnan(got[ids[0]]["test_acc"][1][1]) and got[ids[0]]["test_acc"][-1] == (2, 0.9, now + 9)
    assert got[ids[1]]["elapsed_time_s"][2][1] > 1e308  # MLflow stores inf as the largest double
