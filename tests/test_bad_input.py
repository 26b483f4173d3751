"""The inventory of bad input, across every entry point: each kind gets one clear line naming the
field or file, exit status 2, and leaves no MLflow run, no Optuna study and no half-written file."""

from __future__ import annotations

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


def study(tmp: Path, body: str) -> str:
    f = tmp / "study.yaml"
    f.write_text("name: s\nbase: {model: googlenet, dataset: digits, weights: none, image_size: 16, epochs: 1}\n"
                 "space: {seed: [0, 1]}\nsampler: grid\nobjectives: [{maximize: best_test_acc}]\n" + body)
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
    checkpoint.save(checkpoint.path_for(tmp / ".checkpoints", cfg, "feed42"),
                    {"epoch": 0, "model": {}, "optimizer": {}, "rng": {}, "history": [], "config_hash": cfg.digest(),
                     "run_id": "feed42", "filters_before": None, "partial": {"epoch": 3, "batch": 1}})
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
}


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
