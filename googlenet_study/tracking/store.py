"""Where runs live: the tracking URI (checked at the edge, set once per process) and one client per URI,
whose calls wait out a tracking server that stays down longer than MLflow's own retries (outage.py)."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from .. import outage
from ..config import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3's own default, in the working folder
DEFAULT_EXPERIMENT = "googlenet-study"
TAG_VALUE_MAX = 5000  # characters; MLflow rejects longer tag values

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
_ALLOWED = "sqlite:///FILE, http(s)://HOST:PORT, postgresql://USER@HOST/DB, mysql://..."


def redact(text: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (anywhere in `text`)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_tracking_uri(uri: str) -> None:
    """Refuse, in one line and before any run exists, a tracking URI that cannot work."""
    from urllib.parse import urlparse

    shown = redact(uri)
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme == "file" or (not scheme and uri):  # MLflow reads a plain path as a file store too
        raise UserError(f"tracking-uri: {shown!r} is a file store, which MLflow 3 keeps in maintenance mode "
                        f"and refuses; use sqlite:///DIR/mlflow.db (or an http(s):// tracking server)")
    if scheme not in _SCHEMES:
        raise UserError(f"tracking-uri: {shown!r} is not a tracking URI; allowed: {_ALLOWED}")
    if scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None
        if folder is None or not folder.is_dir():
            raise UserError(f"tracking-uri: {shown!r}: the folder for the SQLite file does not exist")
    if scheme in ("postgresql", "mysql", "mssql"):
        _check_database(uri, shown)
    if scheme in ("http", "https"):
        _check_server(uri, shown)


def _check_database(uri: str, shown: str) -> None:
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(uri).connect():
            pass
    except Exception as e:  # noqa: BLE001 - driver, DNS, auth: all one line for the user
        first = redact(str(e).strip().splitlines()[0])[:160]
        raise UserError(f"tracking-uri: cannot open {shown} ({first})") from None


def _check_server(uri: str, shown: str) -> None:
    from urllib.error import HTTPError
    from urllib.request import urlopen

    try:
        urlopen(uri.rstrip("/") + "/health", timeout=10)
    except HTTPError:
        pass  # it answers (an auth server may refuse /health): reachable
    except OSError as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"tracking-uri: cannot reach {shown} ({reason}); start the server or fix the URI") from None


def client(uri: str | None = None) -> MlflowClient:
    """The client for `uri` (default: tracking_uri()); also the process's fluent URI, which
    MlflowRun's system-metrics monitor follows. Set only when it changes: set_tracking_uri resets
    MLflow's tracer state and writes MLFLOW_TRACKING_URI for subprocesses."""
    uri = tracking_uri(uri)
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    return _client_for(uri)


@functools.lru_cache(maxsize=None)
def _client_for(uri: str) -> MlflowClient:
    c = MlflowClient(uri)
    if urlparse(uri).scheme not in ("http", "https"):
        return c  # a database store: SQLAlchemy raises on an outage; SQLite waits for its lock
    return _PatientClient(c, outage.Patience(f"the tracking server {redact(uri)}", _transient, _TIMEOUT["s"]))


_TIMEOUT = {"s": outage.DEFAULT_TIMEOUT_S}  # the process's storage_timeout_s (a sweep worker sets it)


def set_timeout(seconds: float) -> None:
    """How long this process's clients wait out a tracking server outage (a study's storage_timeout_s)."""
    _TIMEOUT["s"] = float(seconds)
    for c in _PatientClient.made:
        c.patience.timeout_s = float(seconds)


def _transient(e: BaseException) -> bool:
    """MLflow gave up retrying a request: the server is down or answers 5xx (restarting, overloaded)."""
    text = str(e)
    return isinstance(e, MlflowException) and any(s in text for s in (
        "Max retries exceeded", "timeout exception", "Connection refused", "ConnectionError", "Connection aborted",
        "Remote end closed", "too many 5"))


class _PatientClient:
    """An MlflowClient whose methods are retried through an outage; everything else passes through."""
    made: list[_PatientClient] = []

    def __init__(self, c: MlflowClient, patience: outage.Patience) -> None:
        self._c, self.patience = c, patience
        _PatientClient.made.append(self)

    def __getattr__(self, name: str):
        attr = getattr(self._c, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        return lambda *a, **k: self.patience.call(lambda: attr(*a, **k))


def experiment_id(c: MlflowClient, name: str, create: bool = True) -> str | None:
    """The experiment's id, created if missing (two workers racing both end with the same id)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if not create:
        return None
    try:
        return c.create_experiment(name)
    except MlflowException:  # created meanwhile by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def as_tags(d: dict[str, str]) -> list[RunTag]:
    """MLflow tags, credentials redacted and values cut to what MLflow accepts."""
    return [RunTag(k, redact(str(v))[:TAG_VALUE_MAX]) for k, v in d.items()]
