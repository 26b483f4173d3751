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
import time
from pathlib import Path

import pytest

from helpers import new_store, skip_or_fail
from helpers.loop import ListTracker
from googlenet_study import schema
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


def test_a_full_checkpoint_disk_logs_the_epoch_then_names_the_folder(here):
    """The loop against a real full disk: epoch 1 ends, its checkpoint (~45 MB) meets a 4 MB tmpfs; the epoch
    is still logged, and the error names the folder (today: RuntimeError "inline_container.cc unexpected pos")."""
    from googlenet_study import checkpoint as ckpt
    from googlenet_study import data as data_mod
    from googlenet_study import engine, model
    from googlenet_study.config import RunConfig
    from googlenet_study.device import place

    cfg = RunConfig(model="googlenet", dataset="digits", weights="none", image_size=16, epochs=2, batch_size=8,
                    train_size=24, test_size=10, threads=1, device="cpu", system_metrics=False).resolve()
    engine.seed_everything(cfg)
    net, dataset = model.build(cfg)[0], data_mod.load(cfg)
    tracker = ListTracker()

    with tmpfs(here / "ckpt", "4m") as mnt:
        saver = ckpt.RunCheckpoint(ckpt.path_for(mnt, cfg, "a" * 32), ckpt.RunIdentity.of(cfg, "a" * 32, None, None))
        with pytest.raises(engine.NoSpace) as e:
            engine.fit(cfg, net, *data_mod.batches(cfg, dataset, place(cfg, net)), tracker,
                       engine.Hooks(progress=False, should_stop=lambda: False), checkpoint=saver)
        left = [p.name for p in saver.path.parent.iterdir()]
    assert str(e.value).startswith(f"no space left on device: {saver.path.parent}; epoch 1's metrics are logged")
    assert [ep for ep, *_ in tracker.logged] == [1] and 0 <= tracker.logged[0][1]["test_acc"] <= 1
    assert left == []  # no temp file, no half checkpoint


@pytest.mark.slow
def test_a_checkpoint_disk_full_at_epoch_2_fails_naming_it_and_the_resume_logs_each_epoch_once(here, capsys):
    """Through the command line: a 180 MB tmpfs holds epoch 1's checkpoint (120 MB) but not epoch 2's beside it.
    The run ends FAILED naming the folder, with epoch 2 logged; once the disk has room, the same command resumes
    from epoch 1's checkpoint, trains epoch 2 again and finishes with each epoch logged once."""
    from mlflow import MlflowClient

    uri = new_store(here / "mlflow.db")
    argv = ["train", *TINY, "--epochs", "2", "--train-size", "30", "--test-size", "10", "--batch-size", "32",
            "--tracking-uri", uri]
    with tmpfs(here / "ckpt", "180m") as mnt:
        assert main([*argv, "--checkpoint-dir", str(mnt)]) == 1
        out = capsys.readouterr().out.strip().splitlines()[-1]
        c = MlflowClient(uri)
        (run,) = c.search_runs([c.get_experiment_by_name("googlenet-study").experiment_id])
        folder = next(mnt.iterdir())  # <checkpoint dir>/<config hash>
        assert run.info.status == "FAILED" and f"FAILED: no space left on device: {folder}; epoch 2's" in out, out
        assert run.data.tags[schema.FAILURE_REASON_TAG].startswith(f"no space left on device: {folder}")
        assert [m.step for m in c.get_metric_history(run.info.run_id, schema.ACCURACY)] == [1, 2]
        assert [p.name for p in folder.iterdir()] == [f"{run.info.run_id}.ckpt"]  # epoch 1's, no temp file
        _libc.mount(b"tmpfs", os.fsencode(mnt), b"tmpfs", MS_REMOUNT, b"size=400m")  # the user frees space
        assert main([*argv, "--checkpoint-dir", str(mnt)]) == 0
    assert "FINISHED: 2 epochs" in capsys.readouterr().out
    assert c.get_run(run.info.run_id).info.status == "FINISHED"
    for key in (schema.ACCURACY, schema.CLOCK):
        assert [m.step for m in c.get_metric_history(run.info.run_id, key)] == [1, 2], key


def test_report_out_on_an_empty_mount_point_is_refused_before_the_build(here, capsys):
    """The finished report is renamed onto --out: a mount point refuses that (EBUSY, once the whole report was
    built); it is refused first, in one line."""
    new_store(here / "mlflow.db")
    with tmpfs(here / "mnt") as mnt:
        code, err = one_line(capsys, ["report", "--experiment", "nope", "--out", str(mnt),
                                      "--tracking-uri", f"sqlite:///{here}/mlflow.db"])
        assert code == 2 and f"--out: {mnt} is a mount point" in err and "nope" not in err, err
        assert list(mnt.iterdir()) == []


@pytest.mark.parametrize("where", ["{mnt}/report", "{mnt}/new/report"])
def test_report_out_on_a_full_disk_is_no_space_left_before_the_build(where, here, capsys):
    new_store(here / "mlflow.db")
    with tmpfs(here / "full") as mnt:
        fill(mnt)
        code, err = one_line(capsys, ["report", "--experiment", "nope", "--out", where.format(mnt=mnt),
                                      "--tracking-uri", f"sqlite:///{here}/mlflow.db"])
        assert code == 2 and f"--out: no space left on device: {mnt}" in err, err
        assert [p.name for p in mnt.iterdir()] == ["filler"]


@pytest.mark.slow
def test_report_out_filling_the_disk_mid_build_is_one_line_and_leaves_nothing(shared_run, here, capsys, no_pdf):
    """Room for the up-front check (1 MB) but not for the report's figures: the disk fills during the build.
    One line naming the folder, exit 2, and no half report or temporary folder left (today: ENOSPC traceback)."""
    with tmpfs(here / "small", "1200k") as mnt:
        code, err = one_line(capsys, ["report", "--experiment", "shared", "--out", str(mnt / "r"),
                                      "--tracking-uri", shared_run["uri"]])
        assert code == 2 and f"--out: no space left on device: {mnt}" in err, err
        assert list(mnt.iterdir()) == []


@pytest.mark.slow
def test_a_parent_run_deleted_mid_study_the_trials_finish_the_rerun_says_how_to_go_on(here, capsys):
    """The parent run is moved to MLflow's trash (MlflowClient.delete_run) while the first of two trials trains.
    Both trials still run; the sweep ends with one line (today: an MlflowException traceback at the end); a rerun
    says to restore the run (today: the same traceback, every time); once restored, the rerun writes the results
    and ends the parent FINISHED, training nothing again."""
    import threading

    from mlflow import MlflowClient

    uri = new_store(here / "mlflow.db")
    study = here / "study.yaml"
    study.write_text("name: gone\nexperiment: gone\nbase: {model: googlenet, dataset: digits, weights: none, "
                     "image_size: 16, epochs: 1, train_size: 30, test_size: 10, batch_size: 32, threads: 1, "
                     "system_metrics: false}\nspace: {seed: [0, 1]}\nsampler: grid\n"
                     "objectives: [{maximize: best_test_acc}]\npruner: none\n")
    argv = ["sweep", str(study), "--no-report", "--tracking-uri", uri]
    c = MlflowClient(uri)
    deleted = []

    def delete_the_parent_once_a_trial_runs() -> None:
        while not deleted:
            exp = c.get_experiment_by_name("gone")
            runs = c.search_runs([exp.experiment_id]) if exp else []
            child = next((r for r in runs if "mlflow.parentRunId" in r.data.tags), None)
            if child is not None:
                c.delete_run(child.data.tags["mlflow.parentRunId"])
                deleted.append(child.data.tags["mlflow.parentRunId"])
            time.sleep(0.05)

    thread = threading.Thread(target=delete_the_parent_once_a_trial_runs, daemon=True)
    thread.start()
    code, err = one_line(capsys, argv)
    thread.join(timeout=5)
    (parent,) = deleted
    assert code == 2 and "2 complete, 0 pruned, 0 failed, 0 left" in err, err
    assert f"parent run {parent} is deleted" in err and f"mlflow runs restore --run-id {parent}" in err, err
    trials = [r for r in c.search_runs([c.get_experiment_by_name("gone").experiment_id])]
    assert sorted(r.info.status for r in trials) == ["FINISHED", "FINISHED"]  # both trained, the parent in trash

    code, err = one_line(capsys, argv)  # the rerun: the same line, nothing trained
    assert code == 2 and f"mlflow runs restore --run-id {parent}" in err, err
    c.restore_run(parent)  # what the line says to do
    assert main(argv) == 0, capsys.readouterr().err
    assert "2 complete, 0 pruned, 0 failed" in capsys.readouterr().out
    run = c.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics[schema.N_TRIALS_PREFIX + "complete"] == 2
    assert len(c.search_runs([run.info.experiment_id])) == 3  # the parent and its two trials: none trained twice


@pytest.mark.slow
def test_mlflow_db_filling_up_mid_run_is_one_line_and_the_rerun_resumes(here, capsys):
    """The store's disk fills once epoch 1 is logged (a thread writes zeros into its 8 MB tmpfs): the next write
    fails, and not even FAILED can be written. One line naming the folder, exit 2 (today: 218 lines); the run is
    left RUNNING with its checkpoint, and once there is room the same command resumes it, each epoch logged once."""
    import threading

    from mlflow import MlflowClient

    with tmpfs(here / "store", "8m") as mnt:
        uri = new_store(mnt / "mlflow.db")
        c = MlflowClient(uri)
        argv = ["train", *TINY, "--epochs", "3", "--train-size", "30", "--test-size", "10", "--batch-size", "32",
                "--tracking-uri", uri, "--checkpoint-dir", str(here / "ckpt")]

        def fill_once_epoch_1_is_logged() -> None:
            while True:
                exp = c.get_experiment_by_name("googlenet-study")
                runs = c.search_runs([exp.experiment_id]) if exp else []
                if runs and c.get_metric_history(runs[0].info.run_id, schema.ACCURACY):
                    return fill(mnt)
                time.sleep(0.02)

        thread = threading.Thread(target=fill_once_epoch_1_is_logged, daemon=True)
        thread.start()
        code, err = one_line(capsys, argv)
        thread.join(timeout=60)
        assert code == 2 and f"tracking-uri: no space left on device: {mnt}; run " in err, err
        (run,) = c.search_runs([c.get_experiment_by_name("googlenet-study").experiment_id])
        assert run.info.status == "RUNNING" and f"run {run.info.run_id} is left RUNNING" in err
        (mnt / "filler").unlink()  # the user frees space
        assert main(argv) == 0, capsys.readouterr().err
        run = c.get_run(run.info.run_id)
        assert run.info.status == "FINISHED"
        for key in (schema.ACCURACY, schema.CLOCK):
            assert [m.step for m in c.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
        assert len(c.search_runs([run.info.experiment_id])) == 1


@pytest.mark.parametrize("command", ["train", "report"])
def test_a_store_damaged_past_its_first_pages_is_one_line_when_a_query_reaches_it(command, here, capsys):
    """The header and the schema are intact, the experiments table's page is random bytes: the checks before
    opening pass, MLflow's first query fails (today: a DatabaseError traceback); one line, exit 2."""
    db = here / "mlflow.db"
    new_store(db)
    with contextlib.closing(sqlite3.connect(db)) as con:
        page = con.execute("select rootpage from sqlite_master where name = 'experiments'").fetchone()[0]
        size = con.execute("pragma page_size").fetchone()[0]
    with open(db, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(os.urandom(size))
    argv = {"train": ["train", *TINY], "report": ["report", "--experiment", "x"]}[command]
    code, err = one_line(capsys, [*argv, "--tracking-uri", f"sqlite:///{db}"])
    assert code == 2 and f"the tracking store sqlite:///{db} is damaged (database disk image is malformed)" in err, err
    assert not (here / ".checkpoints").exists()
