"""The run config: the lecture's defaults, one-way overrides, and bad input refused at the edge."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from googlenet_study.cli import build_parser, config_from_args, main
from googlenet_study.config import RunConfig, UserError


def test_defaults_are_the_lecture():
    c = RunConfig()
    assert (c.model, c.weights, c.dataset, c.batch_size, c.optimizer, c.aux_weight, c.backbone, c.epochs) == \
        ("inception_v3", "imagenet", "cifar10", 32, "adam", 1.0, "full", 10)
    r = c.resolve()
    assert r.image_size == 299 and r.device in ("cpu", "cuda") and r.threads >= 1
    assert RunConfig(model="googlenet").resolve().image_size == 224


def test_config_is_frozen_and_replaced_not_mutated():
    c = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 1.0  # type: ignore[misc]
    assert dataclasses.replace(c, lr=0.5).lr == 0.5 and c.lr == 1e-4


def test_command_line_over_file_over_defaults(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("model: googlenet\nepochs: 4\nlr: 0.01\ntarget_accs: [60, 90]\ndeterministic: true\n")
    args = build_parser().parse_args(["train", "--config", str(f), "--epochs", "7", "--batch-size", "8"])
    c = config_from_args(args)
    assert (c.model, c.epochs, c.lr, c.batch_size, c.target_accs, c.deterministic) == \
        ("googlenet", 7, 0.01, 8, (60, 90), True)
    assert c.optimizer == "adam"  # untouched default


def test_params_are_every_field_and_round_trip():
    c = RunConfig(model="googlenet", train_size=100, target_accs=(50, 75), deterministic=True)
    p = c.to_params()
    assert set(p) == {f.name for f in dataclasses.fields(RunConfig)}
    assert p["target_accs"] == "50,75" and p["deterministic"] == "true" and p["train_size"] == "100"
    assert RunConfig.from_dict(p) == c  # what MLflow holds rebuilds the config exactly


def test_digest_ignores_where_data_lives_but_not_what_is_trained():
    c = RunConfig()
    assert c.digest() == dataclasses.replace(c, data_dir="/elsewhere").digest()
    assert c.digest() != dataclasses.replace(c, seed=1).digest()


BAD = [
    (["--model", "resnet50"], "model"),
    (["--dataset", "mnist"], "dataset"),
    (["--optimizer", "rmsprop"], "optimizer"),
    (["--weights", "imagenet21k"], "weights"),
    (["--backbone", "half"], "backbone"),
    (["--batch-size", "0"], "batch_size"),
    (["--epochs", "0"], "epochs"),
    (["--aux-weight", "-0.5"], "aux_weight"),
    (["--lr", "0"], "lr"),
    (["--lr=-1e-3"], "lr"),
    (["--lr", "fast"], "lr"),
    (["--image-size", "224"], "image_size"),          # inception_v3's aux arm needs 299
    (["--model", "googlenet", "--image-size", "8"], "image_size"),
    (["--deterministic", "maybe"], "deterministic"),
    (["--target-accs", "50,120"], "target_accs"),
    (["--amp", "fp8"], "amp"),
    (["--device", "tpu"], "device"),
    (["--train-size", "3"], "train_size"),
]


@pytest.mark.parametrize("argv,field", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_value_is_one_line_exit_2_and_no_run(argv, field, tracking_uri, tmp_path, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err, err
    assert not (tmp_path / "mlflow.db").exists()  # nothing written: not even the store


def test_unknown_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--learning-rate", "0.1"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--learning-rate" in err


def test_inception_small_image_says_why(capsys, tracking_uri):
    assert main(["train", "--image-size", "128"]) == 2
    assert "auxiliary arm needs 299" in capsys.readouterr().err


def test_unknown_key_in_file_names_file_and_key(tmp_path, capsys, tracking_uri):
    f = tmp_path / "c.yaml"
    f.write_text("model: googlenet\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "learning_rate" in err


def test_missing_and_malformed_config_files(tmp_path, capsys, tracking_uri):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err
    f = tmp_path / "broken.yaml"
    f.write_text("model: [googlenet\n")
    assert main(["train", "--config", str(f)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_wrong_types_from_yaml_are_refused():
    with pytest.raises(UserError, match="epochs must be int"):
        RunConfig.from_dict({"epochs": 2.5})
    with pytest.raises(UserError, match="batch_size must be int"):
        RunConfig.from_dict({"batch_size": [32]})
