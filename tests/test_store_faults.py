"""Store faults, made for real: damaged SQLite files (bytes overwritten, random, truncated), a read-only mount,
a full tmpfs, a folder or memory for a tracking URI, one file for both stores, a full checkpoint disk, a
sweep's parent run deleted mid-study. Each is one line naming the file or folder (exit 2 before a run exists),
or a FAILED run whose reason says what to do.

Mounts are made with mount(2) through ctypes (no process): CI runs as root. Where mounting is not allowed the
tests skip, saying why; on CI (CI=true, .ci/run) that skip is a failure (conftest.skip_or_fail)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import new_store, skip_or_fail
from googlenet_study.cli import main

TINY = ["--model", "googlenet", "--dataset", "digits", "--weights", "none", "--image-size", "16", "--epochs", "1",
        "--train-size", "50", "--test-size", "20", "--system-metrics", "false"]
STUDY = Path(__file__).resolve().parent.parent / "experiments" / "demo.yaml"
MS_RDONLY, MS_REMOUNT, MNT_DETACH = 1, 32, 2
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "2m"):
    """A real tmpfs of `size` mounted at `where` (made if missing), unmounted at the end."""
    where.mkdir(parents=True, exist_ok=True)
    if _libc.mount(b"tmpfs", os.fsencode(where), b"tmpfs", 0, f"size={size}".encode()) != 0:
        skip_or_fail(f"cannot mount a tmpfs ({os.strerror(ctypes.get_errno())}): these tests need root "
                     f"(CI runs as root)")
    try:
        yield where
    finally:
        _libc.umount2(os.fsencode(where), MNT_DETACH)


def read_only(where: Path) -> None:
    """Remount the tmpfs at `where` read-only (root too is refused writes: EROFS)."""
    if _libc.mount(b"tmpfs", os.fsencode(where), b"tmpfs", MS_REMOUNT | MS_RDONLY, b"") != 0:
        skip_or_fail(f"cannot remount read-only ({os.strerror(ctypes.get_errno())})")


def fill(folder: Path) -> None:
    """Write zeros into `folder` until its file system is full (ENOSPC), for real."""
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        with contextlib.suppress(OSError):
            f.close()
    assert os.statvfs(folder).f_bavail == 0


def one_line(capsys, argv: list[str]) -> tuple[int, str]:
    """Run the command line here; its exit status and its only stderr line (MLflow's INFO lines aside)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln and not ln.startswith("20")]
    assert len(err) == 1, err
    return code, err[0]


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def damaged(kind: str, db: Path) -> bytes:
    """A real MLflow store at `db`, then damaged: random bytes, bytes overwritten in its header, or cut short."""
    if kind == "random":
        db.write_bytes(os.urandom(40_000))
    else:
        new_store(db)
        data = bytearray(db.read_bytes())
        if kind == "overwritten":
            data[:16] = b"this is not one!"
        else:  # truncated: a copy that stopped half-way
            data = data[:len(data) // 2]
        db.write_bytes(bytes(data))
    return db.read_bytes()


@pytest.mark.parametrize("kind", ["random", "overwritten", "truncated"])
@pytest.mark.parametrize("command", ["train", "report"])
def test_a_damaged_mlflow_db_is_one_line_naming_it(kind, command, here, capsys):
    db = here / "mlflow.db"
    before = damaged(kind, db)
    argv = {"train": ["train", *TINY], "report": ["report", "--experiment", "x"]}[command]
    code, err = one_line(capsys, [*argv, "--tracking-uri", f"sqlite:///{db}"])
    assert code == 2 and f"{db} is not an MLflow database" in err, err
    assert db.read_bytes() == before  # left as it was, for the user to restore
    assert sorted(p.name for p in here.iterdir()) == ["mlflow.db"]  # no run, no checkpoint, no mlruns/


def test_an_optuna_db_given_as_the_tracking_store_is_named_for_what_it_is(here, capsys):
    db = here / "optuna.db"
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("create table studies (study_id integer)")
        con.execute("create table version_info (version_info_id integer)")
    code, err = one_line(capsys, ["train", *TINY, "--tracking-uri", f"sqlite:///{db}"])
    assert code == 2 and "is not an MLflow database: it is an Optuna database" in err, err


def test_mlflow_db_on_a_read_only_file_system_is_refused_before_training(here, capsys):
    with tmpfs(here / "ro") as mnt:
        new_store(mnt / "mlflow.db")
        read_only(mnt)
        code, err = one_line(capsys, ["train", *TINY, "--tracking-uri", f"sqlite:///{mnt}/mlflow.db"])
    assert code == 2 and "read-only file system" in err and str(mnt) in err, err
    assert not (here / ".checkpoints").exists()


def test_a_report_reads_a_store_on_a_read_only_file_system(here, capsys):
    """Reading needs no write: the same mount refused for train is fine for report (it finds no experiment)."""
    with tmpfs(here / "ro") as mnt:
        new_store(mnt / "mlflow.db")
        read_only(mnt)
        code, err = one_line(capsys, ["report", "--experiment", "nope", "--tracking-uri",
                                      f"sqlite:///{mnt}/mlflow.db", "--out", str(here / "out")])
    assert code == 2 and "no experiment named 'nope'" in err, err


@pytest.mark.parametrize("exists", [True, False], ids=["store", "no-store-yet"])
def test_mlflow_db_on_a_full_disk_is_no_space_left_naming_the_folder(exists, here, capsys):
    with tmpfs(here / "full") as mnt:
        if exists:
            new_store(mnt / "mlflow.db")
        fill(mnt)
        code, err = one_line(capsys, ["train", *TINY, "--tracking-uri", f"sqlite:///{mnt}/mlflow.db"])
        assert code == 2 and f"no space left on device: {mnt}" in err, err
        assert (mnt / "mlflow.db").exists() == exists


@pytest.mark.parametrize("uri", ["sqlite:///{tmp}/folder", "sqlite:///", "sqlite://", "sqlite:///:memory:"])
def test_a_tracking_uri_naming_a_folder_or_memory_is_one_line_before_training(uri, here, capsys, monkeypatch):
    (here / "folder").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(tmp=here))
    code, err = one_line(capsys, ["train", *TINY])
    assert code == 2 and err.startswith("googlenet-study train: error: tracking-uri:"), err
    assert ("is a folder" in err) if "folder" in uri else ("in-memory" in err), err
    assert sorted(p.name for p in here.iterdir()) == ["folder"]  # nothing trained, nothing written


def test_a_garbage_optuna_db_is_one_line_and_no_database_is_made(here, capsys):
    (here / "optuna.db").write_bytes(os.urandom(10_000))
    code, err = one_line(capsys, ["sweep", str(STUDY), "--tracking-uri", f"sqlite:///{here}/mlflow.db"])
    assert code == 2 and f"--storage: {here / 'optuna.db'} is not an Optuna database" in err, err
    assert sorted(p.name for p in here.iterdir()) == ["optuna.db"]  # no mlflow.db made first


def test_an_mlflow_db_given_as_the_optuna_storage_is_refused(here, capsys):
    new_store(here / "mlflow.db")
    code, err = one_line(capsys, ["sweep", str(STUDY), "--tracking-uri", f"sqlite:///{here}/other.db",
                                  "--storage", f"sqlite:///{here}/mlflow.db"])
    assert code == 2 and "is not an Optuna database: it is an MLflow database" in err, err


@pytest.mark.parametrize("made", [True, False], ids=["existing", "new"])
def test_one_file_for_both_stores_is_one_line(made, here, capsys):
    if made:
        new_store(here / "both.db")
    before = (here / "both.db").read_bytes() if made else None
    code, err = one_line(capsys, ["sweep", str(STUDY), "--tracking-uri", f"sqlite:///{here}/both.db",
                                  "--storage", f"sqlite:///{here}/./both.db"])
    assert code == 2 and "is also the --tracking-uri's file" in err, err
    assert ((here / "both.db").read_bytes() if made else (here / "both.db").exists()) == (before if made else False)
