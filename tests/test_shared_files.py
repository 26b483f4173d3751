"""Shared folders, round two (issue 25): nothing read back is a pickle, no write goes through a planted link,
no FIFO hangs a run, no file the tool did not write is replaced or deleted, a forged checkpoint is refused
as data. Each test plants the real thing: a symbolic link, a FIFO (os.mkfifo), a pickle that would run
`touch MARKER`; a read that could block runs in a thread joined with a timeout, so wrong code fails, never hangs."""

from __future__ import annotations

import ast
import math
import os
import pickle
import re
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric

from googlenet_study import checkpoint, feature_cache, schema
from googlenet_study.sweep import study_file
from googlenet_study.cli import main
from googlenet_study.config import UserError
from googlenet_study.csv_cells import cell, needs_quote
from googlenet_study.report import fetch, outdir
from googlenet_study.sweep import slurm

from helpers import cfg_args, new_store, one_error_line, runs_in, write_study
from helpers.secrets import Planted

RUN_A = "a" * 32
PACKAGE = Path(__file__).resolve().parent.parent / "googlenet_study"
TIMEOUT_S = 20  # a read that blocks on a FIFO never returns: the test fails after this, it does not hang


def in_thread(f):
    """f() in a daemon thread joined for TIMEOUT_S: ("ok", value) | ("raised", exception) | ("hung", None)."""
    out = ["hung", None]

    def run():
        try:
            out[:] = ["ok", f()]
        except BaseException as e:  # noqa: BLE001 - the test reads it
            out[:] = ["raised", e]
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(TIMEOUT_S)
    return tuple(out)


def unblock(fifo: Path) -> None:
    """Release a reader stuck in open() on `fifo` (old code): open its writing end once, without blocking."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


# ---- 1. nothing read back is a pickle -------------------------------------------------------------------

def test_no_pickle_load_or_unsafe_torch_load_remains_in_the_package():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if "load" not in text and "Unpickler" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
            allow_pickle = {k.arg: k.value for k in node.keywords}.get("allow_pickle")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "joblib.load") or (
                    name == "torch.load" and not (isinstance(weights_only, ast.Constant) and weights_only.value
                                                  is True)) or (
                    name == "np.load" and not (isinstance(allow_pickle, ast.Constant)
                                               and allow_pickle.value is False)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert found == []


def log_finished(c: MlflowClient, exp: str, name: str, accs: list[float]) -> str:
    run_id = c.create_run(exp, run_name=name).info.run_id
    c.log_batch(run_id, metrics=[Metric(k, v, 1000 + e, e) for e, a in enumerate(accs, start=1)
                                 for k, v in ((schema.ACCURACY, a), (schema.EPOCH_TIME, 2.0),
                                              (schema.CLOCK, 2.0 * e))])
    c.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store_of_two(tmp_path_factory) -> dict:
    uri = new_store(tmp_path_factory.mktemp("two") / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("cache")
    return {"uri": uri, "ids": [log_finished(c, exp, f"r{i}", [0.5, 0.6 + i / 10]) for i in range(2)]}


@pytest.fixture
def two_runs(store_of_two, tmp_path) -> dict:
    """Two FINISHED runs (test_acc 0.5, 0.6 and 0.5, 0.7) and this test's own history cache file."""
    return {**store_of_two, "cache": fetch._cache_file(store_of_two["uri"], tmp_path / "cache")}


@pytest.fixture
def store(tracking_uri, tmp_path) -> str:
    """tracking_uri's store, its tables copied from the test process's template (no migrations to wait for)."""
    return new_store(tmp_path / "mlflow.db")


def accuracies(f: fetch.Fetched) -> dict[str, list[float]]:
    return {rid: g[schema.ACCURACY].round(6).tolist() for rid, g in f.epochs.groupby("run_id")}


def test_a_planted_history_cache_pickle_never_runs_and_the_report_rebuilds_the_cache(two_runs, tmp_path, capsys):
    """The attack of issue 25: a pickle planted as histories-<key>.pkl (the old name) and at the new name."""
    cache = two_runs["cache"]
    cache.parent.mkdir(parents=True)
    for planted in (cache.with_suffix(".pkl"), cache):
        planted.write_bytes(pickle.dumps({"x": Planted(tmp_path / "pwned")}))
    f = fetch.fetch("cache", uri=two_runs["uri"], cache_dir=tmp_path / "cache")
    assert not (tmp_path / "pwned").exists()
    assert accuracies(f) == {two_runs["ids"][0]: [0.5, 0.6], two_runs["ids"][1]: [0.5, 0.7]}
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "history cache" in ln]
    assert len(warned) == 1 and str(cache) in warned[0] and "rebuilding it" in warned[0]
    assert fetch.read_cache(cache).keys() == set(two_runs["ids"])  # rewritten, as data


def test_the_history_cache_is_data_and_a_warm_report_reads_the_same_histories(two_runs, tmp_path, capsys):
    cold = fetch.fetch("cache", uri=two_runs["uri"], cache_dir=tmp_path / "cache")
    assert two_runs["cache"].suffix == ".npz"
    with np.load(two_runs["cache"], allow_pickle=False) as z:  # plain arrays: 2 runs x 2 epochs x 3 metrics
        assert sorted(z.files) == ["header", "points"] and len(z["points"]) == 12
    warm = fetch.fetch("cache", uri=two_runs["uri"], cache_dir=tmp_path / "cache")
    assert accuracies(warm) == accuracies(cold) and "history cache" not in capsys.readouterr().err


def forged_header(cache: Path) -> None:
    with np.load(cache, allow_pickle=False) as z:
        arrays = dict(z)
    np.savez(cache, **{**arrays, "points": arrays["points"][:-1]})  # one point fewer than the header counts


@pytest.mark.parametrize("bad", ["garbage", "truncated", "forged counts", "npy pickle", "fifo", "folder"])
def test_a_bad_history_cache_is_one_warning_and_a_rebuild(bad, two_runs, tmp_path, capsys):
    cache = two_runs["cache"]
    fetch.fetch("cache", uri=two_runs["uri"], cache_dir=tmp_path / "cache")
    capsys.readouterr()
    good = cache.read_bytes()
    cache.unlink()
    if bad == "garbage":
        cache.write_bytes(os.urandom(300))
    elif bad == "truncated":
        cache.write_bytes(good[:len(good) // 2])
    elif bad == "forged counts":
        cache.write_bytes(good)
        forged_header(cache)
    elif bad == "npy pickle":  # an object array: np.load would unpickle it if allowed
        with open(cache, "wb") as f:
            np.save(f, np.array([Planted(tmp_path / "pwned")], dtype=object), allow_pickle=True)
    elif bad == "fifo":
        os.mkfifo(cache)
    else:
        cache.mkdir()
    how, f = in_thread(lambda: fetch.fetch("cache", uri=two_runs["uri"], cache_dir=tmp_path / "cache"))
    if how == "hung":
        unblock(cache)
    assert how == "ok", f
    assert accuracies(f) == {two_runs["ids"][0]: [0.5, 0.6], two_runs["ids"][1]: [0.5, 0.7]}
    assert not (tmp_path / "pwned").exists()
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if "history cache" in ln] == [
        next(ln for ln in err if ln.startswith(f"googlenet-study report: warning: history cache {cache} is unusable"))]
    if bad != "folder":  # a folder in its place is left alone: the next report warns again
        assert fetch.read_cache(cache).keys() == set(two_runs["ids"])


# ---- 2. files in shared folders opened safely ---------------------------------------------------------

def tiny_state(cfg, run_id: str = RUN_A, net: torch.nn.Module | None = None, epochs: int = 0):
    net = net or torch.nn.Linear(2, 1)
    history = [{**{k: 0.5 for k in schema.EPOCH_METRICS}, schema.CLOCK: float(e)} for e in range(1, epochs + 1)]
    return checkpoint.TrainingState.snapshot(checkpoint.RunIdentity.of(cfg, run_id, None, None), net,
                                             torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), None,
                                             history, [1000 * e for e in range(1, epochs + 1)])


def test_a_symlink_planted_at_the_old_temporary_name_is_never_written_through(tiny_cfg, tmp_path):
    """The name was .<run id>.ckpt.<pid>.tmp (the pid is inside the readable checkpoint): a link there made
    open(tmp, "wb") overwrite its target. Now the name is mkstemp's, created O_EXCL."""
    cfg = tiny_cfg.resolve()
    path = checkpoint.path_for(tmp_path / "ck", cfg, RUN_A)
    path.parent.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (path.parent / f".{path.name}.{os.getpid()}.tmp").symlink_to(victim)
    checkpoint.save(path, tiny_state(cfg))
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and checkpoint.load(path, cfg).run.run_id == RUN_A
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, f".{path.name}.{os.getpid()}.tmp"])


def test_the_feature_cache_writer_never_writes_through_a_planted_link(tmp_path):
    path = tmp_path / feature_cache.FOLDER / "googlenet-32px-0123.feat"
    path.parent.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (path.parent / f".{path.name}.{os.getpid()}.tmp").symlink_to(victim)
    feature_cache._save(path, {"k": 1}, 1.5, {"test.pooled": torch.ones(3, 2)})
    assert victim.read_text() == "precious" and path.read_bytes().startswith(feature_cache.MAGIC)


def test_a_symlinked_feature_lock_is_not_followed(tmp_path):
    """A .feat.lock link made `open(lock, "a")` create an empty file at any path; now it is refused and the
    run builds unlocked."""
    path = tmp_path / feature_cache.FOLDER / "googlenet-32px-0123.feat"
    path.parent.mkdir()
    target = tmp_path / "anywhere" / "created-by-the-run"
    target.parent.mkdir()
    (path.parent / (path.name + ".lock")).symlink_to(target)
    with feature_cache._locked(path):
        pass
    assert not target.exists()


def test_a_symlinked_racing_lock_beside_the_database_is_refused_and_creates_nothing(tmp_path):
    import hashlib

    from googlenet_study.sweep import race_rounds
    db = tmp_path / "optuna.db"
    lock = tmp_path / f"optuna.db.racing-{hashlib.sha256(b's').hexdigest()[:12]}.lock"
    target = tmp_path / "anywhere"
    lock.symlink_to(target)
    with pytest.raises(UserError, match=f"racing: {re.escape(str(lock))} is a symbolic link, not a lock file"):
        with race_rounds.study_lock(f"sqlite:///{db}", None, "s"):
            pass
    assert not target.exists()
    lock.unlink()
    with race_rounds.study_lock(f"sqlite:///{db}", None, "s"):  # a real lock: taken and released
        assert lock.is_file()


def test_a_fifo_for_a_checkpoint_is_one_line_and_never_blocks(tiny_cfg, tmp_path):
    cfg = tiny_cfg.resolve()
    path = checkpoint.path_for(tmp_path / "ck", cfg, RUN_A)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    found = checkpoint.candidates(tmp_path / "ck", cfg)
    how, e = in_thread(lambda: checkpoint.load(found[0], cfg))
    if how == "hung":
        unblock(path)
    assert how == "raised" and isinstance(e, UserError), (how, e)
    assert str(e) == f"checkpoint: {path} is a FIFO, not a regular file; move it away (or delete it), or start " \
                     f"over with --resume never"


@pytest.mark.slow
def test_train_with_a_fifo_for_its_checkpoint_exits_2_in_one_line(tiny_cfg, tracking_uri, store, tmp_path, capsys):
    path = checkpoint.path_for(tmp_path / ".checkpoints", tiny_cfg.resolve(), RUN_A)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    def hung(signum, frame):  # main() installs signal handlers: it runs in this thread, under an alarm
        raise TimeoutError(f"blocked on the FIFO {path}")
    before = signal.signal(signal.SIGALRM, hung)
    signal.alarm(TIMEOUT_S)
    try:
        code = main(["train", *cfg_args(tiny_cfg)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert code == 2
    assert f"{path} is a FIFO, not a regular file" in one_error_line(capsys)
    assert runs_in(tracking_uri) == []


def test_a_fifo_for_a_feature_file_is_replaced_by_a_rebuild_and_never_blocks(tmp_path):
    path = tmp_path / feature_cache.FOLDER / "googlenet-32px-0123.feat"
    path.parent.mkdir()
    os.mkfifo(path)
    how, got = in_thread(lambda: feature_cache._load(path, {"format": 1}, None, torch.device("cpu")))
    if how == "hung":
        unblock(path)
    assert how == "ok", got
    assert got == (None, f"{path} is a FIFO, not a regular file")  # the warning tag; the build replaces it
    feature_cache._save(path, {"k": 1}, 1.5, {"test.pooled": torch.ones(3, 2)})
    assert path.is_file() and path.read_bytes().startswith(feature_cache.MAGIC)


def test_a_pickled_weights_file_is_one_line_and_no_torch_warning(tmp_path, recwarn):
    from googlenet_study import model
    weights = tmp_path / "w.pt"
    weights.write_bytes(pickle.dumps({"conv": Planted(tmp_path / "pwned")}))
    with pytest.raises(UserError) as e:
        model._file_state(str(weights))
    assert str(e.value) == f"weights: {weights} holds objects other than tensors and plain values (a pickle), " \
                           f"which are never loaded; give a state dict saved with torch.save"
    assert not (tmp_path / "pwned").exists()
    assert [str(w.message)[:60] for w in recwarn] == []  # torch's "Detected pickle protocol 4" notice included


# ---- 3. nothing replaced or deleted that the tool did not write ------------------------------------------

def test_report_out_never_replaces_a_users_own_report_html_and_summary_csv(tmp_path):
    mine = tmp_path / "mypaper"
    mine.mkdir()
    (mine / "report.html").write_text("<p>my paper</p>")
    (mine / "summary.csv").write_text("mine\n")
    with pytest.raises(UserError, match=f"--out: {re.escape(str(mine))} holds files no report wrote"):
        outdir.check(mine)


@pytest.mark.parametrize("where", ["mlruns/1/{run}/artifacts/report", "mlartifacts/3/{run}/artifacts",
                                   "mlruns/1/{run}/artifacts/a/b"])
def test_report_out_inside_a_runs_mlflow_artifact_folder_is_refused(where, tmp_path):
    out = tmp_path / where.format(run=RUN_A)
    with pytest.raises(UserError, match=f"lies inside run {RUN_A}'s MLflow artifact folder"):
        outdir.check(out)
    outdir.check(tmp_path / "mlruns" / "1" / "not-a-run" / "artifacts" / "report")  # no run's: allowed


def test_the_slurm_script_never_overwrites_a_users_file_and_reuses_its_own(tmp_path):
    folder = tmp_path / "slurm"
    folder.mkdir()
    (folder / "s.sbatch").write_text("#!/bin/bash\n# my own job\n")
    path, wrote = slurm.write_script(folder, "s", "#!/bin/bash\n# googlenet-study: ours\n")
    assert (path.name, wrote) == ("s-1.sbatch", True)
    assert (folder / "s.sbatch").read_text() == "#!/bin/bash\n# my own job\n"
    assert slurm.write_script(folder, "s", "#!/bin/bash\n# googlenet-study: ours\n") == (path, False)
    (folder / "s-2.sbatch").symlink_to(tmp_path / "victim")  # a planted link is a taken name, never followed
    assert slurm.write_script(folder, "s", "other\n")[0].name == "s-3.sbatch"
    assert not (tmp_path / "victim").exists()


@pytest.mark.slow
def test_a_refused_slurm_submission_deletes_no_file_it_did_not_write(tmp_path, monkeypatch, capsys):
    """sbatch refuses the job (a stand-in sbatch that says so, as a real one does for an unknown
    partition): the user's own slurm/<study>.sbatch and slurm/ stay; only the script this call made goes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: x' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    file = write_study(tmp_path, "s", {"lr": [0.01, 0.1]}, sampler="grid")
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "s.sbatch").write_text("my own\n")
    code = main(["sweep", str(file), "--slurm-array", "2", "--slurm-option", "nodes=1",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"])
    assert code == 2 and "sbatch refused the job" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "slurm").iterdir()) == ["s.sbatch"]
    assert (tmp_path / "slurm" / "s.sbatch").read_text() == "my own\n"


# ---- 4. a checkpoint is checked as data before it is used -----------------------------------------------

def forge(path: Path, what: str) -> None:
    d = torch.load(path, weights_only=True)
    if what == "history longer than the run":
        d["history"] = d["history"] * 5
        d["epoch"], d["epoch_ended_ms"] = len(d["history"]), list(range(len(d["history"])))
    elif what == "inf accuracy":
        d["history"][0][schema.ACCURACY] = math.inf
    elif what == "nan time":
        d["history"][0][schema.EPOCH_TIME] = math.nan
    elif what == "accuracy above 1":
        d["history"][0][schema.ACCURACY] = 7.0
    elif what == "foreign metric":
        d["history"][0]["system/evil"] = 1.0
    elif what == "clock goes back":
        d["history"][1][schema.CLOCK] = 0.5
    elif what == "wrong tensor shape":
        d["model"]["weight"] = torch.zeros(3, 2)
    elif what == "foreign model keys":
        d["model"] = {"evil.weight": torch.zeros(1, 2), "bias": torch.zeros(1)}
    elif what == "garbage optimizer":
        d["optimizer"] = {"state": {0: "x"}, "param_groups": [{"params": ["a"]}]}
    elif what == "optimizer of another model":
        d["optimizer"]["param_groups"][0]["params"] = [0, 1, 2]
    elif what == "optimizer state of another shape":
        d["optimizer"]["state"][0] = {"momentum_buffer": torch.zeros(5, 5)}
    elif what == "garbage rng":
        d["rng"]["torch"] = torch.zeros(7, dtype=torch.uint8)
    elif what == "garbage python rng":
        d["rng"]["python"] = (3, (1, 2), None)
    torch.save(d, path)


FORGERIES = {"history longer than the run": "10 epochs of history for a run of 2 epochs",
             "inf accuracy": "epoch 1 of its history: test_acc inf (allowed: a finite number in [0, 1])",
             "nan time": "epoch 1 of its history: epoch_time_s nan (allowed: a finite number >= 0)",
             "accuracy above 1": "epoch 1 of its history: test_acc 7.0 (allowed: a finite number in [0, 1])",
             "foreign metric": "epoch 1 of its history: metrics other than",
             "clock goes back": "epoch 2 of its history: elapsed_time_s goes back",
             "wrong tensor shape": "model tensor weight of shape (3, 2), the model's is (1, 2)",
             "foreign model keys": "model tensors this model does not have (evil.weight)",
             "garbage optimizer": "an optimizer state that is not a torch optimizer's state dict",
             "optimizer of another model": "an optimizer state for 3 parameters, the model trains 2",
             "optimizer state of another shape": "optimizer momentum_buffer of parameter 0 of shape (5, 5), the "
                                                 "parameter's is (1, 2)",
             "garbage rng": "random generator states of the wrong form",
             "garbage python rng": "random generator states of the wrong form"}


@pytest.mark.parametrize("what", list(FORGERIES))
def test_a_forged_checkpoint_is_one_line_naming_the_file_and_what_is_wrong(what, tiny_cfg, tmp_path):
    cfg = tiny_cfg.resolve()
    net = torch.nn.Linear(2, 1)
    path = checkpoint.path_for(tmp_path, cfg, RUN_A)
    checkpoint.save(path, tiny_state(cfg, net=net, epochs=2))
    checkpoint.load(path, cfg, net)  # the honest file loads
    forge(path, what)
    with pytest.raises(UserError) as e:
        checkpoint.load(path, cfg, net)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint: {path} is inconsistent (") and FORGERIES[what] in msg and "\n" not in msg
    assert msg.endswith("); move it away (or delete it), or start over with --resume never")


@pytest.mark.slow
def test_train_refuses_a_forged_history_before_its_run_is_touched(tiny_cfg, tracking_uri, store, tmp_path, capsys):
    """A 10-epoch history for a 2-epoch run was resumed: epochs 3-10 logged, FINISHED. Now: exit 2, one line,
    the KILLED run as it was (so it resumes once the file is moved away and a good one put back)."""
    c = MlflowClient(tracking_uri)
    run_id = c.create_run(c.create_experiment("googlenet-study")).info.run_id
    c.set_terminated(run_id, "KILLED")
    cfg = tiny_cfg.resolve()
    path = checkpoint.path_for(tmp_path / ".checkpoints", cfg, run_id)
    checkpoint.save(path, tiny_state(cfg, run_id, epochs=2))
    forge(path, "history longer than the run")
    before = c.get_run(run_id)
    assert main(["train", *cfg_args(tiny_cfg)]) == 2
    assert one_error_line(capsys).endswith(f"checkpoint: {path} is inconsistent (10 epochs of history for a run "
                                           f"of 2 epochs); move it away (or delete it), or start over with "
                                           f"--resume never")
    after = c.get_run(run_id)
    assert (after.info.status, after.data.tags, after.data.metrics) == ("KILLED", before.data.tags, {})
    assert [r.info.run_id for r in runs_in(tracking_uri)] == [run_id] and path.exists()


@pytest.mark.slow
def test_a_checkpoint_of_the_real_model_passes_the_shape_check(tiny_cfg, tmp_path):
    from googlenet_study import model
    cfg = tiny_cfg.resolve()
    net, _ = model.build(cfg)
    path = checkpoint.path_for(tmp_path, cfg, RUN_A)
    checkpoint.save(path, tiny_state(cfg, net=net, epochs=1))
    assert checkpoint.load(path, cfg, net).epoch == 1


# ---- 7. the small ones -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_reproduce_refuses_a_run_without_this_tools_config_hash_tag(tiny_cfg, tracking_uri, store, capsys):
    """Params that parse as a config are not enough: only a run of `train` has the config_hash tag."""
    c = MlflowClient(tracking_uri)
    run_id = c.create_run(c.create_experiment("other")).info.run_id
    for k, v in tiny_cfg.to_params().items():
        c.log_param(run_id, k, v)
    assert main(["reproduce", run_id]) == 2
    assert f"run {run_id} has no config_hash tag; it was not made by googlenet-study train" in one_error_line(capsys)
    assert len(runs_in(tracking_uri)) == 1  # nothing trained


def test_slurm_array_is_capped_like_workers(tmp_path):
    spec = study_file.load(str(write_study(tmp_path, "s", {"lr": [0.01, 0.1, 0.2], "seed": [0, 1]}, sampler="grid")))
    assert spec.n_trials == 6
    with pytest.raises(UserError, match=r"--slurm-array: 100000000 tasks for a study of at most 6 trials; "
                                        r"allowed: 1 to 6"):
        slurm.prepare(slurm.Array(spec, 100000000, f"sqlite:///{tmp_path}/o.db", f"sqlite:///{tmp_path}/m.db",
                                  {"nodes": "1"}))
    assert slurm.prepare(slurm.Array(spec, 6, f"sqlite:///{tmp_path}/o.db", f"sqlite:///{tmp_path}/m.db",
                                     {"nodes": "1"})).tasks == 6
    with pytest.raises(UserError, match="allowed: 1 to 1000"):
        slurm.prepare(slurm.Array(spec, 1001, f"sqlite:///{tmp_path}/o.db", f"sqlite:///{tmp_path}/m.db",
                                  {"nodes": "1"}, n_trials=5000))


@pytest.mark.parametrize("text", [" =1+1", "  @SUM(A1)", "\n=cmd|' /C calc'!A0", "\t=1", "\r+1", "\u3000=1", " -1.5",
                                  "\uff1d1+1", "\uff0b1", "\uff0d1", "\uff20SUM(A1)", " \uff1dHYPERLINK(\"x\")",
                                  "\u22121+1", "\uff0d\uff11"])
def test_a_cell_whose_first_non_space_character_is_a_formula_character_is_quoted(text):
    assert needs_quote(text) and cell(text) == "'" + text


@pytest.mark.parametrize("text", ["-1.5", "+3", "1e-05", "a=b", "x-1", "", "   ", "plain"])
def test_numbers_and_plain_text_stay_as_they_are(text):
    assert not needs_quote(text) and cell(text) == text
