"""`sweep --slurm-array N` against a real single-node Slurm (Debian's slurmctld, slurmd, slurm-client and
munge, started by tests/slurm/start.sh), PostgreSQL on 127.0.0.1:5432 and a real `mlflow server`: a
2-task array completes every grid point once under one parent run; a task stopped with SIGTERM mid-trial
(as Slurm does before a preemption) and then requeued still completes each point once, its run resumed;
bad submissions exit 2 with nothing submitted. On this one node `--slurm-option nodes=1` is true."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from conftest import ROOT, cli, skip_or_fail

from test_sweep import write_study
from test_sweep_postgres import mlflow_server

from googlenet_study import slurm, sweep


@pytest.fixture(scope="module")
def slurm_cluster():
    """The test cluster, started if it is not up; skip (fail on CI) with the reason where it cannot."""
    try:
        r = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "start.sh")], capture_output=True, text=True,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        skip_or_fail(f"tests/slurm/start.sh could not start Slurm: {e}")
    if r.returncode != 0:
        skip_or_fail(f"tests/slurm/start.sh could not start Slurm: {r.stderr.strip()[-500:]}")
    conf = r.stdout.strip().splitlines()[-1]
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # sbatch, squeue and scontrol, here and in the CLI's processes
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm-mlflow")
    with mlflow_server(f"sqlite:///{d / 'server.db'}", d / "artifacts") as url:
        yield url


@pytest.fixture
def study_name(postgres_url):
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=sweep.open_storage(postgres_url))
    except KeyError:
        pass


def _jobs() -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=60).stdout


def _study(tmp_path: Path, name: str, space: dict, epochs: int) -> Path:
    return write_study(tmp_path, name, space, sampler="grid",
                       base={"epochs": epochs, "train_size": 96, "test_size": 32})


def _submit(path: Path, storage: str, url: str, n: int, *extra: str, cwd: Path):
    return cli("sweep", str(path), "--slurm-array", str(n), "--storage", storage, "--tracking-uri", url,
               "--slurm-option", "nodes=1", "--slurm-option", "cpus-per-task=1", *extra, cwd=cwd, timeout=600)


def _children(c: MlflowClient, name: str) -> list:
    exp = c.get_experiment_by_name("googlenet-study")
    return c.search_runs([exp.experiment_id], f"tags.study_name = '{name}'") if exp else []


@pytest.mark.postgres
@pytest.mark.slow
def test_a_two_task_array_completes_every_grid_point_once_under_one_parent_run(
        slurm_cluster, server, postgres_url, study_name, tmp_path):
    path = _study(tmp_path, study_name, {"seed": [0, 1], "aux_weight": [0.0, 0.3]}, epochs=2)
    t0 = time.monotonic()
    r = _submit(path, postgres_url, server, 2, "--wait", cwd=tmp_path)
    print(f"2-task array, 4 grid points: {time.monotonic() - t0:.0f} s from submission to report")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    job = r.stdout.split("submitted Slurm job array ")[1].split()[0]
    assert f"squeue -j {job}" in r.stdout
    script = (tmp_path / "slurm" / f"{study_name}.sbatch").read_text()  # kept, readable
    assert "#SBATCH --array=0-1" in script and "#SBATCH --signal=B:TERM@120" in script
    assert "#SBATCH --requeue" in script and "--gres" not in script  # a CPU study asks for no GPU

    runs = _children(MlflowClient(server), study_name)
    parents = [x for x in runs if x.data.tags["sweep_role"] == "parent"]
    trials = [x for x in runs if x.data.tags["sweep_role"] == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(t.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for t in trials)
    assert sorted((t.data.params["seed"], t.data.params["aux_weight"]) for t in trials) == \
        [("0", "0.0"), ("0", "0.3"), ("1", "0.0"), ("1", "0.3")]  # each point once
    assert all(t.info.status == "FINISHED" for t in trials)
    assert {t.data.params["threads"] for t in trials} == {"1"}  # SLURM_CPUS_PER_TASK, not the node's cores
    logs = sorted((tmp_path / "slurm").glob(f"{study_name}-{job}_*.out"))
    assert len(logs) == 2 and all(" COMPLETE " in p.read_text() for p in logs)  # both tasks trained
    assert (tmp_path / "reports" / study_name / "report.html").is_file()  # --wait: the report, as locally


@pytest.mark.postgres
@pytest.mark.slow
def test_a_task_stopped_with_sigterm_mid_trial_then_requeued_completes_each_point_once(
        slurm_cluster, server, postgres_url, study_name, tmp_path):
    path = _study(tmp_path, study_name, {"seed": [0, 1]}, epochs=3)
    shared = tmp_path / "shared-checkpoints"
    r = _submit(path, postgres_url, server, 2, "--no-report", "--checkpoint-dir", str(shared), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    job = r.stdout.split("submitted Slurm job array ")[1].split()[0]
    c = MlflowClient(server)
    for _ in range(1500):  # both tasks mid-trial: each run has logged an epoch
        trials = [x for x in _children(c, study_name) if x.data.tags["sweep_role"] == "trial"]
        if len(trials) == 2 and all(c.get_metric_history(x.info.run_id, "test_acc") for x in trials):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the two tasks never both finished an epoch: {_jobs()}")
    subprocess.run(["scancel", "--batch", "--signal=TERM", f"{job}_0"], check=True, timeout=60)
    log = tmp_path / "slurm" / f"{study_name}-{job}_0.out"
    for _ in range(600):
        if "stopped by signal 15" in log.read_text():
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"task 0 did not stop: {log.read_text()[-2000:]}")
    killed = [x for x in _children(c, study_name) if x.info.status == "KILLED"]
    assert len(killed) == 1 and "stopped by a signal" in killed[0].data.tags["end_reason"]
    assert list(shared.rglob(f"{killed[0].info.run_id}.ckpt"))  # --checkpoint-dir: where any node resumes it
    for _ in range(100):  # the task has left the node: requeue it, now (Slurm delays a requeue by 2 min)
        if subprocess.run(["scontrol", "requeue", f"{job}_0"], capture_output=True, timeout=60).returncode == 0:
            break
        time.sleep(0.5)
    subprocess.run(["scontrol", "update", f"JobId={job}_0", "StartTime=now"], check=True, timeout=60)
    slurm.wait(job)

    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert Counter(t.params["seed"] for t in complete) == {0: 1, 1: 1}
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    runs = _children(c, study_name)
    trials = [x for x in runs if x.data.tags["sweep_role"] == "trial"]
    assert len(trials) == 2 and all(x.info.status == "FINISHED" for x in trials)  # no run left RUNNING
    resumed = c.get_run(killed[0].info.run_id)  # the same run, continued from its mid-epoch checkpoint
    assert "resumed_at_batch" in resumed.data.tags and "end_reason" not in resumed.data.tags
    assert [m.step for m in c.get_metric_history(resumed.info.run_id, "test_acc")] == [1, 2, 3]
    assert [x.info.status for x in runs if x.data.tags["sweep_role"] == "parent"] == ["FINISHED"]


@pytest.mark.postgres
def test_bad_submissions_exit_2_and_submit_nothing(slurm_cluster, postgres_url, study_name, tmp_path):
    path = _study(tmp_path, study_name, {"seed": [0, 1]}, epochs=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = _jobs()
    sqlite = cli("sweep", str(path), "--slurm-array", "2", "--tracking-uri", uri, cwd=tmp_path)
    assert sqlite.returncode == 2 and "an SQLite file is not shared by the array's nodes" in sqlite.stderr
    assert len(sqlite.stderr.strip().splitlines()) == 1
    unknown = _submit(path, postgres_url, uri, 2, "--slurm-option", "colour=blue", cwd=tmp_path)
    assert unknown.returncode == 2 and "sbatch refused the job" in unknown.stderr, unknown.stderr[-2000:]
    assert "colour" in unknown.stderr and "nothing submitted" in unknown.stderr
    assert _jobs() == before  # nothing submitted
    assert study_name not in optuna.get_all_study_names(postgres_url)  # no study made
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(uri).search_experiments(
        filter_string="name = 'googlenet-study'")  # no MLflow run
    dry = _submit(path, postgres_url, uri, 3, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and dry.stdout.startswith("#!/bin/bash") and "#SBATCH --array=0-2" in dry.stdout
    assert _jobs() == before and study_name not in optuna.get_all_study_names(postgres_url)
