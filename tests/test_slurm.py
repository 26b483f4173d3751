"""`sweep --slurm-array N` against a real single-node Slurm (Debian's slurmctld, slurmd, slurm-client and
munge, started by tests/slurm/start.sh), PostgreSQL on 127.0.0.1:5432 and a real `mlflow server`: a
2-task array completes every grid point once under one parent run; a task stopped with SIGTERM mid-trial
(as Slurm does before a preemption) and then requeued still completes each point once, its run resumed;
bad submissions exit 2 with nothing submitted. On this one node `--slurm-option nodes=1` is true.
docs/cluster.md's `--dry-run` command runs in tests/test_readme.py."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from helpers import ROOT, new_store, skip_or_fail, wait_for, write_study
from helpers.servers import mlflow_server


from googlenet_study.cli import main as cli_main
from googlenet_study.config import UserError
from googlenet_study.sweep import slurm, storage

pytestmark = pytest.mark.usefixtures("no_pdf_module")  # no test here reads report.pdf: the sweeps' reports skip it


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
    with mlflow_server(new_store(d / "server.db"), d) as url:
        yield url


@pytest.fixture
def study_name(postgres_url):
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=storage.open_storage(postgres_url))
    except KeyError:
        pass


# The fewest epochs that prove a mid-trial preemption: task 0 is signalled as soon as both tasks' runs have
# checkpointed epoch 1 (a file appears: no polling of the server in between), so the SIGTERM lands with 4 short
# epochs still to train: far more than scancel's second or two, even on a loaded machine, so the signal finds the
# run mid-trial, never in the few seconds after its last epoch (its summary, its artifacts) when the run has
# as good as finished and the signal would stop the task between trials, with no run to resume. (With 3 epochs
# of 6 batches that happened on CI.) Whether it lands mid-epoch or at an epoch's end is the machine's choice;
# either is a preemption that the rerun must resume.
EPOCHS = 5
TRAIN_SIZE = 128  # images: 4 batches of 32 an epoch


def _jobs() -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=60).stdout


def _state(task: str) -> str:
    """squeue's state and reason of one array task ("PENDING BeginTime", "RUNNING None"), "" once it has left."""
    return subprocess.run(["squeue", "-h", "-j", task, "-o", "%T %r"], capture_output=True, text=True,
                          timeout=60).stdout.strip()


def _study(tmp_path: Path, name: str, space: dict, epochs: int) -> Path:
    return write_study(tmp_path, name, space, sampler="grid",
                       base={"epochs": epochs, "train_size": TRAIN_SIZE, "test_size": 32})


def _children(c: MlflowClient, name: str) -> list:
    exp = c.get_experiment_by_name("googlenet-study")
    return c.search_runs([exp.experiment_id], f"tags.study_name = '{name}'") if exp else []


@pytest.mark.postgres
@pytest.mark.slow
def test_a_two_task_array_with_a_task_preempted_and_requeued_completes_every_point_once_under_one_parent(
        slurm_cluster, server, postgres_url, study_name, tmp_path, no_pdf):
    """Task 0 gets SIGTERM mid-trial (`scancel --batch --signal=TERM`, what Slurm sends 120 s before a
    preemption) and is requeued (`scontrol requeue`); the submitter's --wait outlasts it all."""
    path = _study(tmp_path, study_name, {"seed": [0, 1], "aux_weight": [0.0, 0.3]}, epochs=EPOCHS)
    shared = tmp_path / "shared-checkpoints"
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "googlenet_study", "sweep", str(path), "--slurm-array", "2",
                             "--storage", postgres_url, "--tracking-uri", server, "--slurm-option", "nodes=1",
                             "--slurm-option", "cpus-per-task=1", "--checkpoint-dir", str(shared), "--wait"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        c = MlflowClient(server)

        def array_job() -> str | None:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            ids = subprocess.run(["squeue", "-h", "--name", study_name, "-o", "%F"], capture_output=True, text=True,
                                 timeout=60).stdout.split()
            return ids[0] if ids else None
        job = wait_for(array_job, f"Slurm to list the job array {study_name}", every=0.5)

        def both_mid_trial() -> bool:  # a run's checkpoint exists from its first epoch's end until it finishes
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            return len(list(shared.rglob("*.ckpt"))) == 2
        wait_for(both_mid_trial, f"both array tasks' runs to checkpoint epoch 1 in {shared}", every=0.05)
        subprocess.run(["scancel", "--batch", "--signal=TERM", f"{job}_0"], check=True, timeout=60)
        log = tmp_path / "slurm" / f"{study_name}-{job}_0.out"
        wait_for(lambda: "stopped by signal 15" in log.read_text(), f"'stopped by signal 15' in {log.name}",
                 every=0.2)
        print(f"task 0 stopped after {time.monotonic() - t0:.0f} s")
        # Requeued once the task has left the node (scontrol refuses it before). Slurm holds a requeued job
        # (its BeginTime a couple of minutes ahead): once it is PENDING again, it may start now.
        wait_for(lambda: subprocess.run(["scontrol", "requeue", f"{job}_0"], capture_output=True,
                                        timeout=60).returncode == 0, f"scontrol to requeue task {job}_0", every=0.5)

        def started_again() -> bool:
            state = _state(f"{job}_0")  # COMPLETING, REQUEUED, then "PENDING BeginTime", then RUNNING
            print(f"{time.monotonic() - t0:.1f} s: task {job}_0 {state!r}")
            if state.startswith("PENDING"):  # set its start to now (again, if the requeue reset it)
                subprocess.run(["scontrol", "update", f"JobId={job}_0", "StartTime=now"], timeout=60)
            return state == "" or state.startswith("RUNNING")
        wait_for(started_again, f"requeued task {job}_0 to start again", every=1.0)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
        for line in _jobs().splitlines():  # a failed test leaves no task of its array behind
            if line.endswith(f" {study_name}"):
                subprocess.run(["scancel", line.split("_")[0]], timeout=60)
    print(f"2-task array, 4 grid points, one task preempted: {time.monotonic() - t0:.0f} s to the report")
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    assert f"submitted Slurm job array {job} (2 tasks" in out and f"squeue -j {job}" in out
    script = (tmp_path / "slurm" / f"{study_name}.sbatch").read_text()  # kept, readable
    assert "#SBATCH --array=0-1" in script and "#SBATCH --signal=B:TERM@120" in script
    assert "#SBATCH --requeue" in script and "--gres" not in script  # a CPU study asks for no GPU

    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert Counter((t.params["seed"], t.params["aux_weight"]) for t in complete) == \
        {(0, 0.0): 1, (0, 0.3): 1, (1, 0.0): 1, (1, 0.3): 1}  # each point once
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    runs = _children(c, study_name)
    parents = [x for x in runs if x.data.tags["sweep_role"] == "parent"]
    trials = [x for x in runs if x.data.tags["sweep_role"] == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 4 and all(x.info.status == "FINISHED" for x in trials)  # no run left RUNNING
    assert all(x.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for x in trials)
    assert {x.data.params["threads"] for x in trials} == {"1"}  # SLURM_CPUS_PER_TASK, not the node's cores
    # Stopped mid-trial (mid-epoch: resumed_at_batch too; at an epoch's end: resumed_at_epoch alone), continued.
    resumed = [x for x in trials if "resumed_at_epoch" in x.data.tags]
    assert len(resumed) == 1 and "end_reason" not in resumed[0].data.tags
    assert 2 <= int(resumed[0].data.tags["resumed_at_epoch"]) <= EPOCHS
    assert resumed[0].data.tags["checkpoint"].startswith(str(shared))  # --checkpoint-dir: any node finds it
    assert [m.step for m in c.get_metric_history(resumed[0].info.run_id, "test_acc")] == list(range(1, EPOCHS + 1))
    logs = sorted((tmp_path / "slurm").glob(f"{study_name}-{job}_*.out"))
    # Both tasks trained (the wait above saw their two runs mid-trial at once); which of them finishes the
    # re-queued trial is a race (task 1 may take it while task 0 waits in Slurm's queue), so count over both.
    text = [x.read_text() for x in logs]
    assert len(logs) == 2 and sum(t.count(" COMPLETE best_test_acc=") for t in text) == 4
    assert "stopped by signal 15" in text[0] and text[0].count("joined study") == 2  # stopped, requeued, rejoined
    assert (tmp_path / "reports" / study_name / "report.html").is_file()  # --wait: the report, as locally


def _in_process(argv: list[str]) -> tuple[int, str]:
    """The CLI in this process (no interpreter start-up): its exit status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(argv)
    return code, err.getvalue()


@pytest.mark.postgres
def test_bad_submissions_exit_2_and_submit_nothing(slurm_cluster, postgres_url, study_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _study(tmp_path, study_name, {"seed": [0, 1]}, epochs=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = _jobs()
    code, err = _in_process(["sweep", str(path), "--slurm-array", "2", "--tracking-uri", uri])
    assert code == 2 and "an SQLite file is not shared by the array's nodes" in err, err
    assert len(err.strip().splitlines()) == 1
    code, err = _in_process(["sweep", str(path), "--slurm-array", "2", "--storage", postgres_url, "--tracking-uri",
                             uri, "--slurm-option", "nodes=1", "--slurm-option", "colour=blue"])
    assert code == 2 and "sbatch refused the job" in err and "colour" in err and "nothing submitted" in err, err
    assert _jobs() == before  # nothing submitted
    assert study_name not in optuna.get_all_study_names(postgres_url)  # no study made
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run: no store opened
    assert not (tmp_path / "slurm").exists()  # no script left behind


# ---- the job script and the refusals, without a cluster (fast) ---------------------------------------------
def _spec(tmp_path: Path, **base):
    from googlenet_study.sweep import study_file
    return study_file.load(str(write_study(tmp_path, "gpu-study", {"seed": [0, 1]}, base=base)))


def test_the_job_script_asks_for_a_gpu_only_for_a_cuda_study_and_never_holds_a_password(tmp_path):
    storage, uri = "postgresql://alice:s3cret@db.cluster/optuna", "https://bob:hunter2@mlflow.cluster"
    text = slurm.script(slurm.prepare(slurm.Array(_spec(tmp_path, device="cuda"), 8, storage, uri,
                                                  slurm.options(["partition=gpu"]), n_trials=8)))  # no more tasks than trials (issue 25)
    assert "#SBATCH --gres=gpu:1" in text and "#SBATCH --array=0-7" in text and "#SBATCH --partition=gpu" in text
    assert "s3cret" not in text and "hunter2" not in text and "alice" not in text and "bob" not in text
    assert '--storage="${GOOGLENET_STUDY_STORAGE}"' in text
    assert '--tracking-uri="${GOOGLENET_STUDY_TRACKING_URI}"' in text
    cpu = slurm.script(slurm.prepare(slurm.Array(_spec(tmp_path), 2, "postgresql://u@db/o", "http://mlflow:5000")))
    assert "--gres" not in cpu and "--storage=postgresql://u@db/o" in cpu  # no password: written as given
    assert cpu.splitlines()[-1].startswith("exec ") and "--workers=1 --no-report" in cpu


@pytest.mark.parametrize("storage, uri, opts, refused", [
    ("sqlite:///optuna.db", "http://mlflow:5000", {}, "--storage sqlite:///optuna.db: an SQLite file"),
    ("postgresql://u@localhost/o", "http://mlflow:5000", {}, "--storage postgresql://u@localhost/o: localhost"),
    ("postgresql://u@db/o", "http://127.0.0.1:5000", {}, "--tracking-uri http://127.0.0.1:5000: localhost"),
    ("postgresql://u@db/o", "sqlite:///mlflow.db", {}, "--tracking-uri sqlite:///mlflow.db: an SQLite file"),
    ("sqlite:///optuna.db", "sqlite:///mlflow.db", {"nodes": "1"}, None),
    ("sqlite:///optuna.db", "sqlite:///mlflow.db", {"nodelist": "gpu-node03"}, None),
    ("postgresql://u@db/o", "http://mlflow:5000", {}, None),
])
def test_stores_other_nodes_cannot_reach_are_refused_unless_the_array_stays_on_one_node(storage, uri, opts, refused):
    if refused is None:
        slurm.check_reachable(storage, uri, opts)
        return
    with pytest.raises(UserError) as e:
        slurm.check_reachable(storage, uri, opts)
    assert str(e.value).startswith(refused) and "nodes=1" in str(e.value)


def test_slurm_options_are_key_value_and_leave_ours_alone():
    assert slurm.options(["partition=gpu", "--time=04:00:00", "cpus_per_task=8"]) == {
        "partition": "gpu", "time": "04:00:00", "cpus-per-task": "8"}
    for bad, says in (("partition", "expected KEY=VALUE"), ("array=0-3", "set by googlenet-study"),
                      ("signal=B:USR1@60", "set by googlenet-study"), ("time=", "expected KEY=VALUE")):
        with pytest.raises(UserError, match=says):
            slurm.options([bad])
