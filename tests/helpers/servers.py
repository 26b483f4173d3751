"""Real servers for the tests that need one: `mlflow server` (started, stopped as an outage, or both around a
block) and optuna-dashboard's answer for one study."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

from helpers import free_port, http_up, wait_for


# MLflow 3's server starts a job runner and five huey consumers beside its workers, for GenAI jobs no test
# asks for: seconds of CPU at every start (and restart) that the suite's other core waits for.
NO_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start_mlflow_server(port: int, backend: str, folder: Path, *extra: str,
                        env: dict | None = None) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:`port` (one worker) over the store `backend`, its artifacts in
    folder/artifacts, its log beside them; returned once /health answers (an HTTP error is an answer: a
    basic-auth server refuses it). Its own process group: stop_mlflow_server ends its workers with it."""
    log = folder / f"mlflow-server-{port}.log"
    with open(log, "a") as out:  # a restart on the same port goes on writing the same log
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                                 "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1", *extra],
                                cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **NO_JOBS, **(env or {})}, start_new_session=True)
    try:
        wait_for(lambda: http_up(f"http://127.0.0.1:{port}/health", proc, log),
                 f"mlflow server on port {port} to answer /health", every=0.2)
    except BaseException:
        stop_mlflow_server(proc, signal.SIGKILL)
        raise
    return proc


def stop_mlflow_server(proc: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    """`signum` to the server's process group (SIGKILL: an outage, nothing flushed), then SIGKILL what is left
    after 20 s: `mlflow server` forks workers that can outlive their parent."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def mlflow_server(backend: str, folder: Path, *extra: str, env: dict | None = None) -> Iterator[str]:
    """A real `mlflow server` on a free local port for the block (see start_mlflow_server); yields its URL."""
    port = free_port()
    proc = start_mlflow_server(port, backend, folder, *extra, env=env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow_server(proc)


def dashboard_study(storage_url: str, name: str) -> dict:
    """Study `name` as a real optuna-dashboard on `storage_url` serves it over its HTTP API."""
    port = free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    proc = subprocess.Popen([str(exe), storage_url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: http_up(f"http://127.0.0.1:{port}/api/studies", proc),
                 f"optuna-dashboard on port {port} to answer /api/studies", every=0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as resp:
            body = json.loads(resp.read())
        studies = {s["study_name"]: s for s in body["study_summaries"]}
        assert name in studies
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[name]['study_id']}",
                                    timeout=10) as resp:
            return json.loads(resp.read())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
