"""Report stage 1 at scale (issue 28): histories read as numpy slices (SQLite, the history cache) and this tool's
runs pivoted at once give the per-epoch rows, and their columns' order, that one dict per epoch gave."""

from __future__ import annotations

import math
import time

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from googlenet_study import schema
from googlenet_study.report import fetch
from googlenet_study.statistics.clock import TIMESTAMP_COLUMN

from helpers import new_store
from helpers.runs import log_run

T0 = 1_700_000_000_000  # ms: the runs' start times, newest first in the report's order


def test_a_resumed_epoch_keeps_its_last_value_a_late_key_comes_last_and_another_tools_run_adds_its_own(tmp_path):
    uri = new_store(tmp_path / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("frame")
    late = log_run(c, exp, "late", [0.5, 0.6, 0.7], seed=0, drop=("train_aux_loss",), start_time=T0 + 3000)
    c.log_batch(late, metrics=[Metric("train_aux_loss", 0.25 * e, T0 + 5000 + e, e) for e in (2, 3)])
    resumed = log_run(c, exp, "resumed", [0.5, 0.6, 0.7], seed=1, start_time=T0 + 2000,
                      per_epoch={"train_loss": [0.5, 0.4, math.nan]})
    again = int(time.time() * 1000) + 60_000  # after log_run's own timestamps: MLflow orders a history by time
    c.log_batch(resumed, metrics=[Metric("test_acc", 0.95, again, 2)])  # epoch 2 logged again (a resume)
    theirs = c.create_run(exp, run_name="theirs", start_time=T0).info.run_id  # no config_hash: another tool's
    at_steps = {10: (0.4, 5.0, 1.5), 20: (0.8, 9.0, 1.0)}  # (test_acc, elapsed_time_s, val_loss) at global steps
    c.log_batch(theirs, metrics=[Metric(k, v, T0 + 4000 + s, s) for s, vs in at_steps.items()
                                 for k, v in zip(("test_acc", "elapsed_time_s", "val_loss"), vs)])
    c.set_terminated(theirs, "FINISHED")

    cold = fetch.fetch("frame", uri=uri, cache_dir=tmp_path / "cache")
    warm = fetch.fetch("frame", uri=uri, cache_dir=tmp_path / "cache")  # from the cache file's slices
    e = cold.epochs
    pd.testing.assert_frame_equal(e, warm.epochs, check_exact=True)
    keys = sorted(k for k in schema.EPOCH_METRICS if k != "train_aux_loss")
    at = keys.index(schema.ACCURACY) + 1
    # The first run's first epoch gives the columns in key order, timestamp_s after test_acc; train_aux_loss,
    # first logged at epoch 2, comes after them; another tool's val_loss after everything of the runs before it.
    assert list(e.columns) == ["run_id", "epoch", *keys[:at], TIMESTAMP_COLUMN, *keys[at:], "train_aux_loss",
                               "val_loss"]
    by = {rid: g.set_index("epoch") for rid, g in e.groupby("run_id")}
    assert by[resumed][schema.ACCURACY].tolist() == [0.5, 0.95, 0.7]
    assert by[resumed][TIMESTAMP_COLUMN][2] == (again - (T0 + 2000)) / 1000.0  # the last value's timestamp
    assert by[resumed]["train_loss"].tolist()[:2] == [0.5, 0.4] and math.isnan(by[resumed]["train_loss"][3])
    assert math.isnan(by[late]["train_aux_loss"][1]) and by[late]["train_aux_loss"].loc[2:].tolist() == [0.5, 0.75]
    assert by[late]["val_loss"].isna().all() and by[theirs]["train_loss"].isna().all()
    assert by[theirs].index.tolist() == [1, 2]  # its k-th accuracy value is epoch k, whatever its step
    assert by[theirs][["test_acc", "elapsed_time_s", "val_loss"]].to_numpy().tolist() == [[0.4, 5.0, 1.5],
                                                                                        [0.8, 9.0, 1.0]]
    assert by[theirs][TIMESTAMP_COLUMN].tolist() == [4.010, 4.020]
    assert e[["run_id", "epoch"]].apply(tuple, axis=1).tolist() == sorted(
        (rid, ep) for rid in (late, resumed, theirs) for ep in ((1, 2, 3) if rid != theirs else (1, 2)))
