"""The study outlives its database: a PostgreSQL server of the test's own (Debian's initdb and pg_ctl,
run as the `postgres` user on a free port, its data folder in /tmp) is stopped in the middle of a
trial and started again. A 20 s outage: the worker waits it out (one line per wait), keeps training,
and every grid point completes once, no run FAILED or RUNNING, the parent FINISHED. An outage longer
than storage_timeout_s: the run ends KILLED with the reason, the sweep exits 75, and the same command
once the database is back resumes that run and completes every point once."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient

from helpers import free_port, new_store, skip_or_fail, wait_for, write_study

pytestmark = pytest.mark.usefixtures("no_pdf_module")  # no test here reads report.pdf: the sweeps' reports skip it


class OwnPostgres:
    """A throwaway PostgreSQL cluster: `stop()` and `start()` are the outage."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins or shutil.which("runuser") is None or os.geteuid() != 0:
            skip_or_fail("needs root and Debian's PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
        self.bin, self.port = os.path.dirname(bins[-1]), free_port()
        self.dir = tempfile.mkdtemp(prefix="gs-pg-")  # not under pytest's root-only tmp: postgres must reach it
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres("initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def _as_postgres(self, tool: str, *args: str) -> None:
        r = subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/{tool}", *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "start", "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data",
                        "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def own_postgres():
    pg = OwnPostgres()
    try:
        yield pg
    finally:
        pg.remove()


EPOCHS = 3


def _sweep(tmp_path, name: str, storage: str, seeds: list[int], grace_s: int = 180, **top):
    path = write_study(tmp_path, name, {"seed": seeds}, sampler="grid", **top,
                       base={"epochs": EPOCHS, "train_size": 96, "test_size": 32, "threads": 1})
    uri = new_store(tmp_path / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GOOGLENET_STUDY_HEARTBEAT_S": "1",
           "GOOGLENET_STUDY_GRACE_S": str(grace_s)}  # heartbeats every second: they meet the outage
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "googlenet_study", "sweep", str(path), "--storage", storage, "--no-report"]
    return cmd, env, MlflowClient(uri)


def _first_epoch(c: MlflowClient, proc: subprocess.Popen, err_log) -> str:
    """The id of the first trial run once it has logged an epoch: the worker is mid-trial."""
    def logged() -> str | None:
        exp = c.get_experiment_by_name("googlenet-study")
        for r in c.search_runs([exp.experiment_id], "tags.sweep_role = 'trial'") if exp else []:
            if c.get_metric_history(r.info.run_id, "test_acc"):
                return r.info.run_id
        assert proc.poll() is None, err_log.read_text()[-2000:]
        return None
    return wait_for(logged, "a trial run's first epoch (test_acc) in MLflow", every=0.2)


def _each_point_once(c: MlflowClient, storage: str, name: str, seeds: list[int]) -> None:
    trials = optuna.load_study(study_name=name, storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert Counter(t.params["seed"] for t in complete) == dict.fromkeys(seeds, 1), [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    exp = c.get_experiment_by_name("googlenet-study")
    runs = c.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("sweep_role") == "trial"]
    assert [r.info.status for r in children] == ["FINISHED"] * len(seeds)
    assert {t.user_attrs["mlflow_run_id"] for t in complete} == {r.info.run_id for r in children}
    for r in children:  # every epoch once: nothing lost, nothing logged twice
        assert [m.step for m in c.get_metric_history(r.info.run_id, "test_acc")] == list(range(1, EPOCHS + 1))
    assert [r.info.status for r in runs if r.data.tags.get("sweep_role") == "parent"] == ["FINISHED"]


# Fast, and before the tests that use own_postgres: the module fixture stops its server in the teardown
# of the module's last test, and the fast tier's audit hook would blame a fast test for that process.
@pytest.mark.slow  # seconds of CPU (3-15 s): the full suite runs it, `make test-fast` does not
def test_a_call_that_fails_transiently_is_retried_with_doubling_waits_one_line_each_then_gives_up():
    """outage.Patience on its own, against a function that fails as a database that is down does."""
    from googlenet_study.sweep import outage

    lines, calls = [], []

    def flaky(fail: int):
        def fn():
            calls.append(time.monotonic())
            if len(calls) <= fail:
                raise ConnectionError("connection refused")
            return "ok"
        return fn

    p = outage.Patience("the test store", lambda e: isinstance(e, ConnectionError), timeout_s=30, log=lines.append)
    assert p.call(flaky(2)) == "ok"
    waits = [b - a for a, b in zip(calls, calls[1:])]
    assert waits[0] >= 1 and waits[1] >= 2, waits  # 1 s, then 2 s (a loaded machine's sleeps overshoot: no cap)
    assert len(lines) == 3 and "retry 1 in 1 s" in lines[0] and "retry 2 in 2 s" in lines[1]
    assert "the test store is back after" in lines[2]
    with pytest.raises(ValueError):  # not transient: raised at once, no wait
        outage.Patience("x", lambda e: isinstance(e, ConnectionError), log=lines.append).call(
            lambda: (_ for _ in ()).throw(ValueError("bad data")))

    calls.clear()
    p = outage.Patience("the test store", lambda e: isinstance(e, ConnectionError), timeout_s=1.5, log=lines.append)
    with pytest.raises(outage.Unavailable) as e:
        p.call(flaky(99))
    assert re.fullmatch(r"the test store unreachable for \d+ s \(storage_timeout_s = 1.5\): connection refused",
                        str(e.value)), str(e.value)
    assert e.value.end_reason.startswith(outage.Unavailable.PREFIX)
    t = time.monotonic()
    with pytest.raises(outage.Unavailable):  # once given up, the next call fails fast until one succeeds
        p.call(flaky(99))
    assert time.monotonic() - t < 1  # no wait: the first retry alone would take 1 s


@pytest.mark.slow
def test_a_20_second_database_outage_mid_trial_loses_no_trial_metric_or_run_status(tmp_path, own_postgres):
    cmd, env, c = _sweep(tmp_path, "outage", own_postgres.url, [0, 1])
    err_log = tmp_path / "sweep.err"  # a file: the test waits for the worker's lines while it runs
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=open(err_log, "w"), text=True)
    try:
        run_id = _first_epoch(c, proc, err_log)
        own_postgres.stop()
        down = time.monotonic()
        logged_at_stop = len(c.get_metric_history(run_id, "test_acc"))
        # The outage lasts until the worker has met it (its first wait line) and trained on through it (another
        # epoch logged), and at least 20 s: longer than a heartbeat's retries. The states are waited on; the 20 s
        # is the outage's length, which the test chooses (no process has a state for it), so a sleep is its wait.
        wait_for(lambda: "unreachable (" in err_log.read_text(), "the worker's 'Optuna storage unreachable' line")
        wait_for(lambda: len(c.get_metric_history(run_id, "test_acc")) > logged_at_stop,
                 f"epoch {logged_at_stop + 1} of run {run_id} logged while the database is down")
        time.sleep(max(0.0, 20 - (time.monotonic() - down)))
        logged_at_start = len(c.get_metric_history(run_id, "test_acc"))
        own_postgres.start()
        out, _ = proc.communicate(timeout=600)
        err = err_log.read_text()
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert logged_at_start > logged_at_stop  # training went on while the database was down
    waits = [line for line in err.splitlines() if "unreachable (" in line]
    assert waits and all("the Optuna storage postgresql://postgres@127.0.0.1" in w for w in waits), err[-3000:]
    assert "Traceback" not in err and "is back after" in err
    _each_point_once(c, own_postgres.url, "outage", [0, 1])


@pytest.mark.slow
def test_an_outage_past_storage_timeout_s_ends_the_run_killed_and_the_rerun_resumes_it(tmp_path, own_postgres):
    cmd, env, c = _sweep(tmp_path, "long-outage", own_postgres.url, [0], grace_s=3, storage_timeout_s=4,
                         checkpoint_dir=str(tmp_path / "shared"))  # the study file's key
    err_log = tmp_path / "sweep.err"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=open(err_log, "w"), text=True)
    try:
        run_id = _first_epoch(c, proc, err_log)
        own_postgres.stop()
        out, _ = proc.communicate(timeout=600)
        err = err_log.read_text()
    finally:
        proc.kill()
        own_postgres.start()
    assert proc.returncode == 75, err[-3000:]  # EX_TEMPFAIL: try again later
    assert "unreachable for" in err and "run the same command again" in err
    run = c.get_run(run_id)
    assert run.info.status == "KILLED", run.info.status  # never FAILED for the database's sake
    assert run.data.tags["end_reason"].startswith("outage: the Optuna storage")
    assert list((tmp_path / "shared").rglob(f"{run_id}.ckpt"))  # its checkpoint, where the study file said
    # The rerun retries the abandoned trial once its heartbeat is stale: 3 s (GOOGLENET_STUDY_GRACE_S) after its
    # process ended, by the database's clock. Wait for that state, as Optuna itself judges it (read only).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is "experimental"
        judge = optuna.storages.RDBStorage(own_postgres.url, heartbeat_interval=1, grace_period=3)
    study_id = judge.get_study_id_from_name("long-outage")
    wait_for(lambda: judge._get_stale_trial_ids(study_id), "the abandoned trial's heartbeat stale (grace 3 s)")
    judge.remove_session()

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    _each_point_once(c, own_postgres.url, "long-outage", [0])
    resumed = c.get_run(run_id)  # the same run, continued from its checkpoint (max_retries is 0)
    assert "resumed_at_epoch" in resumed.data.tags and "end_reason" not in resumed.data.tags
