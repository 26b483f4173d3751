"""A signal at the start of a sweep wins: SIGINT while the study file is read and checked, or SIGTERM while
the study is being created (its parent run made, its grid being enqueued), stops `googlenet-study sweep`
at once with 130 / 143 and leaves nothing behind: no Optuna study, no parent run (one it made is moved to
MLflow's trash), so the same command starts afresh. Real processes, real signals, waiting on states."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from helpers import TINY, wait_for


from googlenet_study.sweep import study_file
from googlenet_study.sweep import setup

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_pdf_module")]  # a real `googlenet-study sweep` process each


def _big_study(tmp_path: Path) -> Path:
    """10,000 grid points: seconds to validate and far longer to enqueue, so a signal lands inside each."""
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"name": "big", "base": TINY, "space": {
        "seed": list(range(100)), "lr": [round(0.001 * (i + 1), 4) for i in range(100)]}}))
    return path


def _start(tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "googlenet_study", "sweep", str(_big_study(tmp_path)),
                             "--no-report", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _catches_sigterm(pid: int) -> bool:
    """The process has installed its SIGTERM handler (the CLI's, before it reads the study file)."""
    caught = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def _enqueued(db: Path) -> int:
    """Trials in optuna.db so far (read-only: no file is made by looking)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60) as c:
            return c.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.OperationalError:  # no file or no tables yet
        return 0


def _runs(tmp_path: Path, view: int) -> list:
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("googlenet-study")
    return c.search_runs([exp.experiment_id], run_view_type=view) if exp else []


def test_sigint_while_the_study_file_is_checked_ends_at_once_with_130_and_makes_nothing(tmp_path):
    proc = _start(tmp_path)
    try:
        wait_for(lambda: proc.poll() is None and _catches_sigterm(proc.pid),
                 "the sweep process to install its signal handlers")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "[big] created" not in out  # it never reached the study
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_sigterm_while_the_grid_is_enqueued_ends_with_143_deletes_the_study_and_trashes_its_parent_run(tmp_path):
    proc = _start(tmp_path)
    db = tmp_path / "optuna.db"
    try:
        wait_for(lambda: _enqueued(db) > 0 or proc.poll() is not None, "the first grid points in optuna.db")
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by signal 15 before the study was ready; nothing of it is left" in err
    assert optuna.get_all_study_names(f"sqlite:///{db}") == []
    assert _runs(tmp_path, ViewType.ACTIVE_ONLY) == []  # no parent run left RUNNING, or at all
    [trashed] = _runs(tmp_path, ViewType.ALL)
    assert trashed.info.lifecycle_stage == "deleted" and trashed.info.status == "KILLED"
    # The same command starts afresh: the study is created again, not joined half-made.
    spec = study_file.load(str(tmp_path / "big.yaml"), n_trials=3)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    st, created = setup.open_study(spec, uri, f"sqlite:///{db}", setup.connect(spec, uri, f"sqlite:///{db}"))
    assert created and len(st.trials) == 3 and st.user_attrs[setup.READY]
