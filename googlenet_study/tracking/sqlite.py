"""SQLite files of both stores (MLflow's mlflow.db, Optuna's optuna.db), checked before either library opens
them: a file that is not a database, a truncated one, one holding the other store's tables, a folder, an
in-memory URL, a read-only or full file system. Each is one line here; inside MLflow or Optuna each was a
traceback of 160 to 220 lines (or, for a folder, two minutes of retries first).

The checks read the file only: its 100-byte header (the page count SQLite wrote there; a file shorter than
that is truncated) and its table names, through a read-only connection, so a refused file is left as it was
and a missing one is not created."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote, unquote

MIN_FREE_BYTES = 1 << 20  # a store needs room for its tables (~0.4 MB for MLflow's) and SQLite's journal
HEADER = b"SQLite format 3\x00"
# Tables that say whose a database is; a file holding none of ours but some other tables is someone else's.
MLFLOW_TABLES = frozenset({"experiments", "runs", "alembic_version"})
OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})


class StoreFault(Exception):
    """A store's file cannot be used: str(e) is the one line to show (config.UserError wraps it)."""


def sqlite_path(url: str) -> str | None:
    """The file a sqlite:/// URL names ('' for an in-memory database); None for other URLs."""
    if not url.lower().startswith("sqlite:"):
        return None
    rest = url.split(":", 1)[1]
    if not rest.startswith("///"):  # sqlite:// or sqlite: alone: SQLAlchemy opens a database in memory
        return ""
    path = unquote(rest[3:].split("?", 1)[0])
    return "" if path in ("", ":memory:") else path


def check_file(path: str, what: str, ours: frozenset[str], write: bool) -> None:
    """Refuse `path` as the `what` ("an MLflow database") in one line unless it is missing (made on first
    use), empty, or an intact SQLite database holding `ours` tables; with `write`, also a read-only or full
    file system. Raises StoreFault."""
    if path == "":
        raise StoreFault(f"an in-memory SQLite database is gone when the process ends; name a file "
                         f"(sqlite:///DIR/{_name(what)})")
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise StoreFault(f"{p}: {e.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise StoreFault(f"{p} is a folder, not {what} file; name a file in it (sqlite:///{p / _name(what)})")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise StoreFault(f"{p} is not {what} (not a regular file)")
    if st is not None and st.st_size > 0:
        _check_content(p, what, ours, st.st_size)
    if write:
        _check_writable(p, what, st is not None)


def _name(what: str) -> str:
    return "optuna.db" if "Optuna" in what else "mlflow.db"


def _check_content(p: Path, what: str, ours: frozenset[str], size: int) -> None:
    """The header says SQLite and a size the file has; the tables are ours (or there are none yet).

    The size is compared under SQLite's shared lock (a read transaction): a writer in another process (a sweep's
    worker) writes page 1, with the new page count, before the pages it appends, and takes the lock to do so."""
    with open(p, "rb") as f:
        if not f.read(16) == HEADER:
            raise StoreFault(f"{p} is not {what} (not an SQLite file); move it away or name another file")
    try:
        con = sqlite3.connect(f"file:{quote(str(p.resolve()))}?mode=ro", uri=True, timeout=30, isolation_level=None)
        try:
            con.execute("begin")
            try:
                tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
            except sqlite3.DatabaseError as e:
                tables = e
            _check_size(p, what, p.with_name(p.name + "-wal").exists())
            con.execute("commit")
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        tables = e
    if isinstance(tables, sqlite3.DatabaseError):
        raise StoreFault(f"{p} is not {what} ({tables}); restore it from a backup or move it away") from None
    tables = {t for t in tables if not t.startswith("sqlite_")}
    if tables and not tables & ours:
        other = ("an Optuna database" if tables & OPTUNA_TABLES else "an MLflow database"
                 if tables & MLFLOW_TABLES else "another program's database")
        raise StoreFault(f"{p} is not {what}: it is {other} (tables {', '.join(sorted(tables)[:4])}); "
                         f"name another file")


def _check_size(p: Path, what: str, wal: bool) -> None:
    """A file shorter than its header says (a copy cut short); a WAL file's pages may live in its -wal."""
    with open(p, "rb") as f:
        header = f.read(100)
        size = os.fstat(f.fileno()).st_size
    if len(header) < 100:
        raise StoreFault(f"{p} is not {what}: it is truncated ({size} bytes); restore it from a backup or "
                         f"move it away")
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page  # bytes; 1 encodes 65536
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the page count is only kept by SQLite >= 3.7.0 writers
    if valid and pages and not wal and size < pages * page:
        raise StoreFault(f"{p} is not {what}: it is truncated ({size} of {pages * page} bytes); restore it "
                         f"from a backup or move it away")


def _check_writable(p: Path, what: str, exists: bool) -> None:
    """SQLite writes the file and, beside it, its journal: both need a writable folder with room."""
    folder = p.parent if str(p.parent) else Path(".")
    try:
        vfs = os.statvfs(folder)
    except OSError as e:
        raise StoreFault(f"{folder}: {e.strerror}") from None
    if vfs.f_flag & os.ST_RDONLY:
        raise StoreFault(f"{p}: the folder {folder} is on a read-only file system; {what} must be writable "
                         f"(copy it to a writable folder, or use another --tracking-uri / --storage)")
    if not os.access(folder, os.W_OK) or (exists and not os.access(p, os.W_OK)):
        raise StoreFault(f"{p}: not writable by this user; {what} must be writable (its folder too, for "
                         f"SQLite's journal)")
    if vfs.f_bavail * vfs.f_frsize < MIN_FREE_BYTES:
        raise StoreFault(f"no space left on device: {folder} ({vfs.f_bavail * vfs.f_frsize // 1024} KiB free "
                         f"for {p.name}); free some space or use another folder")


def same_file(a: str, b: str) -> bool:
    """Do two SQLite paths name one file (an existing one by inode, else by resolved path)?"""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
