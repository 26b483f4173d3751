"""A sweep worker killed with SIGKILL: Optuna's heartbeat catches its trial, the retry resumes the
trial's checkpoint in the same MLflow child run, and every grid point ends COMPLETE exactly once.
A 2-worker sweep stopped by Ctrl-C and by SIGTERM: its runs end KILLED with `end_reason`, it exits
130 / 143, and the same command afterwards resumes those runs and completes every point once."""

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

from helpers import new_store, wait_for, write_study

pytestmark = pytest.mark.usefixtures("no_pdf_module")  # no test here reads report.pdf: the sweeps' reports skip it


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after a checkpoint", "before the first epoch"])
def test_sigkilled_worker_is_retried_and_resumes_its_child_run(when, tmp_path):
    path = write_study(tmp_path, "killed", {"seed": [0, 1]}, sampler="grid",
                       objectives=[{"maximize": "best_test_acc"}], max_retries=1,
                       base={"epochs": 3, "train_size": 240, "threads": 1})
    uri = new_store(tmp_path / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GOOGLENET_STUDY_HEARTBEAT_S": "1",
           "GOOGLENET_STUDY_GRACE_S": "4"}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "googlenet_study", "sweep", str(path), "--workers", "1", "--no-report"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    c = MlflowClient(uri)

    def victim() -> str | None:  # a trial's run that has started, or that has checkpointed an epoch
        assert first.poll() is None, first.stderr.read()[-2000:]
        for r in _children(c):
            if when == "before the first epoch" or list((tmp_path / ".checkpoints").rglob(f"{r.info.run_id}.ckpt")):
                return r.info.run_id
        return None
    victim = wait_for(victim, "a trial's run to start" if when == "before the first epoch"
                      else "a trial's epoch-1 checkpoint (<run id>.ckpt)")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert c.get_run(victim).info.status == "RUNNING"  # what MLflow alone leaves behind
    wait_for(lambda: _stale_trials(tmp_path / "optuna.db"), "the dead worker's trial to miss its heartbeat "
             "for the grace period (GOOGLENET_STUDY_GRACE_S = 4)", every=0.5)

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
    """8 real trials, 4 processes, SQLite for both MLflow and Optuna: no "database is locked", every
    trial a FINISHED child with all its epochs' metrics. 8, not 16: each worker still writes two trials'
    runs beside the three others (16 took 103 s, mostly the trials' own start and end, not the crowd)."""
    path = write_study(tmp_path, "crowd", {"seed": [0, 1], "aux_weight": [0.0, 0.3, 0.6, 1.0]},
                       base={"epochs": 2, "train_size": 60, "test_size": 30, "threads": 1})
    uri = new_store(tmp_path / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    p = subprocess.run([sys.executable, "-m", "googlenet_study", "sweep", str(path), "--workers", "4",
                        "--no-report"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "database is locked" not in p.stdout + p.stderr
    study = optuna.load_study(study_name="crowd", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8 and len({(t.params["seed"], t.params["aux_weight"]) for t in complete}) == 8
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("googlenet-study")
    children = c.search_runs([exp.experiment_id], "tags.mlflow.parentRunId != ''", max_results=100)
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    for r in children:
        for key in ("train_loss", "test_acc", "epoch_time_s", "elapsed_time_s", "throughput_img_s"):
            assert [m.step for m in c.get_metric_history(r.info.run_id, key)] == [1, 2], (r.info.run_id, key)
        assert "best_test_acc" in r.data.metrics



def _stale_trials(db) -> list[int]:
    """Trials whose heartbeat is older than the grace period, as Optuna judges it (the database's clock)."""
    s = optuna.storages.RDBStorage(f"sqlite:///{db}", heartbeat_interval=1, grace_period=4)
    try:
        return s._get_stale_trial_ids(s.get_study_id_from_name("killed"))
    finally:
        s.engine.dispose()


def _children(c: MlflowClient) -> list:
    exp = c.get_experiment_by_name("googlenet-study")
    return c.search_runs([exp.experiment_id], "tags.mlflow.parentRunId != ''") if exp else []


def _epochs_logged(c: MlflowClient, proc: subprocess.Popen, before: dict[str, int]) -> dict[str, int]:
    """Wait until two child runs exist and each has logged an epoch more than `before` says: both
    workers are mid-trial. Returns how many epochs each has logged."""
    def logged() -> dict[str, int] | None:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        n = {r.info.run_id: len(c.get_metric_history(r.info.run_id, "test_acc")) for r in _children(c)}
        return n if len(n) == 2 and all(k > before.get(run_id, 0) for run_id, k in n.items()) else None
    return wait_for(logged, f"two trial runs each logging an epoch beyond {before or 'none'}", every=0.2)


def _stop(proc: subprocess.Popen, send, signum: int, c: MlflowClient, storage: str) -> set[str]:
    """Signal the sweep; check its exit, every child run KILLED with end_reason and no trial RUNNING."""
    t0 = time.monotonic()
    send(proc.pid, signum)
    out, err = proc.communicate(timeout=300)
    print(f"signal {signum}: the sweep ended {time.monotonic() - t0:.1f} s later")
    assert proc.returncode == 128 + signum, err[-3000:]  # 130 SIGINT, 143 SIGTERM
    # One line per stopped trial, no Optuna "Trial N failed" with a traceback per worker
    assert "Traceback" not in err and "failed with parameters" not in err, err[-3000:]
    assert out.count("stopped by a signal (back in the queue; its run resumes from its checkpoint)") == 2, out
    runs = _children(c)
    for r in runs:  # ended by the first signal: end_reason; a second one would leave failure_reason
        assert r.info.status == "KILLED" and "stopped by a signal" in r.data.tags["end_reason"], r.data.tags
        assert "failure_reason" not in r.data.tags
    states = Counter(t.state.name for t in optuna.load_study(study_name="stopped", storage=storage).trials)
    assert states["WAITING"] == 2 and "RUNNING" not in states, states  # both points back in the queue
    return {r.info.run_id for r in runs}


@pytest.mark.slow
def test_ctrl_c_then_sigterm_to_a_two_worker_sweep_end_runs_killed_and_each_rerun_resumes_them(tmp_path):
    """Ctrl-C (SIGINT to the process group, which the workers get too), the same command again, SIGTERM
    to the sweep process only (its workers get it passed on), the same command again: every point once."""
    epochs = 5
    path = write_study(tmp_path, "stopped", {"seed": [0, 1]}, sampler="grid",
                       objectives=[{"maximize": "best_test_acc"}],
                       base={"image_size": 32, "epochs": epochs, "train_size": 160, "test_size": 32})
    uri, storage = new_store(tmp_path / "mlflow.db"), f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "googlenet_study", "sweep", str(path), "--workers", "2", "--no-report"]
    c = MlflowClient(uri)

    def start() -> subprocess.Popen:  # its own session: it leads a process group, as a terminal's job does
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    first = start()
    logged = _epochs_logged(c, first, {})
    killed = _stop(first, os.killpg, signal.SIGINT, c, storage)
    assert killed == set(logged)

    second = start()
    logged = _epochs_logged(c, second, logged)
    for r in _children(c):  # the same two runs, continued mid-epoch
        assert r.info.run_id in killed and int(r.data.tags["resumed_at_batch"]) >= 1
    assert _stop(second, os.kill, signal.SIGTERM, c, storage) == killed

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 failed (4 of them stopped by a signal and re-queued)" in again.stdout  # two stops, two trials each
    trials = optuna.load_study(study_name="stopped", storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert Counter(t.params["seed"] for t in complete) == {0: 1, 1: 1}  # each grid point exactly once
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert {t.user_attrs["mlflow_run_id"] for t in complete} == killed
    runs = _children(c)
    assert {r.info.run_id for r in runs} == killed  # the same two runs, resumed twice: no new ones
    for r in runs:
        assert r.info.status == "FINISHED" and "end_reason" not in r.data.tags  # the stop's reason is cleared
        assert int(r.data.tags["resumed_at_epoch"]) >= 3 and int(r.data.tags["resumed_at_batch"]) >= 1
        assert [m.step for m in c.get_metric_history(r.info.run_id, "test_acc")] == list(range(1, epochs + 1))
