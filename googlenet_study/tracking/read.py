"""Reading runs back for googlenet_study.report: runs as plain dicts, metric histories, artifacts."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from mlflow.exceptions import MlflowException

from ..config import UserError
from . import bulk
from .store import client, experiment_id, redact, tracking_uri

HISTORY_WORKERS = 8  # concurrent metric-history requests; they wait on I/O (SQLite, HTTP)


def search_runs_all(experiment: str, filter_string: str | None = None, uri: str | None = None,
                    page_size: int = 1000) -> list[dict]:
    """Every run of `experiment` matching `filter_string` (all pages), as plain dicts."""
    c = client(uri)
    exp_id = experiment_id(c, experiment, create=False)
    if exp_id is None:
        raise UserError(f"--experiment: no experiment named {experiment!r} in {redact(tracking_uri(uri))}")
    store = None if filter_string else bulk.database_store(c)
    if store is not None:  # no filter to apply: the tables read directly (bulk.runs), same dicts
        return bulk.runs(store, exp_id)
    runs, token = [], None
    while True:
        try:
            page = c.search_runs([exp_id], filter_string or "", max_results=page_size, page_token=token)
        except MlflowException as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"--filter: MLflow rejected {filter_string!r}: {msg}") from None
        runs += [_run_dict(r) for r in page]
        token = page.token
        if not token:
            return runs


def _run_dict(r) -> dict:
    return {"run_id": r.info.run_id, "run_name": r.info.run_name or "", "status": r.info.status,
            "start_time": r.info.start_time, "end_time": r.info.end_time,
            "params": dict(r.data.params), "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)}


def metric_histories(keys_by_run: dict[str, list[str]], uri: str | None = None, progress=None,
                     workers: int = HISTORY_WORKERS) -> dict[str, dict[str, np.ndarray]]:
    """{run_id: {key: bulk.POINT array of (step, value, timestamp_ms)}} in MLflow's order; `progress(n)` as
    runs complete.

    A database store answers in bulk (see bulk.py); an MLflow server in bulk too, 100 runs per request
    for one key; whatever neither can give (another store, a server without the bulk endpoint, a history
    too long for it) is read per run, from a thread pool."""
    c = client(uri)
    store = bulk.database_store(c)
    if store is not None:
        return bulk.histories(store, keys_by_run, progress)
    rest = bulk.rest_store(c)
    result: dict[str, dict] = {}
    if rest is not None:
        patience = getattr(c, "patience", None)  # the outage wait of store.client's server client
        result, keys_by_run = bulk.server_histories(rest, keys_by_run, progress, workers,
                                                    patience.call if patience else lambda f: f())

    def one(run_id: str) -> tuple[str, dict]:
        out = {k: [(m.step, m.value, m.timestamp) for m in c.get_metric_history(run_id, k)]
               for k in keys_by_run[run_id]}
        return run_id, out

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for run_id, hist in pool.map(one, keys_by_run):
            result.setdefault(run_id, {}).update(hist)
            if progress is not None:
                progress(1)
    return {rid: {k: np.array(pts, dtype=bulk.POINT) for k, pts in h.items()} for rid, h in result.items()}


def download_artifact(run_id: str, path: str, dst: str | os.PathLike, uri: str | None = None) -> Path | None:
    """One artifact of a run, copied under `dst`; None when the run has no such artifact."""
    c = client(uri)
    try:
        folder = os.path.dirname(path)
        if path not in {f.path for f in c.list_artifacts(run_id, folder or None)}:
            return None
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(c.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError):
        return None


def log_report(run_id: str, folder: str | os.PathLike, uri: str | None = None) -> None:
    """Attach a written report folder to a run (a sweep's parent) under `report/`."""
    client(uri).log_artifacts(run_id, str(folder), artifact_path="report")
