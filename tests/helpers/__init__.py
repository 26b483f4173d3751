"""What test files share: paths, waits on a state, the real command line, the shrunken config, a study file,
an empty MLflow store.

A test file imports from here (and its submodules: runs, loop, servers, secrets, reference), never from another
test file nor from conftest; conftest.py holds the fixtures and the fast tier's rules. tests/test_tests.py checks
both. The submodules: runs (fake runs in a real store, and as stats' frame), loop (the engine's seams in memory),
servers (a real `mlflow server`, optuna-dashboard), secrets (a planted pickle, a leaked password), reference
(what docs/reference.md documents)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import pytest
import yaml

from googlenet_study.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and other things a person may want to look at
ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# s: how long a test waits for a state (a checkpoint, a run's status, a log line) before it fails. Generous:
# the suite must pass on a machine loaded to several times its cores; a state that comes returns at once.
STATE_TIMEOUT_S = float(os.environ.get("GS_TEST_STATE_TIMEOUT_S", "600"))
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], what: str, timeout: float = STATE_TIMEOUT_S, every: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy, and return that; after `timeout` s fail naming `what`.

    Tests wait on a state, never a fixed sleep: `wait_for(lambda: ckpt.exists(), "the epoch-1 checkpoint")`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}; it never came")
        time.sleep(every)


def skip_or_fail(reason: str) -> None:
    """Skip where a service is simply absent; on CI that absence is a failure."""
    if ON_CI:
        pytest.fail(f"required on CI: {reason}")
    pytest.skip(reason)


def http_up(url: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> bool:
    """True once `url` answers at all (an HTTP error status is an answer); fails at once, with the end of
    `log`, if the server process `proc` has exited. For wait_for."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}) before {url} answered: "
                        + (log.read_text()[-2000:] if log else ""))
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    """Run the real command line in a fresh process."""
    return subprocess.run([sys.executable, "-m", "googlenet_study", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


def tiny_config() -> RunConfig:
    """The real config, shrunk: GoogLeNet on offline digits at 32 px, random init, 2 epochs."""
    return RunConfig(model="googlenet", dataset="digits", weights="none", image_size=32, epochs=2,
                     batch_size=32, train_size=200, test_size=100, threads=2, system_metrics=False)


def cfg_args(c: RunConfig) -> list[str]:
    """`train`'s flags that give config `c` (a field left None is left out)."""
    out = []
    for k, v in c.to_params().items():
        if v != "None":
            out += [f"--{k.replace('_', '-')}", v]
    return out


def one_error_line(capsys) -> str:
    """The one line a refused command wrote to stderr (log lines and downloads left out)."""
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith(("20", "Downloading"))]
    assert len(err) == 1, err
    return err[0]


def runs_in(uri: str) -> list:
    """Every run of every experiment in the store at `uri`."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


_store_template: list[Path] = []  # this process's empty MLflow store, its tables made once


def new_store(db: Path) -> str:
    """A real, empty MLflow SQLite store at `db`, and its URI. MLflow makes a new store's tables by running
    its ~60 schema migrations (2-5 s of CPU); a test process runs them once, into a template, and copies that
    file: the same tables, the same alembic revision, the same Default experiment (its artifact location
    rewritten to `db`'s folder's mlruns/0, where MLflow would have put it for a store opened from there)."""
    if not _store_template:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        template = Path(tempfile.mkdtemp(prefix="googlenet-study-mlflow-schema-")) / "template.db"
        SqlAlchemyStore(f"sqlite:///{template}", str(template.parent / "mlruns")).engine.dispose()
        _store_template.append(template)
    shutil.copyfile(_store_template[0], db)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("update experiments set artifact_location = ? where experiment_id = 0",
                    (str(db.parent / "mlruns" / "0"),))
    return f"sqlite:///{db}"


# A sweep's base config, shrunk: 2 epochs of 100 digits at 16 px.
TINY = {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16, "epochs": 2,
        "batch_size": 32, "train_size": 100, "test_size": 50, "system_metrics": False}


def write_study(folder: Path, name: str, space: dict, **top) -> Path:
    """folder/name.yaml: a study file of TINY (`base=` overrides it) over `space`; `top`: its other keys."""
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "base": {**TINY, **top.pop("base", {})}, "space": space, **top},
                                sort_keys=False))
    return p
