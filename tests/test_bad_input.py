"""The inventory of bad input, across every entry point: each kind gets one clear line naming the
field or file, exit status 2, and leaves no MLflow run, no Optuna study and no half-written file."""

from __future__ import annotations

import dataclasses
import pickle
import sqlite3
from pathlib import Path

import pytest
import torch
from torchvision import models
from torchvision.datasets import CIFAR10

from googlenet_study import checkpoint
from googlenet_study.cli import main
from googlenet_study.config import RunConfig

TINY = ["--model", "googlenet", "--dataset", "digits", "--weights", "none", "--image-size", "16", "--epochs", "1",
        "--train-size", "50", "--test-size", "20", "--system-metrics", "false"]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def study(tmp: Path, body: str, space: str = "{seed: [0, 1]}") -> str:
    f = tmp / "study.yaml"
    f.write_text("name: s\nbase: {model: googlenet, dataset: digits, weights: none, image_size: 16, epochs: 1}\n"
                 f"space: {space}\nsampler: grid\nobjectives: [{{maximize: best_test_acc}}]\n" + body)
    return str(f)


def case_weights_mismatch(tmp: Path) -> list[str]:
    f = tmp / "inception.pth"
    torch.save(models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), f)
    return ["train", *TINY, "--weights", str(f)]


def case_weights_garbage(tmp: Path) -> list[str]:
    (tmp / "garbage.pth").write_bytes(b"PK\x03\x04 definitely not torch")
    return ["train", *TINY, "--weights", str(tmp / "garbage.pth")]


def case_truncated_cifar(tmp: Path) -> list[str]:
    folder = tmp / "data" / CIFAR10.base_folder
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": b"\0" * 100})[:40])
    return ["train", *TINY, "--dataset", "cifar10", "--data-dir", str(tmp / "data")]


def case_corrupt_checkpoint(tmp: Path) -> list[str]:
    cfg = RunConfig(model="googlenet", dataset="digits", weights="none", image_size=16, epochs=1, train_size=50,
                    test_size=20, system_metrics=False).resolve()
    p = checkpoint.path_for(tmp / ".checkpoints", cfg, "abc123")
    p.parent.mkdir(parents=True)
    p.write_bytes(b"half a checkpoint")
    return ["train", *TINY]


def case_checkpoint_partial_epoch_out_of_place(tmp: Path) -> list[str]:
    # Loads as a checkpoint of this config, but its mid-epoch position claims epoch 3 after epoch 0.
    cfg = RunConfig(model="googlenet", dataset="digits", weights="none", image_size=16, epochs=1, train_size=50,
                    test_size=20, system_metrics=False).resolve()
    partial = dataclasses.replace(checkpoint.PartialEpoch.fresh(3), batch=1)
    checkpoint.save(checkpoint.path_for(tmp / ".checkpoints", cfg, "feed42"),
                    checkpoint.TrainingState(checkpoint.RunIdentity.of(cfg, "feed42", None, None), {}, {}, None, {},
                                             [], [], partial))
    return ["train", *TINY]


CASES = {
    # kind: (argv or a function of the temp folder that returns argv, words the line must contain)
    "unknown model": (["train", *TINY, "--model", "vgg16"], ["model", "inception_v3 | googlenet"]),
    "batch size 0": (["train", *TINY, "--batch-size", "0"], ["batch_size", ">= 1"]),
    "negative lr": (["train", *TINY, "--lr=-0.1"], ["lr", "> 0"]),
    "aux weight below 0": (["train", *TINY, "--aux-weight=-1"], ["aux_weight"]),
    "image too small for inception's aux arm": (["train", "--model", "inception_v3", "--image-size", "224"],
                                                 ["image_size", "299"]),
    "not a number": (["train", *TINY, "--epochs", "ten"], ["epochs", "int"]),
    "unknown flag": (["train", "--epoch", "3"], ["--epoch"]),
    "unknown key in a config file": (lambda t: ["train", "--config", write(t / "c.yaml", "modle: googlenet\n")],
                                     ["c.yaml", "modle"]),
    "config file not YAML": (lambda t: ["train", "--config", write(t / "c.yaml", "a: [b\n")], ["c.yaml", "YAML"]),
    "config file missing": (["train", "--config", "nowhere.yaml"], ["nowhere.yaml"]),
    "weights file of another model": (case_weights_mismatch, ["inception.pth", "does not fit"]),
    "weights file not a state dict": (case_weights_garbage, ["garbage.pth"]),
    "imagenet weights missing offline": (["train", *TINY, "--weights", "imagenet"],
                                         ["googlenet-1378be20.pth", "https://download.pytorch.org"]),
    "cifar10 missing, download off": (["train", *TINY, "--dataset", "cifar10", "--download", "false"],
                                      ["cifar-10-batches-py", "download"]),
    "cifar10 batch truncated": (case_truncated_cifar, ["data_batch_1", "MD5"]),
    "corrupt checkpoint": (case_corrupt_checkpoint, ["abc123.ckpt", "--resume never"]),
    "checkpoint with a partial epoch out of place": (case_checkpoint_partial_epoch_out_of_place,
                                                      ["feed42.ckpt", "inconsistent", "--resume never"]),
    "resume of an unknown run": (["train", *TINY, "--resume", "0badc0de"], ["0badc0de"]),
    "tracking uri of no kind": (["train", *TINY, "--tracking-uri", "ftp://example"], ["tracking-uri", "sqlite:///"]),
    "tracking server unreachable": (["train", *TINY, "--tracking-uri", "http://127.0.0.1:9"], ["cannot reach"]),
    "tracking uri with a password is redacted": (["train", *TINY, "--tracking-uri", "postgresql+x://u:hunter2@h/db"],
                                                 ["u:***@"]),
    "reproduce of an unknown run": (["reproduce", "0badc0de"], ["0badc0de"]),
    "sweep file with an unknown key": (lambda t: ["sweep", study(t, "n_trails: 3\n")], ["study.yaml", "n_trails"]),
    "sweep range under grid": (lambda t: ["sweep", _grid_range(t)], ["study.yaml", "grid"]),
    "sweep storage of no kind": (lambda t: ["sweep", study(t, ""), "--storage", "redis://127.0.0.1"],
                                 ["--storage"]),
    "sweep with 0 workers": (lambda t: ["sweep", study(t, ""), "--workers", "0"], ["--workers"]),
    "report of an unknown experiment": (["report", "--experiment", "nope"], ["nope"]),
    "report with bad targets": (["report", "--experiment", "nope", "--targets", "50,abc"], ["targets"]),
    # -- found by trying odd input as a user types it (issue 10) --
    "config file /dev/null": (["train", "--config", "/dev/null"], ["/dev/null", "character device", "not a regular"]),
    "config file a directory": (lambda t: ["train", "--config", str(t)], ["is a directory, not a file"]),
    "config path empty": (["train", "--config", ""], ["''", "an empty path"]),
    "config file not UTF-8": (lambda t: ["train", "--config", write_bytes(t / "c.yaml", b"model: \xff\xfe\n")],
                              ["c.yaml", "not UTF-8"]),
    "config with a 5000-digit number": (lambda t: ["train", "--config", write(t / "c.yaml", "epochs: " + "1" * 5000)],
                                        ["c.yaml", "4300 digits"]),
    "config nested too deeply": (lambda t: ["train", "--config", write(t / "c.yaml", "[" * 5000)],
                                 ["c.yaml", "nested too deeply"]),
    "image too large for memory": (["train", *TINY, "--image-size", "100000"],
                                   ["image_size: 100000 px at batch_size", "available", "image_size <=", "would fit"]),
    "batch too large for memory": (["train", *TINY, "--dataset", "cifar10", "--download", "false", "--image-size", "224",
                                    "--train-size", "none", "--batch-size", "50000"],
                                   ["batch_size: 50000 images of 224 px", "batch_size <=", "would fit"]),
    "far more threads than cores": (["train", *TINY, "--threads", "10000"], ["threads: 10000", "per core"]),
    "seed beyond numpy's range": (["train", *TINY, "--seed", str(2**32)], ["seed", "4294967295"]),
    "integer beyond int64": (["train", *TINY, "--epochs", str(2**63)], ["epochs", "at most 9223372036854775807"]),
    "weights a directory": (lambda t: ["train", *TINY, "--weights", str(t)], ["weights", "is a directory"]),
    "weights name too long": (["train", *TINY, "--weights", "x" * 300 + ".pth"], ["weights", "File name too long"]),
    "weights empty": (["train", *TINY, "--weights", ""], ["weights", "an empty path"]),
    "text with a newline": (["train", *TINY, "--data-dir", "da\nta"], ["data_dir", "control characters"]),
    "target accuracies not integers": (["train", *TINY, "--target-accs", "0.5"],
                                       ["target_accs", "comma-separated integers"]),
    "checkpoint dir a file": (["train", *TINY, "--checkpoint-dir", "/dev/null"], ["--checkpoint-dir", "not a folder"]),
    "experiment empty": (["train", *TINY, "--experiment", ""], ["--experiment"]),
    "resume empty": (["train", *TINY, "--resume", ""], ["--resume: '' is not allowed", "auto | never"]),
    "run name too long": (["train", *TINY, "--run-name", "r" * 300], ["--run-name", "250 characters"]),
    "sweep file a directory": (lambda t: ["sweep", str(t)], ["is a directory"]),
    "sweep path empty": (["sweep", ""], ["an empty path"]),
    "sweep with 10000 workers": (lambda t: ["sweep", study(t, ""), "--workers", "10000"], ["--workers: 10000", "cores"]),
    "sweep point too large for memory": (lambda t: ["sweep", study(t, "", space="{image_size: [16, 100000]}")],
                                         ["space point image_size=100000", "available", "would fit"]),
    # -- issue 18: strict YAML and limits --
    "config file with a key twice": (lambda t: ["train", "--config", write(t / "c.yaml", "lr: 0.1\nlr: 1\n")],
                                     ["c.yaml", "lr: duplicate key (lines 1 and 2)"]),
    "sweep file with space.seed twice": (lambda t: ["sweep", write(t / "s.yaml", "name: s\nspace:\n  seed: [0]\n"
                                                                                 "  seed: [1]\n")],
                                         ["s.yaml", "space.seed: duplicate key (lines 3 and 4)"]),
    "sweep file over 1 MiB": (lambda t: ["sweep", write(t / "big.yaml", "name: s\n" + "#" * 2_000_000 + "\n")],
                              ["big.yaml", "2,000,009 bytes", "at most 1,048,576 bytes"]),
    "sweep repeats beyond the trial cap": (lambda t: ["sweep", write(t / "r.yaml", "name: s\nbase: {model: googlenet, "
                                                      "dataset: digits, weights: none, image_size: 16}\n"
                                                      "space: {lr: [0.1, 0.01]}\nrepeats: 1000000\n")],
                                           ["r.yaml", "repeats: 1000000 seeds x 2 trials", "at most 100,000"]),
    # -- issue 18: escapes, each one line --
    "resume a glob": (["train", *TINY, "--resume", "*"], ["--resume: '*' is not allowed", "32 hexadecimal digits"]),
    "resume a path out of the folder": (["train", *TINY, "--resume", "../../etc/passwd"], ["--resume", "auto | never"]),
    "resume of 5000 characters": (["train", *TINY, "--resume", "r" * 5000], ["--resume: 'rrrr", "...", "auto | never"]),
    "checkpoint dir a symlink loop": (lambda t: ["train", *TINY, "--checkpoint-dir", symlink_loop(t)],
                                      ["--checkpoint-dir", "loop", "a symlink that does not resolve"]),
    "train into a deleted experiment": (lambda t: ["train", *TINY, "--experiment", deleted_experiment(t)],
                                        ["--experiment: 'gone' is a deleted experiment", "restore"]),
    "reproduce with a tracking uri of no kind": (["reproduce", "a" * 32, "--tracking-uri", "foo://bar"],
                                                 ["tracking-uri: 'foo://bar'", "sqlite:///"]),
    "reproduce into a missing sqlite folder": (lambda t: ["reproduce", "a" * 32, "--tracking-uri",
                                                          f"sqlite:///{t}/missing/dir/x.db"],
                                               ["missing/dir/x.db", "folder for the SQLite file does not exist"]),
    "reproduce of a run id that is a path": (["reproduce", "../x"], ["run_id: '../x'", "32 hexadecimal digits"]),
    "report out a file": (lambda t: ["report", "--experiment", "nope", "--out", write(t / "f", "mine")],
                          ["--out", "not a folder"]),
}


def symlink_loop(t: Path) -> str:
    (t / "loop").symlink_to(t / "loop")  # exists() is False on ELOOP: it once passed the check and trained
    return str(t / "loop")


def deleted_experiment(t: Path) -> str:
    from mlflow import MlflowClient
    c = MlflowClient(f"sqlite:///{t / 'mlflow.db'}")
    c.delete_experiment(c.create_experiment("gone"))
    return "gone"


def write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _grid_range(t: Path) -> str:
    f = t / "study.yaml"
    f.write_text("name: s\nbase: {model: googlenet, dataset: digits, weights: none, image_size: 16}\n"
                 "space: {lr: {low: 0.001, high: 0.1}}\nsampler: grid\nobjectives: [{maximize: best_test_acc}]\n")
    return str(f)


def test_the_inventory_has_at_least_15_kinds():
    assert len(CASES) >= 15


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_input(kind, tmp_path, monkeypatch, torch_home, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv, words = CASES[kind]
    if callable(argv):
        argv = argv(tmp_path)
    before = set(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith(("Downloading:", "20"))]  # torch.hub / MLflow INFO lines
    assert code == 2, err
    assert len(err) == 1, err
    for w in words:
        assert w in err[0], (w, err[0])
    assert "hunter2" not in err[0]
    db = tmp_path / "mlflow.db"
    if db.exists():  # reading a store may create the file; it must hold no run
        with sqlite3.connect(db) as con:
            tables = {r[0] for r in con.execute("select name from sqlite_master")}
            assert "runs" not in tables or con.execute("select count(*) from runs").fetchone()[0] == 0
    assert not (tmp_path / "optuna.db").exists()  # no Optuna study
    after = set(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = {str(p) for p in after - before} - {"mlflow.db", "torch-home/hub/checkpoints"}
    assert not {p for p in new if not p.startswith(("torch-home",))}, new  # nothing half-written


STUDY = Path(__file__).resolve().parent.parent / "experiments" / "demo.yaml"


@pytest.mark.parametrize("command", ["train", "sweep", "report"])
@pytest.mark.parametrize("uri", ["file:///{tmp}/mlruns", "{tmp}/mlruns"])
def test_a_file_store_is_refused_in_one_line_naming_sqlite(command, uri, tmp_path, monkeypatch, capsys):
    """MLflow 3 keeps its file store in maintenance mode and refuses it with a 42-line traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    args = {"train": ["train", *TINY], "sweep": ["sweep", str(STUDY), "--storage", f"sqlite:///{tmp_path}/o.db"],
            "report": ["report", "--experiment", "googlenet-study"]}[command]
    code = main([*args, "--tracking-uri", uri.format(tmp=tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "tracking-uri" in err[0] and "maintenance" in err[0] and "sqlite:///" in err[0], err[0]
    assert list(tmp_path.iterdir()) == []  # no mlruns/, no mlflow.db
