"""The bad-input inventory, made generative: arbitrary values (text, huge and negative integers, nan
and inf, booleans, lists, mappings, None) at every config field and every study-file key.

(a) Validation, many examples: RunConfig.from_dict and study_file.load either accept the value or raise
    UserError with one line naming the field or key; never another exception.
(b) End to end, few examples, through the real CLI in-process: a clean run, or exit status 2 with
    exactly one line on stderr and nothing written (no MLflow run, no Optuna study, no file).
Hypothesis runs derandomized (a fixed seed): CI sees the same examples every time."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from googlenet_study import budget, cli
from googlenet_study.sweep import space, study_file
from googlenet_study.config import RunConfig, UserError

FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
TINY = {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 32, "epochs": 1,
        "batch_size": 16, "train_size": 50, "test_size": 20, "threads": 1, "system_metrics": False}
STUDY = {"name": "prop", "base": TINY, "space": {"seed": [0]}, "objectives": [{"maximize": "best_test_acc"}]}

# What a user might type or a YAML file might hold, the odd first.
ODD_TEXT = ["", " ", "none", "null", "nan", "inf", "-inf", "-1", "0", "1e400", "9" * 30, "a\nb", "a\x00b",
            "ünïcödé", "x" * 5000, "/dev/null", "/tmp", "cuda:99", "cuda:١", "50,abc", "0,200", "50,50", "true",
            "maybe", "imagenet", "inception_v3", "frozen", "bf16", "sgd", "cifar10", "auto", "16", "1.5"]
ODD_INT = [0, 1, -1, 14, 15, 16, 64, 100, 101, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 10**400, 100_000]
SCALARS = (st.none() | st.booleans() | st.integers() | st.sampled_from(ODD_INT) | st.floats()
           | st.text(max_size=12) | st.sampled_from(ODD_TEXT))
ANYTHING = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=5)
FAST = settings(derandomize=True, database=None, deadline=None, max_examples=250,
                suppress_health_check=[HealthCheck.too_slow])


def one_line(msg: str) -> bool:
    return bool(msg) and "\n" not in msg and "\r" not in msg


# ---- (a) validation --------------------------------------------------------------------------------
@FAST
@given(field=st.sampled_from(FIELDS), value=ANYTHING)
def test_any_value_of_any_field_is_a_config_or_one_line_naming_the_field(field, value):
    try:
        cfg = RunConfig.from_dict({**TINY, field: value})
    except UserError as e:
        msg = str(e)
        assert one_line(msg), msg
        # model and aux_weight can be fine alone and wrong with image_size (inception_v3's aux arm)
        assert field in msg or (field in ("model", "aux_weight") and "image_size" in msg), msg
        return
    params = cfg.to_params()  # what MLflow records: every value fits a param and rebuilds the config
    assert all(len(v) <= 6000 for v in params.values())
    assert RunConfig.from_dict(params) == cfg


@FAST
@given(key=st.sampled_from([*study_file.KEYS, "n_trails"]), value=ANYTHING)
def test_any_value_of_any_study_key_is_a_study_or_one_line_naming_the_file(key, value, tmp_path_factory):
    assert_study_or_one_line({**STUDY, key: value}, tmp_path_factory.mktemp("s"))


@FAST
@given(where=st.sampled_from(["base", "space"]), field=st.sampled_from(FIELDS), value=ANYTHING)
def test_any_value_in_base_or_space_is_a_study_or_one_line_naming_the_file(where, field, value, tmp_path_factory):
    doc = {**STUDY, where: {**STUDY[where], field: value}}
    if where == "space" and field != "seed":
        doc["space"] = {field: value}
    assert_study_or_one_line(doc, tmp_path_factory.mktemp("s"))


@FAST
@given(text=st.text(max_size=200) | st.sampled_from(["- a\n", "a: [", "a: " + "1" * 5000, "[" * 5000, "0", "~"]))
def test_any_text_as_a_study_file_is_a_study_or_one_line(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "study.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        study_file.load(str(path))
    except UserError as e:
        assert one_line(str(e)) and str(path) in str(e), str(e)


@FAST
@given(sets=st.lists(st.text(max_size=20) | st.sampled_from(["epochs=0", "seed=3", "image-size=100000", "lr=nan",
                                                             "=", "x=1", "epochs", "threads=10000"]), max_size=3))
def test_any_set_override_is_a_study_or_one_line(sets, tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    try:
        spec = study_file.load(str(path), sets=sets)
    except UserError as e:
        assert one_line(str(e)) and (str(path) in str(e) or str(e).startswith("--set")), str(e)
        return
    with contextlib.suppress(UserError):
        budget.check_study(spec, workers=1)


def assert_study_or_one_line(doc: dict, folder: Path) -> None:
    """study_file.load (and the sweep's machine check after it) gives a StudySpec or one line naming the file."""
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        spec = study_file.load(str(path))
        spec.digest(), space.dump_space(spec)  # what the sweep records: must not fail on what load accepted
        budget.check_study(spec, workers=1)
    except UserError as e:
        assert one_line(str(e)) and str(path) in str(e), str(e)


# ---- (b) end to end ----------------------------------------------------------------------------------
E2E = settings(derandomize=True, database=None, deadline=None, max_examples=10,
               suppress_health_check=list(HealthCheck))


def cli_text(value) -> str:
    """How a user would type `value` on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(cli_text, value))
    return "none" if value is None else str(value)


def costly(cfg: dict) -> bool:
    """A valid config that would train for more than a few seconds here (or compile): not run."""
    try:
        c = RunConfig.from_dict(cfg).resolve()
        budget.check_fits(c)
    except UserError:
        return False  # refused: cheap, and exactly what is under test
    return (c.compile or c.epochs > 1 or c.image_size > 64 or (c.train_size or 10**9) > 100
            or (c.test_size or 10**9) > 50 or c.threads > 2 or c.weights != "none" or c.dataset != "digits"
            or c.device != "cpu")


@pytest.mark.slow  # each clean example trains a run
@pytest.mark.parametrize("how", ["flag", "config file"])
@E2E
@given(field=st.sampled_from(FIELDS), value=ANYTHING)
@example(field="seed", value=1)             # always one clean run
@example(field="lr", value=1e30)            # always one that diverges: FAILED, recorded, exit 1
@example(field="image_size", value=100000)  # the example
def test_end_to_end_a_clean_run_or_exit_2_one_line_nothing_written(how, field, value, torch_home, store):
    cfg = {**TINY, field: value}
    if costly(cfg):
        event("valid but costly here: not run")
        return
    with tempfile.TemporaryDirectory() as tmp, _in(Path(tmp), store) as folder:
        if how == "flag":
            argv = ["train", *(a for k, v in TINY.items() for a in (cli._flag(k), cli_text(v))),
                    cli._flag(field), cli_text(value)]
        else:
            (folder / "c.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
            argv = ["train", "--config", str(folder / "c.yaml")]
        before = _runs(store)
        code, err = _run(argv)
        event(f"exit {code}")
        _assert_clean_run_or_refused(folder, code, err, _runs(store) - before, store)


@E2E
@given(key=st.sampled_from(study_file.KEYS), value=ANYTHING)
@example(key="space", value={"image_size": [32, 100000]})
def test_end_to_end_a_bad_study_file_is_exit_2_one_line_nothing_written(key, value, torch_home, store):
    """Valid study files are not run here (test_sweep.py runs them); every refused one is, through the CLI."""
    with tempfile.TemporaryDirectory() as tmp, _in(Path(tmp), store) as folder:
        path = folder / "study.yaml"
        path.write_text(yaml.safe_dump({**STUDY, key: value}, allow_unicode=True))
        try:
            budget.check_study(study_file.load(str(path)), workers=1)
            event("valid: not run")
            return
        except UserError:
            pass
        before = _runs(store)
        code, err = _run(["sweep", str(path), "--no-report"])
        event(f"exit {code}")
        assert code == 2, err
        _assert_refused(folder, err, {"study.yaml"}, _runs(store) - before)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One MLflow store for all examples (a fresh SQLite store costs seconds of migrations); each example
    checks the runs it added."""
    return tmp_path_factory.mktemp("store") / "mlflow.db"


@contextlib.contextmanager
def _in(folder: Path, store: Path):
    """The working folder and the MLflow store of one example, restored afterwards."""
    old_cwd, old_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(folder)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        yield folder
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


def _run(argv: list[str]) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    lines = [line for line in err.getvalue().splitlines() if not line.startswith(("Downloading:", "20"))]
    return code, lines  # MLflow's INFO lines start with the date


def _runs(db: Path) -> set[tuple[str, ...]]:
    """(run id, status) of every run in the store, and every file beside it but the store itself (the
    default places of checkpoints and of the Optuna storage)."""
    beside = {("file", str(p)) for p in db.parent.rglob("*") if p.is_file() and not p.name.startswith(db.name)}
    if not db.exists():
        return beside
    with sqlite3.connect(db) as con:
        if "runs" not in {r[0] for r in con.execute("select name from sqlite_master")}:
            return beside
        return beside | set(con.execute("select run_uuid, status from runs").fetchall())


def _assert_clean_run_or_refused(folder: Path, code: int, err: list[str], new_runs: set, store: Path) -> None:
    if code == 2:
        _assert_refused(folder, err, {"c.yaml"}, new_runs)
        return
    new_runs = {r for r in new_runs if r[0] != "file"}  # a clean run may leave its checkpoint folder
    assert len(new_runs) == 1, (code, err, new_runs)
    (run_id, status), = new_runs
    if code == 0:
        assert status == "FINISHED", new_runs
    else:  # a huge lr or aux_weight diverges: the run ends FAILED and says so; that is a result, not a crash
        with sqlite3.connect(store) as con:
            reason = con.execute("select value from tags where key = 'failure_reason' and run_uuid = ?",
                                 (run_id,)).fetchone()
        assert code == 1 and status == "FAILED" and reason and reason[0].startswith("non-finite loss"), \
            (code, err, reason)


def _assert_refused(folder: Path, err: list[str], inputs: set[str], new_runs: set) -> None:
    assert len(err) == 1, err
    assert not new_runs, (new_runs, err)  # no MLflow run, no checkpoint or Optuna storage beside the store
    assert not (folder / "optuna.db").exists(), err  # no Optuna study
    written = {str(p.relative_to(folder)) for p in folder.rglob("*")} - inputs
    assert not written, (written, err)  # no store here, no checkpoint, no data folder, no report
