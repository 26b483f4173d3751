"""The fast path for many metric histories, kept apart because it leans on MLflow's private API.

Why: the public MlflowClient.get_metric_history is one request per run per key. On SQLite each costs
~5 ms, so a report over 1,000 runs x 12 keys waits 60 s on it. A database store (SQLite, PostgreSQL,
MySQL) is reachable through the client's private `_tracking_client.store`; its metrics table is read here
with one SQL query per chunk of runs for all keys at once, as plain rows. MLflow's own
get_metric_history_bulk (one query per key) builds an ORM object and a Metric entity per value: for
360,000 values that was 5-8 s of a 6-9 s fetch. When MLflow moves or renames what this uses,
database_store() returns None and read.metric_histories falls back to the public, per-run path (slower,
same result).

Through an `mlflow server` (server_histories) the public client has nothing but that per-run request: 12,000
requests for 1,000 runs x 12 keys, 66.7 s against 9.9 s for the whole report from the SQLite file. The
server's REST API answers many runs per request at GET /api/2.0/mlflow/metrics/get-history-bulk-interval
(one metric key and at most 100 run ids per request, at most 2,500 values per run: a longer history comes
back sampled, so such a run is read again per run); the MLflow client has no method for it, so it is called
through MLflow's private HTTP helper with the client's own credentials, retries and TLS settings."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

CHUNK = 200  # runs per query: keeps the SQL IN (...) list within every database's limit
BULK_ENDPOINT = "/api/2.0/mlflow/metrics/get-history-bulk-interval"
SERVER_RUNS = 100     # run ids per request: the server's limit (MAX_RUNS_GET_METRIC_HISTORY_BULK)
SERVER_VALUES = 2500  # values per run per request: the server's limit (MAX_RESULTS_PER_RUN); a run that
#                       returns this many may have been sampled, so it is read per run instead


def _metrics_table():
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    return SqlMetric.__table__


def database_store(c):
    """The client's SQL store when its metrics table can be read directly, else None."""
    store = getattr(getattr(c, "_tracking_client", None), "store", None)
    if not hasattr(store, "ManagedSessionMaker"):
        return None
    try:
        cols = _metrics_table().c
        if not {"run_uuid", "key", "step", "value", "timestamp", "is_nan"} <= set(cols.keys()):
            return None
    except (ImportError, AttributeError):
        return None
    return store


def histories(store, keys_by_run: dict[str, list[str]], progress, chunk: int = CHUNK) -> dict:
    """{run_id: {key: [(step, value, timestamp_ms)]}} in MLflow's order (timestamp, step, value), one query
    per chunk of runs; a value stored with is_nan is NaN, as MLflow's Metric entity gives it."""
    import sqlalchemy as sa

    m = _metrics_table().c
    result: dict[str, dict] = {rid: {k: [] for k in keys} for rid, keys in keys_by_run.items()}
    ids = list(keys_by_run)
    nan = float("nan")
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        keys = sorted({k for rid in part for k in keys_by_run[rid]})
        # key || '': the same keys, but no index on key can serve it. Given `key IN (...)`, SQLite (no
        # statistics) walks the primary key (key, timestamp, ...), i.e. every run's rows of each key, for
        # every chunk: 10x the runs read 100x the rows. Now it finds the chunk's rows by run_uuid.
        q = (sa.select(m.run_uuid, m.key, m.step, m.value, m.timestamp, m.is_nan)
             .where(m.run_uuid.in_(part), m.key.concat("").in_(keys))
             .order_by(m.run_uuid, m.key, m.timestamp, m.step, m.value))
        with store.ManagedSessionMaker() as session:
            rows = session.execute(q).all()
        for rid, key, step, value, ts, is_nan in rows:
            h = result[rid].get(key)
            if h is not None:
                h.append((step, nan if is_nan else value, ts))
        if progress is not None:
            progress(len(part))
    return result


def rest_store(c):
    """The client's REST store (an `mlflow server`) when its bulk endpoint can be called, else None."""
    store = getattr(getattr(c, "_tracking_client", None), "store", None)
    try:
        from mlflow.utils.rest_utils import http_request_safe  # noqa: F401
    except ImportError:
        return None
    return store if callable(getattr(store, "get_host_creds", None)) else None


def server_histories(store, keys_by_run: dict[str, list[str]], progress, workers: int,
                     call=lambda f: f()) -> tuple[dict, dict[str, list[str]]]:
    """({run_id: {key: [(step, value, timestamp_ms)]}}, {run_id: keys left to read per run}): one request per
    key per 100 runs, `workers` at a time, each through `call` (the client's outage patience). Values are in
    MLflow's per-run order (timestamp, step, value; NaN sorts as the 0 the store keeps for it). A key whose
    request fails (a server older than the endpoint) or whose history may have been sampled is left over."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.rest_utils import http_request_safe

    result: dict[str, dict] = {rid: {k: [] for k in keys} for rid, keys in keys_by_run.items()}
    left: dict[str, list[str]] = {}
    runs_of: dict[str, list[str]] = {}
    for rid, keys in keys_by_run.items():
        for k in keys:
            runs_of.setdefault(k, []).append(rid)
    jobs = [(k, ids[i:i + SERVER_RUNS]) for k, ids in sorted(runs_of.items())
            for i in range(0, len(ids), SERVER_RUNS)]
    creds = store.get_host_creds()

    def one(job: tuple[str, list[str]]):
        key, ids = job
        params = {"run_ids": ids, "metric_key": key, "max_results": SERVER_VALUES}
        try:
            got = call(lambda: http_request_safe(creds, BULK_ENDPOINT, "GET", params=params).json())
        except MlflowException:
            return key, ids, None
        return key, ids, got.get("metrics", [])

    done: dict[str, int] = {rid: len(keys) for rid, keys in keys_by_run.items()}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, ids, metrics in pool.map(one, jobs):
            if metrics is None:
                for rid in ids:
                    left.setdefault(rid, []).append(key)
            else:
                for m in metrics:  # protobuf JSON: a default (0) is left out; NaN and inf come as strings
                    h = result[m["run_id"]][key]
                    h.append((int(m.get("step", 0)), float(m.get("value", 0.0)), int(m.get("timestamp", 0))))
                for rid in ids:
                    h = result[rid][key]
                    if len(h) >= SERVER_VALUES:
                        h.clear()
                        left.setdefault(rid, []).append(key)
                    else:  # the endpoint orders by step; MLflow's history by timestamp
                        h.sort(key=lambda p: (p[2], p[0], 0.0 if math.isnan(p[1]) else p[1]))
            if progress is not None:
                finished = 0
                for rid in ids:
                    done[rid] -= 1
                    finished += done[rid] == 0 and rid not in left
                if finished:
                    progress(finished)
    return result, left
