"""The run config: the lecture's defaults, one-way overrides, and bad input refused at the edge."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import pytest

from googlenet_study.cli import build_parser, config_from_args, main
from googlenet_study import budget
from googlenet_study.config import RunConfig, UserError

from helpers import ROOT


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
    (["--feature-cache", "on"], "feature_cache"),
    (["--device", "tpu"], "device"),
    (["--train-size", "3"], "train_size"),
]


@pytest.mark.parametrize("argv,field", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_value_is_one_line_exit_2_and_no_run(argv, field, tracking_uri_no_store, tmp_path, capsys):
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


@pytest.mark.parametrize("text,expected", [
    ("model: googlenet\nepochs: 3\nmodel: inception_v3\n", "c.yaml: model: duplicate key (lines 1 and 3)"),
    ("epochs: 3\nepochs: 3\n", "c.yaml: epochs: duplicate key (lines 1 and 2)"),  # equal values too
    ("target_accs: {a: 1, a: 2}\n", "c.yaml: target_accs.a: duplicate key (line 1, columns 15 and 21)"),
    ("1: a\n0x1: b\n", "c.yaml: 1: duplicate key (lines 1 and 2)"),  # equal as YAML reads them
])
def test_a_key_written_twice_is_refused_with_both_lines(text, expected, tmp_path, capsys, tracking_uri_no_store):
    """PyYAML keeps the last of two equal keys silently: the file would not say what ran."""
    (tmp_path / "c.yaml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no mlflow.db, no checkpoint


def test_a_config_file_over_1_mib_is_refused_by_its_size_before_parsing(tmp_path, capsys, tracking_uri_no_store):
    f = tmp_path / "c.yaml"
    f.write_text("model: googlenet\n" + "# padding\n" * 110_000)  # valid YAML, 1.1 MB
    assert main(["train", "--config", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{f}: {f.stat().st_size:,} bytes; a study or config file may be at most 1,048,576 bytes" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
    f.write_text("model: googlenet\n" + "# padding\n" * 100_000)  # 1.0 MB: under the limit, read as usual
    assert RunConfig.from_yaml(f).model == "googlenet"


def test_wrong_types_from_yaml_are_refused():
    with pytest.raises(UserError, match="epochs must be int"):
        RunConfig.from_dict({"epochs": 2.5})
    with pytest.raises(UserError, match="batch_size must be int"):
        RunConfig.from_dict({"batch_size": [32]})


def test_an_empty_config_file_is_the_defaults_and_a_scalar_is_refused(tmp_path):
    """An empty file, or one of comments only, is an empty mapping: every field keeps its default."""
    for text in ("", "# nothing set yet\n"):
        (tmp_path / "c.yaml").write_text(text)
        assert RunConfig.from_yaml(tmp_path / "c.yaml") == RunConfig()
    (tmp_path / "c.yaml").write_text("false\n")  # not silently read as "no fields"
    with pytest.raises(UserError, match="expected a mapping of config fields at the top level, got a bool"):
        RunConfig.from_yaml(tmp_path / "c.yaml")


@pytest.mark.parametrize("kind,expected", [
    ("character device", "/dev/null: is a character device, not a regular file"),
    ("directory", "is a directory, not a file"),
    ("FIFO", "is a FIFO, not a regular file"),  # refused before it is opened: reading it would block
    ("empty path", "'': an empty path"),
    ("name too long", "not a usable path (File name too long)"),
])
def test_a_config_path_that_is_not_a_regular_file_says_what_it_is(kind, expected, tmp_path):
    path = {"character device": "/dev/null", "directory": str(tmp_path), "FIFO": str(tmp_path / "fifo"),
            "empty path": "", "name too long": "c" * 300 + ".yaml"}[kind]
    if kind == "FIFO":
        os.mkfifo(path)
    with pytest.raises(UserError) as e:
        RunConfig.from_yaml(path)
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("value,expected", [
    ({"seed": 2**32}, "seed: got 4294967296; allowed: an integer from 0 to 4294967295"),
    ({"epochs": 2**63}, "epochs must be an integer of at most 9223372036854775807"),
    ({"lr": 10**400}, "lr must be float"),
    ({"target_accs": "0.5"}, "target_accs must be comma-separated integers, got '0.5'"),
    ({"target_accs": ",".join(["50"] * 101)}, "target_accs: got"),
    ({"weights": ""}, "weights: got ''; allowed: imagenet | none | the path of a state-dict file (an empty path)"),
    ({"weights": "/"}, "(is a directory, not a file)"),
    ({"data_dir": "da\nta"}, "data_dir must not contain control characters, got 'da\\nta'"),
    ({"data_dir": "d" * 5000}, "data_dir must be at most 4096 characters"),
    ({"device": "cuda:١"}, "device: got 'cuda:١'"),  # a digit to str.isdigit, not to torch
    ({1: 2, "x": 3}, "unknown config key 1"),  # YAML keys of mixed types
])
def test_odd_values_are_refused_in_one_line_naming_the_field(value, expected):
    with pytest.raises(UserError) as e:
        RunConfig.from_dict(value)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_single_target_accuracy_may_be_a_yaml_integer():
    assert RunConfig.from_dict({"target_accs": 70}).target_accs == (70,)


# ---- the memory estimate (googlenet_study/budget.py) -------------------------------------------------
GIB = 2**30


def lecture(**over) -> RunConfig:
    return RunConfig(device="cpu", threads=2, **over).resolve()


def test_the_estimate_passes_the_real_configs():
    """The lecture (inception_v3, 299 px, batch 32) on an 80 GB GPU and on this 24 GiB CPU machine (it
    runs here at 3 img/s); the factorial study's largest point on the GPU; the tests' tiny configs."""
    budget.check_fits(lecture(), available=80 * 10**9)
    budget.check_fits(lecture(), available=20 * GIB)
    budget.check_fits(lecture(batch_size=128), available=80 * 10**9)
    budget.check_fits(RunConfig(model="googlenet", dataset="digits", weights="none", image_size=32, device="cpu",
                                threads=2).resolve(), available=2 * GIB)


def test_the_estimate_grows_with_pixels_and_images_and_shrinks_with_a_frozen_trunk_and_amp():
    need = {name: budget.steps(cfg)[0].need for name, cfg in {  # the training step
        "lecture": lecture(), "2x batch": lecture(batch_size=64), "2x side": lecture(image_size=598),
        "frozen": lecture(backbone="frozen"), "bf16": lecture(amp="bf16")}.items()}
    activations = need["2x batch"] - need["lecture"]  # one batch's activations
    assert need["2x side"] - need["lecture"] == pytest.approx(3 * activations, rel=0.01)  # 4x the pixels
    assert need["frozen"] < need["lecture"] / 3 and need["bf16"] < need["lecture"]


def test_a_batch_larger_than_the_split_costs_the_split():
    tiny = dict(model="googlenet", dataset="digits", weights="none", image_size=32, device="cpu", threads=2)
    assert budget.steps(RunConfig(**tiny, batch_size=10**9, train_size=50).resolve())[0].batch == 50
    assert budget.steps(RunConfig(**tiny, batch_size=10**9).resolve())[0].batch == 1437  # all of digits' train split


@pytest.mark.parametrize("over,expected", [
    (dict(model="googlenet", image_size=100000),
     "image_size: 100000 px at batch_size 32 needs about 291 TiB for one training step of googlenet on cpu, "
     "20 GiB available; image_size <= 8"),
    (dict(model="googlenet", image_size=2000), "; batch_size <= 5 or image_size <= 8"),
    (dict(batch_size=50_000), "batch_size: 50000 images of 299 px needs about"),
    (dict(eval_batch_size=10_000), "eval_batch_size: 10000 images of 299 px needs about"),
    (dict(), "no batch of this model fits"),  # 100 MiB: not even the model's weights and Adam's moments
])
def test_a_refusal_names_the_field_what_it_needs_what_is_free_and_what_would_fit(over, expected):
    with pytest.raises(UserError) as e:
        budget.check_fits(lecture(**over), available=20 * GIB if over else 100 * 2**20)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_what_the_refusal_says_would_fit_does_fit():
    cfg = lecture(model="googlenet", image_size=2000)
    with pytest.raises(UserError, match=r"batch_size <= (\d+) or image_size <= (\d+)") as e:
        budget.check_fits(cfg, available=20 * GIB)
    batch, size = map(int, re.search(r"batch_size <= (\d+) or image_size <= (\d+)", str(e.value)).groups())
    budget.check_fits(dataclasses.replace(cfg, batch_size=batch, eval_batch_size=batch), available=20 * GIB)
    budget.check_fits(dataclasses.replace(cfg, image_size=size), available=20 * GIB)
    with pytest.raises(UserError):
        budget.check_fits(dataclasses.replace(cfg, image_size=size + 1), available=20 * GIB)


@pytest.mark.slow  # two training steps in a fresh process: 10 s, more under load
def test_the_estimate_is_close_to_a_measured_step():
    """One calibration point of benchmarks/step_memory.py, measured now in a fresh process: the estimate
    is about the measurement (measured 448 MiB, estimated 454 MiB when calibrated), never far above (it
    would refuse what runs) nor far below (it would let through what cannot)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import step_memory

    measured = step_memory.measure("googlenet", 128, 16, 1.0, "full", "train")["step_bytes"]
    # the measurement is what the step adds to a process that holds the model already
    estimate = budget.step_bytes("googlenet", 128, 16, True, False, "none") - 4 * budget.PARAMS[("googlenet", True)]
    assert 0.85 * measured <= estimate <= 1.5 * measured, (measured / 2**20, estimate / 2**20)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity masks")
def test_threads_default_to_the_cores_this_process_may_run_on_not_the_whole_nodes():
    """A Slurm task with cpus-per-task, or a cgroup, leaves a process an affinity mask smaller than the node;
    os.cpu_count() is the node's (threads: 64 in an 8-core task). Here: one core of this machine's."""
    mine = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mine)})
        assert RunConfig(device="cpu").resolve().threads == 1
    finally:
        os.sched_setaffinity(0, mine)
    assert RunConfig(device="cpu").resolve().threads == len(mine)
