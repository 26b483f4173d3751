"""Where runs live: the tracking URI (checked at the edge, set once per process) and one client per URI,
whose calls wait out a tracking server that stays down longer than MLflow's own retries (sweep/outage.py)."""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from ..sweep import outage
from . import sqlite
from ..config import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3's own default, in the working folder
DEFAULT_EXPERIMENT = "googlenet-study"
TAG_VALUE_MAX = 5000  # characters; MLflow rejects longer tag values

_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
_ALLOWED = "sqlite:///FILE, http(s)://HOST:PORT, postgresql://USER@HOST/DB, mysql://..."
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")  # a URL runs to the next white space
# Query keys whose values are credentials: password=, pass=, pwd=, secret=, token=, api_key=, sslpassword=, ...
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature", re.IGNORECASE)
HIDDEN = "***"


def redact(text: str) -> str:
    """`text` with every credential in every URL in it replaced by ***: a password in the user part (raw
    '/', '@', ':' and %-escapes included) and the values of credential query keys (?password=, &token=).

    Each URL is read the way its library reads it (sqlalchemy.engine.make_url for database URLs, urllib.parse
    for the others) and, more widely, as a person may have meant it: the password runs from the first ':' of
    the user part to the *last* '@' (make_url ends it at the first, urllib at the first '/'). Whatever either
    reading takes for a secret is hidden, so a URL a library misreads still shows none of it; a credential-free
    URL comes back unchanged."""
    return _URL.sub(lambda m: _redact_url(m.group()), text)


def _redact_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    hide = [False] * len(rest)  # which characters of `rest` are secret
    at = rest.rfind("@")
    colon = rest.find(":", 0, at) if at > 0 else -1
    if colon >= 0:  # user:password@ (a bare user@ is no secret)
        hide[colon + 1:at] = [True] * (at - colon - 1)
    query = rest.find("?", at + 1)
    if query >= 0:
        for m in re.finditer(r"([^&;=]*)=([^&;]*)", rest[query + 1:]):
            if _SECRET_KEY.search(m.group(1)):
                start = query + 1 + m.start(2)
                hide[start:start + len(m.group(2))] = [True] * len(m.group(2))
    for secret in _parsed_secrets(url):  # what the library itself would send, wherever it sits
        for m in re.finditer(re.escape(secret), rest):
            hide[m.start():m.end()] = [True] * len(secret)
    out, i = [], 0
    while i < len(rest):  # each run of hidden characters becomes one ***
        if hide[i]:
            while i < len(rest) and hide[i]:
                i += 1
            out.append(HIDDEN)
        else:
            out.append(rest[i])
            i += 1
    return f"{scheme}://{''.join(out)}"


def _parsed_secrets(url: str) -> list[str]:
    """The password and credential query values as the URL's own library parses them (raw and %-encoded)."""
    from urllib.parse import parse_qsl, quote, urlsplit

    found = []
    try:
        if url.split(":", 1)[0].lower().split("+")[0] in ("http", "https"):
            u = urlsplit(url)
            found += [u.password or ""] + [v for k, v in parse_qsl(u.query) if _SECRET_KEY.search(k)]
        else:
            from sqlalchemy.engine import make_url

            u = make_url(url)
            found += [u.password or ""] + [v for k, v in u.query.items() if _SECRET_KEY.search(k)
                                           for v in ([v] if isinstance(v, str) else v)]
    except Exception:  # noqa: BLE001 - not a URL either library reads: the wider reading above stands
        return []
    return [x for s in found if s for x in {s, quote(s, safe="")}]


def tracking_uri(explicit: str | None = None) -> str:
    """The URI in use (flag, else $MLFLOW_TRACKING_URI, else the default). An http(s) URI's user:password@
    moves into MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, where MLflow's client (and this process's
    workers) read basic-auth credentials, and the URI comes back without them: it is logged and printed."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    problem = url_problem(uri)  # first: a misread user part would move half a password into the host
    if problem:
        raise UserError(f"tracking-uri: {problem}")
    return _credentials_to_environment(uri)


def _credentials_to_environment(uri: str) -> str:
    from urllib.parse import unquote, urlsplit, urlunsplit

    if not uri.lower().startswith(("http://", "https://")):
        return uri
    try:
        u = urlsplit(uri)
    except ValueError:  # an unclosed '[' (IPv6): left to the check, which names the URI redacted
        return uri
    if "@" not in u.netloc:
        return uri
    user, _, password = u.netloc.rpartition("@")[0].partition(":")
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
    os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return urlunsplit(u._replace(netloc=u.netloc.rpartition("@")[2]))


def url_problem(url: str) -> str | None:
    """Why `url`'s library would misread it, and so perhaps print a piece of its password (None if it would
    not): white space or control characters, or a password holding a character where that parser ends the
    password: a raw '@' for SQLAlchemy's make_url (it takes the rest for the host, which drivers print), a raw
    '/', '?' or '#' for urllib (http). The answer shows the URL redacted, never the password."""
    if not url.isprintable() or (" " in url and not url.startswith("sqlite:")):  # (a SQLite path may hold a space)
        return "the URL holds white space or a control character; %-encode it (a password too)"
    scheme, _, rest = url.partition("://")
    at = rest.rfind("@")  # read as redact() does: the password runs to the last '@'
    user, has_password, password = rest[:max(at, 0)].partition(":")
    if at < 0 or not has_password or any(c in user for c in "/?#"):
        return None
    http = scheme.lower() in ("http", "https")
    if http and re.fullmatch(r"\d+", re.split(r"[/?#]", password)[0]):
        return None  # host:port/path@...: an '@' in the path, no password
    bad = sorted({c for c in password if c in ("/?#" if http else "@")})
    if not bad:
        return None
    return (f"{redact(url)}: its password holds a raw {' '.join(bad)}, where the URL parser ends a password; "
            f"write it %-encoded ({' '.join(f'%{ord(c):02X}' for c in bad)}; urllib.parse.quote(password, safe=''))")


def check_tracking_uri(uri: str, write: bool = True) -> None:
    """Refuse, in one line and before any run exists, a tracking URI that cannot work; with `write`
    (train, sweep, reproduce), also a SQLite store on a read-only or full file system (sqlite.py)."""
    from urllib.parse import urlparse

    problem = url_problem(uri)
    if problem:
        raise UserError(f"tracking-uri: {problem}")
    uri = _credentials_to_environment(uri)
    shown = redact(uri)
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme == "file" or (not scheme and uri):  # MLflow reads a plain path as a file store too
        raise UserError(f"tracking-uri: {shown!r} is a file store, which MLflow 3 keeps in maintenance mode "
                        f"and refuses; use sqlite:///DIR/mlflow.db (or an http(s):// tracking server)")
    if scheme not in _SCHEMES:
        raise UserError(f"tracking-uri: {shown!r} is not a tracking URI; allowed: {_ALLOWED}")
    if scheme == "sqlite":
        path = sqlite.sqlite_path(uri)
        if path and not Path(path).parent.is_dir():
            raise UserError(f"tracking-uri: {shown!r}: the folder for the SQLite file does not exist")
        try:
            sqlite.check_file(path, "an MLflow database", sqlite.MLFLOW_TABLES, write)
        except sqlite.StoreFault as e:
            raise UserError(f"tracking-uri: {e}") from None
    if scheme in ("postgresql", "mysql", "mssql"):
        _check_database(uri, shown)
    if scheme in ("http", "https"):
        _check_server(uri, shown)


def full_store(e: BaseException, uri: str) -> str | None:
    """'no space left on device: FOLDER' when `e`, or what caused it, is SQLite's "database or disk is full"
    for the store at `uri`; else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        if "database or disk is full" in str(e):
            path = sqlite.sqlite_path(uri)
            return f"no space left on device: {Path(path).absolute().parent if path else redact(uri)}"
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class _FullStoreSaidOnce(logging.Filter):
    """MLflow logs a traceback for each failed write (mlflow.store.db.utils); a full disk is said in one line
    instead (full_store, train.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database or disk is full" not in str(record.exc_info[1] if record.exc_info else record.msg)


logging.getLogger("mlflow.store.db.utils").addFilter(_FullStoreSaidOnce())


def _check_database(uri: str, shown: str) -> None:
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(uri).connect():
            pass
    except Exception as e:  # noqa: BLE001 - driver, DNS, auth: all one line for the user
        first = redact(str(e).strip().splitlines()[0])[:160]
        raise UserError(f"tracking-uri: cannot open {shown} ({first})") from None


def _check_server(uri: str, shown: str) -> None:
    """The server answers, and takes the basic-auth credentials MLflow's client will send (a server without
    auth ignores them): one read request, as the client makes it."""
    from base64 import b64encode
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    try:
        urlopen(uri.rstrip("/") + "/health", timeout=10)
    except HTTPError:
        pass  # it answers (an auth server may refuse /health): reachable
    except OSError as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"tracking-uri: cannot reach {shown} ({reason}); start the server or fix the URI") from None
    req = Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        pair = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        req.add_header("Authorization", "Basic " + b64encode(pair).decode())
    try:
        urlopen(req, timeout=60)  # s: a basic-auth server hashes the password on every request (slow when busy)
    except HTTPError as e:
        if e.code == 401:
            given = ("refused the user and password given (in the URI, or MLFLOW_TRACKING_USERNAME / _PASSWORD)"
                     if user else "asks for a user and password: set MLFLOW_TRACKING_USERNAME and "
                     "MLFLOW_TRACKING_PASSWORD (or write http://USER:PASSWORD@HOST:PORT)")
            raise UserError(f"tracking-uri: {shown} {given}") from None
    except OSError:
        pass  # answered /health: a slow or odd answer here is left to the client's own retries


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
    if exp is not None and exp.lifecycle_stage == "deleted":  # MLflow refuses runs in it, with a traceback
        raise UserError(f"--experiment: {name!r} is a deleted experiment (id {exp.experiment_id}); restore it "
                        f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or name another")
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
