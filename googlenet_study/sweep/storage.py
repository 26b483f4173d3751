"""Optuna storages for sweeps: SQLite made safe for several processes; PostgreSQL (a plain
postgresql:// URL: SQLAlchemy 2.1 reads it as psycopg 3, the driver this project depends on).

Optuna pops a WAITING trial by reading it and then setting it RUNNING. PostgreSQL locks the row
(SELECT ... FOR UPDATE); SQLite has no row locks and pysqlite runs the SELECT outside a transaction,
so two processes could both pop one grid point (seen here: a 4-process race ran a point twice and
crashed Optuna with "Cannot tell a COMPLETE trial"). Hence BEGIN IMMEDIATE below.

Every call a worker makes (ask, report, should_prune, tell, heartbeat, user attrs) goes through
PatientStorage: a database that is down or restarting is waited for (sweep/outage.py) instead of ending
the trial FAILED."""

from __future__ import annotations

import os
import random
import time
import warnings
from pathlib import Path

import optuna

from . import outage
from ..config import UserError
from ..tracking import redact, sqlite, url_problem

# A RUNNING trial writes a heartbeat this often (RDB storages), and is failed (and retried) when none
# came for GRACE_S. Seconds; the environment may shorten them (tests kill workers and wait for this).
HEARTBEAT_S = int(os.environ.get("GOOGLENET_STUDY_HEARTBEAT_S", 60))
GRACE_S = int(os.environ.get("GOOGLENET_STUDY_GRACE_S", 180))
SQLITE_LOCK_TIMEOUT_S = 300  # a worker waits this long for SQLite's write lock before "database is locked"


def default_storage(uri: str) -> str:
    """sqlite:///optuna.db next to a SQLite mlflow.db, else in the working folder."""
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).parent / 'optuna.db'}"
    return "sqlite:///optuna.db"


# The storage's methods that reach the database (Optuna's _CachedStorage calls the private ones).
RETRIED = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
           "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
           "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
           "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param", "get_trial_param",
           "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
           "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials",
           "get_best_trial", "_get_best_trial_id", "record_heartbeat")


def transient(e: BaseException) -> bool:
    """A database error that passes: the server down, restarting, or dropping our connection."""
    import sqlalchemy

    kinds = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError,
             sqlalchemy.exc.PendingRollbackError)
    seen = set()
    while e is not None and id(e) not in seen:  # Optuna wraps them in StorageInternalError
        if isinstance(e, kinds) or type(e).__name__ == "OperationalError":  # psycopg's own
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


class PatientStorage(optuna.storages.RDBStorage):
    """RDBStorage whose database calls wait out an outage (set `patience` after construction)."""
    patience: outage.Patience | None = None

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """None for a while after an outage: it stopped every worker's heartbeat, so a stale one does not
        mean a dead worker until the live ones have had GRACE_S to beat again."""
        if self.patience is None:
            return super()._get_stale_trial_ids(study_id)
        back = self.patience.back_at
        if back is not None and time.monotonic() - back < GRACE_S:
            return []
        return self.patience.call(lambda: super(PatientStorage, self)._get_stale_trial_ids(study_id))


def _patient(name: str):
    inner = getattr(optuna.storages.RDBStorage, name)

    def method(self, *args, **kwargs):
        if self.patience is None:
            return inner(self, *args, **kwargs)
        try:
            return self.patience.call(lambda: inner(self, *args, **kwargs))
        except outage.Unavailable:
            if name == "record_heartbeat":  # Optuna's heartbeat thread: the trial's next write raises it
                return None
            raise
    method.__name__, method.__doc__ = name, inner.__doc__
    return method


for _name in RETRIED:
    setattr(PatientStorage, _name, _patient(_name))


def check_url(url: str) -> None:
    """Refuse, in one line and without connecting, a storage URL of a kind Optuna cannot use here."""
    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://", "mysql")):
        raise UserError(f"--storage: {redact(url)!r}: use sqlite:///FILE or postgresql://USER@HOST/DB")
    problem = url_problem(url)  # a raw '@' in the password: SQLAlchemy would send half and print the rest
    if problem:
        raise UserError(f"--storage: {problem}")
    path = sqlite.sqlite_path(url)
    if path is not None:  # read only: a refused file is left as it was, a missing one not made
        try:
            sqlite.check_file(path, "an Optuna database", sqlite.OPTUNA_TABLES, write=True)
        except sqlite.StoreFault as e:
            raise UserError(f"--storage: {e}") from None


def check_distinct(storage_url: str, tracking_uri: str) -> None:
    """One SQLite file for both stores would get Optuna's tables written into the MLflow database: refused."""
    a, b = sqlite.sqlite_path(storage_url), sqlite.sqlite_path(tracking_uri)
    if a and b and sqlite.same_file(a, b):
        raise UserError(f"--storage: {a} is also the --tracking-uri's file; Optuna and MLflow each need their "
                        f"own database (the default: optuna.db beside mlflow.db)")


def open_storage(url: str, max_retries: int = 0, timeout_s: float = outage.DEFAULT_TIMEOUT_S,
                 stale_callback=None) -> PatientStorage:
    """An RDB storage with heartbeats that waits out outages up to timeout_s; SQLite made safe for
    several processes (see module doc). stale_callback: what to do with a dead worker's trial
    (default: Optuna's retry, up to max_retries)."""
    check_url(url)
    import sqlalchemy

    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat_interval is "experimental"
                storage = PatientStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=stale_callback
                    or optuna.storages.RetryHeartbeatStaleTrialCallback(max_retries))
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                sqlalchemy.exc.OperationalError) as e:
            # Two processes creating the tables at once: one loses, tries again and finds them. A server
            # that refuses the connection (psycopg 2 "could not connect", psycopg 3 "connection failed")
            # will not answer a retry half a second later: say so at once.
            refused = not sqlite and ("could not connect" in str(e) or "connection failed" in str(e))
            if attempt == 5 or refused or "unable to open" in str(e):
                first = str(getattr(e, "orig", e)).strip().splitlines()[0]
                raise UserError(f"--storage: cannot open {redact(url)}: {redact(first)}") from None
            time.sleep(0.5 + random.random())
    if sqlite:
        _serialize_sqlite(storage.engine)
    storage.patience = outage.Patience(f"the Optuna storage {redact(url)}", transient, timeout_s)
    return storage


def _serialize_sqlite(engine) -> None:
    """Every SQLite transaction starts with BEGIN IMMEDIATE (takes the write lock, waiting up to the
    busy timeout). pysqlite otherwise runs SELECTs outside a transaction, so two workers could both
    read a grid trial as WAITING and both run it; and a deferred transaction that later needs the
    write lock fails at once with "database is locked" instead of waiting."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" below issues BEGIN itself

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed
