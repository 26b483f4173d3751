"""A sweep worker killed with SIGKILL: Optuna's heartbeat catches its trial, the retry resumes the
trial's checkpoint in the same MLflow child run, and every grid point ends COMPLETE exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient

from test_sweep import write_study


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after a checkpoint", "before the first epoch"])
def test_sigkilled_worker_is_retried_and_resumes_its_child_run(when, tmp_path):
    path = write_study(tmp_path, "killed", {"seed": [0, 1]}, sampler="grid",
                       objectives=[{"maximize": "best_test_acc"}], max_retries=1,
                       base={"epochs": 3, "train_size": 240, "threads": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GOOGLENET_STUDY_HEARTBEAT_S": "1",
           "GOOGLENET_STUDY_GRACE_S": "4"}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "googlenet_study", "sweep", str(path), "--workers", "1", "--no-report"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    c = MlflowClient(uri)
    victim = None
    for _ in range(3000):
        exp = c.get_experiment_by_name("googlenet-study")
        children = c.search_runs([exp.experiment_id], "tags.mlflow.parentRunId != ''") if exp else []
        for r in children:  # an epoch done and its checkpoint written, or just started
            if when == "before the first epoch" or list((tmp_path / ".checkpoints").rglob(f"{r.info.run_id}.ckpt")):
                victim = r.info.run_id
        if victim:
            break
        assert first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(0.2)
    assert victim, "no trial finished an epoch"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert c.get_run(victim).info.status == "RUNNING"  # what MLflow alone leaves behind
    time.sleep(6)  # past the grace period: the trial's heartbeat is stale

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]

    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert Counter(t.params["seed"] for t in complete) == {0: 1, 1: 1}  # each grid point exactly once
    assert any(t.state == optuna.trial.TrialState.FAIL for t in study.trials)  # the dead attempt, failed
    exp = c.get_experiment_by_name("googlenet-study")
    children = c.search_runs([exp.experiment_id], "tags.mlflow.parentRunId != ''")
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 2
    assert {t.user_attrs["mlflow_run_id"] for t in complete} == {r.info.run_id for r in finished}
    dead = c.get_run(victim)
    if when == "before the first epoch":  # nothing to resume: a fresh run; the dead one is closed
        assert len(children) == 3 and dead.info.status == "KILLED"
        assert "worker died" in dead.data.tags["end_reason"]
        return
    assert len(children) == 2 and dead.info.status == "FINISHED"  # the same child run, continued
    assert dead.data.tags.get("resumed_at_epoch") in ("2", "3")
    assert [m.step for m in c.get_metric_history(victim, "test_acc")] == [1, 2, 3]


@pytest.mark.slow
def test_four_workers_on_the_default_local_stores_lose_nothing(tmp_path):
    """16 real trials, 4 processes, SQLite for both MLflow and Optuna: no "database is locked", every
    trial a FINISHED child with all its epochs' metrics."""
    path = write_study(tmp_path, "crowd", {"seed": [0, 1, 2, 3], "aux_weight": [0.0, 0.3, 0.6, 1.0]},
                       base={"epochs": 2, "train_size": 60, "test_size": 30, "threads": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    p = subprocess.run([sys.executable, "-m", "googlenet_study", "sweep", str(path), "--workers", "4",
                        "--no-report"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "database is locked" not in p.stdout + p.stderr
    study = optuna.load_study(study_name="crowd", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 16 and len({(t.params["seed"], t.params["aux_weight"]) for t in complete}) == 16
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("googlenet-study")
    children = c.search_runs([exp.experiment_id], "tags.mlflow.parentRunId != ''", max_results=100)
    assert len(children) == 16 and all(r.info.status == "FINISHED" for r in children)
    for r in children:
        for key in ("train_loss", "test_acc", "epoch_time_s", "elapsed_time_s", "throughput_img_s"):
            assert [m.step for m in c.get_metric_history(r.info.run_id, key)] == [1, 2], (r.info.run_id, key)
        assert "best_test_acc" in r.data.metrics
