"""Safe on a shared lab's storage (issue 18): files in the checkpoint folder are data, never code; --resume
names a run, never a path; no password reaches any output; reproduce checks what train checks.

Each planted file here is the real attack: a pickle whose __reduce__ returns (os.system, ("touch MARKER",)).
Were it unpickled, the marker would exist."""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import sqlite3
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from googlenet_study import checkpoint, feature_cache, tracking
from googlenet_study.cli import main
from googlenet_study.config import UserError

from helpers import cfg_args, one_error_line, runs_in
from helpers.secrets import MARK, Planted, leaks

RUN_A, RUN_B = "a" * 32, "0123456789abcdef" * 2


def plant(path, marker, how: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "torch.save":  # the zip format torch.load reads first
        torch.save({"format": 1, "model": Planted(marker)}, path)
    else:  # a bare pickle (torch.load's legacy format)
        path.write_bytes(pickle.dumps(Planted(marker)))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dumps"])
def test_a_planted_pickle_checkpoint_is_refused_and_never_runs(how, tiny_cfg, tmp_path):
    path = checkpoint.path_for(tmp_path / "ck", tiny_cfg.resolve(), RUN_A)
    plant(path, tmp_path / "pwned", how)
    with pytest.raises(UserError, match="is not a googlenet-study checkpoint") as e:
        checkpoint.load(path, tiny_cfg.resolve())
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow  # seconds of CPU (3-15 s): the full suite runs it, `make test-fast` does not
def test_train_refuses_a_planted_checkpoint_in_one_line_before_any_run(tiny_cfg, tracking_uri, tmp_path, capsys):
    """The attack as issue 18 ran it: `--resume auto` (the default) reads every .ckpt of this config."""
    path = checkpoint.path_for(tmp_path / ".checkpoints", tiny_cfg.resolve(), RUN_A)
    plant(path, tmp_path / "pwned", "torch.save")
    assert main(["train", *cfg_args(tiny_cfg)]) == 2
    line = one_error_line(capsys)
    assert f"{path} is not a googlenet-study checkpoint" in line and "--resume never" in line
    assert not (tmp_path / "pwned").exists()
    assert not runs_in(tracking_uri)


def test_a_planted_pickle_feature_cache_is_refused_and_never_runs(tmp_path):
    path = tmp_path / feature_cache.FOLDER / "googlenet-32px-0123.feat"
    plant(path, tmp_path / "pwned", "torch.save")
    cache, problem = feature_cache._load(path, {"format": 1}, None, torch.device("cpu"))
    assert cache is None and problem.startswith(f"{path} was corrupt")  # rebuilt and replaced, says the tag
    assert not (tmp_path / "pwned").exists()


def test_rng_states_come_back_bit_identical_through_a_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # numpy then holds a cached gaussian: that is state too
    state = checkpoint._rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    checkpoint._set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


def test_a_checkpoint_written_before_the_rng_states_were_tensors_still_resumes(tiny_cfg, tmp_path):
    """Format 1 as written until issue 18: numpy's state a tuple holding an ndarray (three numpy names allowed)."""
    cfg = tiny_cfg.resolve()
    net = torch.nn.Linear(2, 1)
    path = checkpoint.path_for(tmp_path, cfg, RUN_A)
    checkpoint.save(path, checkpoint.TrainingState.snapshot(checkpoint.RunIdentity.of(cfg, RUN_A, None, None), net,
                                                            torch.optim.SGD(net.parameters(), lr=0.1), None, [], []))
    old = torch.load(path, weights_only=True)
    np.random.seed(5)
    old["rng"]["numpy"] = np.random.get_state()
    expected = np.random.random(4).tolist()
    torch.save(old, path)
    state = checkpoint.load(path, cfg)
    state.restore(net, torch.optim.SGD(net.parameters(), lr=0.1), None)
    assert np.random.random(4).tolist() == expected


def test_a_checkpoint_that_links_out_of_the_folder_is_refused(tiny_cfg, tmp_path):
    cfg = tiny_cfg.resolve()
    outside = tmp_path / "elsewhere" / f"{RUN_A}.ckpt"
    net = torch.nn.Linear(2, 1)
    checkpoint.save(outside, checkpoint.TrainingState.snapshot(checkpoint.RunIdentity.of(cfg, RUN_A, None, None),
                                                               net, torch.optim.SGD(net.parameters(), lr=0.1),
                                                               None, [], []))
    root = tmp_path / "ck"
    link = checkpoint.path_for(root, cfg, RUN_A)
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    for find in (lambda: checkpoint.candidates(root, cfg), lambda: checkpoint.find_by_run_id(root, RUN_A)):
        with pytest.raises(UserError, match="outside the checkpoint folder"):
            find()
    link.unlink()
    link.symlink_to(link)  # a loop
    with pytest.raises(UserError, match="cannot be resolved"):
        checkpoint.candidates(root, cfg)


@pytest.mark.parametrize("flag", ["*", "../elsewhere/x", f"../{RUN_A}", "*.ckpt", RUN_A.upper(), RUN_A + "0",
                                  RUN_A[:31], "Auto", " auto", "", "r" * 5000, "a\nb"])
def test_resume_takes_auto_never_or_a_32_hex_run_id_and_nothing_else(flag):
    with pytest.raises(UserError) as e:
        checkpoint.Resume.parse(flag)
    msg = str(e.value)
    assert msg.startswith("--resume: ") and "auto | never" in msg and "\n" not in msg and len(msg) < 200
    assert checkpoint.Resume.parse("auto") is checkpoint.AUTO and checkpoint.Resume.parse("never") is checkpoint.NEVER
    assert checkpoint.Resume.parse(RUN_B).run_id == RUN_B


def test_resume_star_cannot_reopen_a_finished_run_nor_delete_its_checkpoint(tiny_cfg, tracking_uri, tmp_path,
                                                                           capsys):
    """Issue 18: `--resume '*'` looked the literal '*' up as a run, missed the FINISHED check, and reopened it."""
    c = MlflowClient(tracking_uri)
    run_id = c.create_run(c.create_experiment("googlenet-study")).info.run_id
    c.set_terminated(run_id, "FINISHED")
    cfg = tiny_cfg.resolve()
    net = torch.nn.Linear(2, 1)
    kept = checkpoint.path_for(tmp_path / ".checkpoints", cfg, run_id)  # as --keep-checkpoints leaves it
    checkpoint.save(kept, checkpoint.TrainingState.snapshot(checkpoint.RunIdentity.of(cfg, run_id, None, None),
                                                            net, torch.optim.SGD(net.parameters(), lr=0.1), None,
                                                            [], []))
    before = c.get_run(run_id)
    assert main(["train", *cfg_args(tiny_cfg), "--resume", "*"]) == 2
    assert "--resume: '*' is not allowed" in one_error_line(capsys)
    assert main(["train", *cfg_args(tiny_cfg), "--resume", run_id]) == 2
    assert f"run {run_id} already FINISHED" in one_error_line(capsys)
    after = c.get_run(run_id)
    assert (after.info.status, after.info.end_time, after.data.tags) == ("FINISHED", before.info.end_time,
                                                                         before.data.tags)
    assert "resumed_at_epoch" not in after.data.tags and kept.exists()
    assert [r.info.run_id for r in runs_in(tracking_uri)] == [run_id]


# ---- reproduce checks what train checks -------------------------------------------------------------------


def test_reproduce_refuses_a_sweeps_parent_run_and_lists_its_trials(tracking_uri, capsys):
    c = MlflowClient(tracking_uri)
    exp = c.create_experiment("study-exp")
    parent = c.create_run(exp, run_name="s", tags={"study_name": "s", "sweep_role": "parent"}).info.run_id
    trials = [c.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id for _ in range(2)]
    assert main(["reproduce", parent]) == 2
    line = one_error_line(capsys)
    assert f"{parent} is a sweep's parent run; reproduce one of its trials: " in line
    assert all(t in line for t in trials)
    assert len(runs_in(tracking_uri)) == 3  # nothing trained, nothing created


def test_reproduce_refuses_a_run_that_recorded_no_config_instead_of_training_the_defaults(tracking_uri, capsys):
    c = MlflowClient(tracking_uri)
    run_id = c.create_run(c.create_experiment("other")).info.run_id
    assert main(["reproduce", run_id]) == 2
    assert f"run {run_id} recorded no config" in one_error_line(capsys)
    assert not os.path.exists("data")  # no CIFAR-10 download began


def test_reproduce_checks_its_tracking_uri_and_creates_no_database(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", RUN_A, "--tracking-uri", "foo://bar"]) == 2
    assert "tracking-uri: 'foo://bar' is not a tracking URI" in one_error_line(capsys)
    missing = tmp_path / "missing" / "dir"
    assert main(["reproduce", RUN_A, "--tracking-uri", f"sqlite:///{missing}/x.db"]) == 2
    assert "the folder for the SQLite file does not exist" in one_error_line(capsys)
    assert not (tmp_path / "missing").exists() and list(tmp_path.iterdir()) == []


def test_train_into_a_deleted_experiment_is_one_line_and_no_run(tiny_cfg, tracking_uri, capsys):
    c = MlflowClient(tracking_uri)
    c.delete_experiment(c.create_experiment("gone"))
    assert main(["train", *cfg_args(tiny_cfg), "--experiment", "gone"]) == 2
    assert "--experiment: 'gone' is a deleted experiment" in one_error_line(capsys)
    with sqlite3.connect(tracking_uri[len("sqlite:///"):]) as con:
        assert con.execute("select count(*) from runs").fetchone()[0] == 0


# ---- redaction by parsing ---------------------------------------------------------------------------------

REDACTED = {
    "cannot open postgresql://alice:Pa/ss-SECRET@db/optuna: refused": "cannot open postgresql://alice:***@db/optuna: refused",
    "postgresql://alice:p@ss@db/x": "postgresql://alice:***@db/x",
    "postgresql+psycopg://alice:p%40ss:w@db:5432/x": "postgresql+psycopg://alice:***@db:5432/x",
    "postgresql://db/optuna?sslmode=require&password=SECRET": "postgresql://db/optuna?sslmode=require&password=***",
    "mysql://u@db/x?pwd=S&api_key=K&db=x": "mysql://u@db/x?pwd=***&api_key=***&db=x",
    "mysql://u@db/x?token=T;x=1": "mysql://u@db/x?token=***",  # make_url reads "T;x=1" as the token: all hidden
    "'http://alice:s3cret@mlflow:5000/' is": "'http://alice:***@mlflow:5000/' is",
    "https://h/api?access_token=abc&x=1": "https://h/api?access_token=***&x=1",
    # credential-free URLs come back as they were (the job script writes those literally)
    "sqlite:////shared/lab/mlflow.db": "sqlite:////shared/lab/mlflow.db",
    "postgresql://alice@db:5432/optuna?sslmode=require": "postgresql://alice@db:5432/optuna?sslmode=require",
    "http://127.0.0.1:5000": "http://127.0.0.1:5000",
    "no url here: a:b@c": "no url here: a:b@c",
}


@pytest.mark.parametrize("text", list(REDACTED))
def test_redact_hides_every_password_and_credential_query_value(text):
    assert tracking.redact(text) == REDACTED[text]


def test_an_http_tracking_uri_hands_its_credentials_to_mlflow_through_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert tracking.tracking_uri("http://al%40ice:p@ss%2Fw:rd@mlflow.lab:5000/") == "http://mlflow.lab:5000/"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("al@ice", "p@ss/w:rd")
    assert tracking.tracking_uri("http://127.0.0.1:5000/a@b") == "http://127.0.0.1:5000/a@b"  # '@' in the path


@pytest.mark.parametrize("uri, words", [
    ("postgresql://alice:pw@SECRET@127.0.0.1:1/db", "raw @, where the URL parser ends a password; write it %-encoded "
                                                    "(%40"),
    ("http://alice:pw/SECRET@127.0.0.1:1", "raw /, where the URL parser ends a password; write it %-encoded (%2F"),
    ("postgresql://alice:pw SECRET@127.0.0.1:1/db", "white space"),
])
def test_a_password_its_parser_would_misread_is_refused_without_showing_it(uri, words):
    """SQLAlchemy reads 'pw@SECRET@host' as password 'pw', host 'SECRET@host', and the driver prints the host."""
    with pytest.raises(UserError) as e:
        tracking.check_tracking_uri(tracking.tracking_uri(uri))
    assert words in str(e.value) and "SECRET" not in str(e.value) and "pw" not in str(e.value)


def test_a_storage_password_with_a_raw_at_sign_is_refused_without_showing_it():
    from googlenet_study.sweep.storage import check_url

    with pytest.raises(UserError) as e:
        check_url("postgresql://alice:pw@SECRET@127.0.0.1:1/optuna")
    assert str(e.value).startswith("--storage: postgresql://alice:***@127.0.0.1:1/optuna: its password holds a raw @")
    check_url("postgresql://alice:pw%40SECRET@127.0.0.1:1/optuna")  # %-encoded: what SQLAlchemy reads right


# ---- no password in any output, whatever it holds (Hypothesis) --------------------------------------------
# A password is a random prefix and suffix (the characters URLs reserve among them) around MARK; were any part
# of the password shown, MARK's neighbourhood would be too. Passwords are written raw, as people type them,
# %-encoded, and as a ?password= value. Port 1 on 127.0.0.1 refuses at once: every "cannot open" path runs.

PW_CHARS = st.sampled_from("abcXYZ019/@:%?#&=;+!$*'\"()[],~-._")
PASSWORDS = st.builds(lambda a, b: a + MARK + b, st.text(PW_CHARS, max_size=10), st.text(PW_CHARS, max_size=10))
FORMS = ("postgresql://alice:{pw}@127.0.0.1:1/optuna", "postgresql://alice:{q}@127.0.0.1:1/optuna",
         "postgresql://alice@127.0.0.1:1/optuna?sslmode=disable&password={q}",
         "http://alice:{pw}@127.0.0.1:1", "http://alice:{q}@127.0.0.1:1/")
URLS = st.builds(lambda pw, form: (pw, form.format(pw=pw, q=quote(pw, safe=""))), PASSWORDS, st.sampled_from(FORMS))
LEAK_CHECK = settings(derandomize=True, database=None, deadline=None, max_examples=25,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@LEAK_CHECK
@given(pw_url=URLS)
def test_no_password_reaches_an_error_or_the_job_script(pw_url, tmp_path, monkeypatch, capsys):
    pw, url = pw_url
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    study_file = tmp_path / "s.yaml"
    study_file.write_text("name: s\nbase: {model: googlenet, dataset: digits, weights: none, image_size: 16, "
                          "epochs: 1}\nspace: {seed: [0, 1]}\nsampler: grid\n")
    assert not leaks(tracking.redact(f"cannot open {url}: refused"), pw), url
    db = url.startswith("postgresql")
    commands = [["train", *cfg_args_tiny(), "--tracking-uri", url], ["reproduce", RUN_A, "--tracking-uri", url],
                ["report", "--experiment", "e", "--tracking-uri", url]]
    commands += [["sweep", str(study_file), "--storage", url, "--no-report"]] if db else []
    for argv in commands:
        assert main(argv) == 2, (argv, capsys.readouterr())
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and not leaks(out + err, pw), (url, err)
    script = job_script(str(study_file), url if db else "postgresql://db.lab/optuna",
                        url if not db else "http://mlflow.lab:5000")
    assert not leaks(script, pw), script
    assert not (tmp_path / "optuna.db").exists()


def cfg_args_tiny() -> list[str]:
    return ["--model", "googlenet", "--dataset", "digits", "--weights", "none", "--image-size", "16", "--epochs", "1",
            "--system-metrics", "false"]


def job_script(study_file: str, storage_url: str, uri: str) -> str:
    """The Slurm job script (sweep/slurm.py) for these URLs, or the line a check refuses them with."""
    from googlenet_study.sweep import study_file
    from googlenet_study.sweep import slurm

    try:
        return slurm.script(slurm.prepare(slurm.Array(study_file.load(study_file), 2, storage_url, uri, {"nodes": "1"})))
    except UserError as e:
        return str(e)


@pytest.mark.slow  # seconds of CPU (3-15 s): the full suite runs it, `make test-fast` does not
@settings(LEAK_CHECK, max_examples=6)
@given(pw=PASSWORDS)
def test_no_password_reaches_a_parent_runs_params_tags_or_artifacts(pw, tmp_path, monkeypatch):
    """What a sweep's parent run records of its storage and tracking URI, read back through MlflowClient."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    c = MlflowClient(uri)
    for url in (form.format(pw=pw, q=quote(pw, safe="")) for form in FORMS):
        parent = tracking.start_parent_run("exp", "s", {"optuna_storage": url}, uri)
        (tmp_path / "study.yaml").write_text(tracking.redact(f"name: s\nstorage: {url}\n"))
        tracking.log_run_data(parent, uri, params={"storage": url}, tags={"tracking_uri": url},
                              files=[tmp_path / "study.yaml"])
        run = c.get_run(parent)
        recorded = [*run.data.params.values(), *run.data.tags.values()]
        recorded.append(Path(c.download_artifacts(parent, "study.yaml", str(tmp_path / parent))).read_text())
        assert not any(leaks(v, pw) for v in recorded), (url, recorded)


@pytest.mark.slow
def test_reproduce_records_its_run_in_the_experiment_it_is_given(tiny_cfg, tracking_uri, capsys):
    """Issue 18: reproduce ignored --experiment (the rerun went to the original's experiment)."""
    from googlenet_study.train import train

    first = train(dataclasses.replace(tiny_cfg, deterministic=True, epochs=1, train_size=64, test_size=32),
                  experiment="original")
    assert main(["reproduce", first.run_id, "--experiment", "reruns"]) == 0
    assert "bit-identical" in capsys.readouterr().out
    c = MlflowClient(tracking_uri)
    (rerun,) = c.search_runs([c.get_experiment_by_name("reruns").experiment_id])
    assert rerun.data.tags["reproduces_run_id"] == first.run_id and rerun.info.status == "FINISHED"
    assert [r.info.run_id for r in c.search_runs([c.get_experiment_by_name("original").experiment_id])] == \
        [first.run_id]
