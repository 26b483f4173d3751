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
server answers many runs per request at the endpoint its own UI uses, GET /ajax-api/2.0/mlflow/metrics/
get-history-bulk: one key, at most 100 run ids and 25,000 values per request, in MLflow's per-run order,
one SQL query on the server. (Its sibling get-history-bulk-interval, which the REST API also serves under
/api/, runs two queries per run per key and samples histories longer than 2,500 values: through a server on
1,000 runs' SQLite file it took 430 s, against 66.7 s per run.) The MLflow client has no method for either,
so the endpoint is called through MLflow's private HTTP helper with the client's own credentials, retries and
TLS settings; a server without it (or refusing it) gets per-run requests.

A SQLite file's chunks are read through ADBC's SQLite driver where it is installed (_AdbcReader): Python's
sqlite3 builds a tuple per row, which at 10,000 runs x 30 epochs (3.6 M rows) was most of a cold report's
fetch; ADBC hands back Arrow columns and reads chunks on several threads."""

from __future__ import annotations

import contextlib
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator
from urllib.parse import quote

import numpy as np

POINT = np.dtype([("step", "<i8"), ("value", "<f8"), ("timestamp", "<i8")])  # a history's value; timestamp in ms
CHUNK = 200  # runs per query: keeps the SQL IN (...) list within every database's limit
BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
SERVER_RUNS = 100       # run ids per request: the server's limit (MAX_RUN_IDS_PER_REQUEST)
SERVER_VALUES = 25_000  # values per request: the server's limit (MAX_HISTORY_RESULTS); a full answer may be
#                         cut off, so only the runs before its last one are taken and the rest asked again


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


def histories(store, keys_by_run: dict[str, list[str]], progress, chunk: int = CHUNK, fast: bool = True) -> dict:
    """{run_id: {key: POINT array of (step, value, timestamp_ms)}} in MLflow's order (timestamp, step, value),
    two queries per chunk of runs; a value stored with is_nan is NaN, as MLflow's Metric entity gives it.
    A SQLite file is read through ADBC on a few threads when it can be (`fast`: sqlite_reader), else, and for
    any chunk ADBC could not read, through MLflow's own SQLAlchemy engine."""
    empty = np.empty(0, dtype=POINT)
    result: dict[str, dict] = {rid: {k: empty for k in keys} for rid, keys in keys_by_run.items()}
    ids = list(keys_by_run)
    parts = [ids[i:i + chunk] for i in range(0, len(ids), chunk)]
    jobs = [(part, sorted({k for rid in part for k in keys_by_run[rid]})) for part in parts]
    reader = sqlite_reader(store) if fast else None
    with reader or contextlib.nullcontext():
        for (part, keys), got in zip(jobs, reader.map(jobs) if reader else (None for _ in jobs)):
            groups, rows = got or _chunk(store, part, keys)
            at = 0  # each (run, key) is a slice of the chunk's rows, which come in (run, key) order
            for rid, key, n in groups:
                if key in result[rid]:
                    result[rid][key] = rows[at:at + n]
                at += n
            if progress is not None:
                progress(len(part))
    return result


def _chunk(store, run_ids: list[str], keys: list[str]) -> tuple[list[tuple], np.ndarray]:
    """One chunk through MLflow's engine: its (run_uuid, key, count) groups and its rows as POINTs. No run id
    or key per value (3.6 M strings for 10,000 runs), no Python per value: numpy reads the driver's rows
    (NULL, i.e. is_nan, as NaN)."""
    counts, points = history_queries(run_ids, keys)
    with store.ManagedSessionMaker() as session:
        groups, rows = _plain_rows(session, counts), _plain_rows(session, points)
    return groups, np.fromiter(rows, dtype=POINT, count=len(rows))


class _AdbcReader:
    """A SQLite store's chunks read through ADBC's SQLite driver (adbc-driver-sqlite): rows come as Arrow
    columns, not a Python tuple per row, and the driver releases the GIL, so `threads` connections read
    chunks at once. 10,000 runs x 13 keys (2.2 M rows), 2 cores: 6.4 s through Python's sqlite3, 3.7 s
    through ADBC, 2.0 s on 2 threads. Read-only (mode=ro): a report never writes the store."""

    def __init__(self, path: str, threads: int):
        import adbc_driver_sqlite.dbapi as adbc

        self.uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro"
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        self.conns = [adbc.connect(self.uri) for _ in range(threads)]
        for conn in self.conns:
            self.free.put(conn)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for conn in self.conns:
            conn.close()

    def map(self, jobs: list) -> Iterator[tuple[list[tuple], np.ndarray] | None]:
        """Each job's (groups, rows), in order; None for a chunk the driver could not read (say, a column
        whose values change type), which the caller reads through the engine instead."""
        def one(job):
            try:
                return self._chunk(*job)
            except Exception:  # noqa: BLE001 - the engine's path reads the same rows
                return None
        with ThreadPoolExecutor(max_workers=len(self.conns)) as pool:
            yield from pool.map(one, jobs)

    def rows(self, queries: list) -> list[list[tuple]] | None:
        """Each query's rows as tuples (what Python's sqlite3 gives), the queries on the threads at once;
        None if the driver could not read one."""
        def one(q):
            t = self._arrow([q])[0]
            return list(zip(*(col.to_pylist() for col in t.columns)))
        try:
            with ThreadPoolExecutor(max_workers=len(self.conns)) as pool:
                return list(pool.map(one, queries))
        except Exception:  # noqa: BLE001 - the engine's path reads the same rows
            return None

    def _arrow(self, queries: list) -> list:
        """The queries' answers as Arrow tables, on one free connection."""
        from sqlalchemy.dialects import sqlite

        conn = self.free.get()
        try:
            cur = conn.cursor()
            try:
                tables = []
                for q in queries:
                    compiled = q.compile(dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True})
                    cur.execute(str(compiled), [compiled.params[k] for k in compiled.positiontup])
                    tables.append(cur.fetch_arrow_table())
                return tables
            finally:
                cur.close()
        finally:
            self.free.put(conn)

    def _chunk(self, run_ids: list[str], keys: list[str]) -> tuple[list[tuple], np.ndarray]:
        counts, points = self._arrow(history_queries(run_ids, keys, nan_as_null=False))
        groups = list(zip(*(counts.column(i).to_pylist() for i in range(3))))
        rows = np.empty(points.num_rows, dtype=POINT)
        if points.num_rows:  # an empty answer's columns have no type to trust
            rows["step"] = points.column(0).to_numpy()
            rows["value"] = np.where(points.column(2).to_numpy().astype(bool), np.nan, points.column(1).to_numpy())
            rows["timestamp"] = points.column(3).to_numpy()
        return groups, rows


def sqlite_reader(store, threads: int = max(2, min(4, os.cpu_count() or 1))) -> _AdbcReader | None:
    """ADBC's reader over the store's SQLite file; None for another database, an in-memory one, or where
    adbc-driver-sqlite is not installed or cannot open the file (the engine's path reads it then)."""
    from .sqlite import sqlite_path

    path = sqlite_path(str(getattr(store, "db_uri", "")))
    if not path:
        return None
    try:
        return _AdbcReader(path, threads)
    except Exception:  # noqa: BLE001 - no driver, or it cannot open the file: the slower path is the same read
        return None


def runs(store, experiment_id: str) -> list[dict]:
    """Every active run of the experiment as read.search_runs_all gives it (run_id, run_name, status,
    start_time, end_time, params, metrics: the latest values, NaN as NaN; tags), in search_runs' order
    (start_time descending, then run id): one query per table. search_runs builds an ORM object per param,
    tag and metric: 21 CPU s for 10,000 runs, more than their histories."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag

    r = SqlRun.__table__.c
    active = sa.and_(r.experiment_id == int(experiment_id), r.lifecycle_stage == "active")
    queries = [sa.select(r.run_uuid, r.name, r.status, r.start_time, r.end_time)
               .where(active).order_by(r.start_time.desc(), r.run_uuid)]
    for table, field in ((SqlParam, "params"), (SqlTag, "tags"), (SqlLatestMetric, "metrics")):
        t = table.__table__.c
        cols = [t.run_uuid, t.key, t.value] + ([t.is_nan] if field == "metrics" else [])
        queries.append(sa.select(*cols).join_from(table.__table__, SqlRun.__table__, t.run_uuid == r.run_uuid)
                       .where(active))
    reader = sqlite_reader(store)
    with reader or contextlib.nullcontext():
        answers = reader.rows(queries) if reader else None
    if answers is None:
        with store.ManagedSessionMaker() as session:
            answers = [_plain_rows(session, q) for q in queries]
    head, *tables = answers
    out = {rid: {"run_id": rid, "run_name": name or "", "status": status, "start_time": start,
                 "end_time": end, "params": {}, "metrics": {}, "tags": {}}
           for rid, name, status, start, end in head}
    nan = float("nan")
    for field, rows in zip(("params", "tags", "metrics"), tables):
        for row in rows:
            run = out.get(row[0])
            if run is not None:
                run[field][row[1]] = nan if field == "metrics" and row[3] else row[2]
    for run in out.values():  # as MLflow's entity: a run without a name takes its mlflow.runName tag
        if not run["run_name"]:
            run["run_name"] = run["tags"].get("mlflow.runName", "")
    return list(out.values())


def history_queries(run_ids: list[str], keys: list[str], nan_as_null: bool = True):
    """(run_uuid, key, rows) of these runs and keys in (run_uuid, key) order (from the index alone); and their
    rows as (step, value or NULL when is_nan, timestamp) in the same order, within it MLflow's per-run order
    (timestamp, step, value); not nan_as_null: (step, value, is_nan, timestamp), every column one type."""
    import sqlalchemy as sa

    m = _metrics_table().c
    # key || '': the same keys, but no index on key can serve it. Given `key IN (...)`, SQLite (no
    # statistics) walks the primary key (key, timestamp, ...), i.e. every run's rows of each key, for
    # every chunk: 10x the runs read 100x the rows. Now it finds the chunk's rows by run_uuid.
    where = (m.run_uuid.in_(run_ids), m.key.concat("").in_(keys))
    counts = (sa.select(m.run_uuid, m.key, sa.func.count()).where(*where)
              .group_by(m.run_uuid, m.key).order_by(m.run_uuid, m.key))
    value = [sa.case((m.is_nan == sa.true(), sa.null()), else_=m.value)] if nan_as_null else [m.value, m.is_nan]
    points = (sa.select(m.step, *value, m.timestamp).where(*where)
              .order_by(m.run_uuid, m.key, m.timestamp, m.step, m.value))
    return counts, points


def _plain_rows(session, q) -> list[tuple]:
    """The rows of `q` as the database driver's own tuples: SQLAlchemy's Row objects cost as much again as
    the query (1,000 runs x 360 values: 1.65 CPU s against 0.9)."""
    conn = session.connection()
    compiled = q.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    args = tuple(params[k] for k in compiled.positiontup) if conn.dialect.positional else params
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled), args)
        return cursor.fetchall()
    finally:
        cursor.close()


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
    key per 100 runs, `workers` at a time, each through `call` (the client's outage patience). A key whose
    request fails (a server without the endpoint) or whose history alone fills an answer is left over."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.rest_utils import http_request_safe

    result: dict[str, dict] = {rid: {k: [] for k in keys} for rid, keys in keys_by_run.items()}
    runs_of: dict[str, list[str]] = {}
    for rid, keys in keys_by_run.items():
        for k in keys:
            runs_of.setdefault(k, []).append(rid)
    jobs = [(k, ids[i:i + SERVER_RUNS]) for k, ids in sorted(runs_of.items())
            for i in range(0, len(ids), SERVER_RUNS)]
    creds = store.get_host_creds()

    def one(job: tuple[str, list[str]]) -> tuple[str, list[str], dict[str, list], list[str]]:
        key, todo = job
        got: dict[str, list] = {}
        alone: list[str] = []  # runs whose history alone fills an answer: read per run (paged)
        while todo:
            params = {"run_id": todo, "metric_key": key, "max_results": SERVER_VALUES}
            try:
                metrics = call(lambda: http_request_safe(creds, BULK_ENDPOINT, "GET", params=params).json())
            except MlflowException:
                return key, job[1], got, alone + todo
            metrics = metrics.get("metrics", [])
            full = len(metrics) >= SERVER_VALUES
            cut = metrics[-1]["run_id"] if full else None  # the run an answer that is full may have cut off
            before = len(got)
            for m in metrics:  # NaN comes as JSON's NaN
                if m["run_id"] != cut:
                    got.setdefault(m["run_id"], []).append((m["step"], float(m["value"]), m["timestamp"]))
            if not full:
                break
            if len(got) == before:
                alone.append(cut)
            todo = [rid for rid in todo if rid not in got and rid not in alone]
        return key, job[1], got, alone

    left: dict[str, list[str]] = {}
    waiting = {rid: len(keys) for rid, keys in keys_by_run.items()}  # keys still to come, for progress
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, ids, got, rest in pool.map(one, jobs):
            for rid, h in got.items():
                result[rid][key] = h
            for rid in rest:
                left.setdefault(rid, []).append(key)
            finished = 0
            for rid in ids:
                waiting[rid] -= 1
                finished += waiting[rid] == 0 and rid not in left
            if progress is not None and finished:
                progress(finished)
    return result, left
