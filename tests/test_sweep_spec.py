"""Study files: the shipped ones are valid; every bad one ends in one line naming the file and the
key, exit status 2, and leaves no Optuna storage and no MLflow run behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from googlenet_study import cli
from googlenet_study.sweep import space, study_file
from googlenet_study.config import UserError, read_yaml_mapping

from helpers import ROOT

BASE = {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16, "epochs": 1,
        "train_size": 100, "test_size": 50, "system_metrics": False}
GOOD = {"name": "ok", "base": BASE, "space": {"seed": [0, 1], "aux_weight": [0.0, 0.3]}}


def write(tmp_path: Path, doc: dict | str) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return p


def with_(**changes) -> dict:
    d = {**GOOD, **changes}
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("name", ["demo", "lecture37", "factorial", "pareto"])
def test_shipped_study_files_are_valid(name):
    s = study_file.load(str(ROOT / "experiments" / f"{name}.yaml"))
    assert s.name == name
    if name == "factorial":  # seeds x batch size x aux weight x backbone
        assert len(s.grid) == s.n_trials == 3 * 3 * 3 * 2
        assert {p["batch_size"] for p in s.grid} == {32, 64, 128}
    if name == "lecture37":
        cfg = s.config(s.grid[0])
        assert (s.n_trials, cfg.model, cfg.weights, cfg.dataset, cfg.image_size, cfg.batch_size, cfg.optimizer,
                cfg.aux_weight, cfg.backbone, cfg.epochs) == (1, "inception_v3", "imagenet", "cifar10", 299, 32,
                                                               "adam", 1.0, "full", 10)
    if name == "pareto":
        assert s.sampler == "nsga2" and s.objectives == (("maximize", "best_test_acc"),
                                                         ("minimize", "time_to_test_acc_70"))
        assert isinstance(s.space["lr"], space.Range) and s.space["lr"].log
    if name == "demo":
        assert len(s.grid) == 6 and s.config(s.grid[0]).weights == "none" and s.config(s.grid[0]).dataset == "digits"
        assert s.config(s.grid[0]).epochs >= 5 and s.report_targets  # a curve, and targets that separate


def test_grid_defaults_to_whole_grid_and_set_overrides_base(tmp_path):
    s = study_file.load(str(write(tmp_path, GOOD)), sets=["epochs=3", "image-size=24"])
    assert s.sampler == "grid" and s.n_trials == 4 and len(s.grid) == 4
    assert [p["seed"] for p in s.grid] == [0, 0, 1, 1]
    cfg = s.config(s.grid[3], threads=1)
    assert (cfg.epochs, cfg.image_size, cfg.seed, cfg.aux_weight, cfg.threads) == (3, 24, 1, 0.3, 1)


def test_ranges_int_and_float(tmp_path):
    s = study_file.load(str(write(tmp_path, with_(space={"lr": {"low": "1e-5", "high": 1.0e-2, "log": True},
                                                    "batch_size": {"low": 16, "high": 64, "step": 16}},
                                             sampler="tpe", n_trials=5))))
    assert s.space["lr"] == space.Range(1e-5, 1e-2, True, None, False)
    assert s.space["batch_size"].is_int and s.space["batch_size"].step == 16


BAD = [
    # (what, document changes, text expected in the message)
    ("unknown top-level key", with_(trials=3), "trials: unknown key"),
    ("name missing", with_(name=None), "name: must be"),
    ("name with a space", with_(name="a b"), "name: must be"),
    ("base is a list", with_(base=[1, 2]), "base: must be a mapping"),
    ("base field unknown", with_(base={**BASE, "learning_rate": 0.1}), "base.learning_rate: not a config field"),
    ("base value bad", with_(base={**BASE, "epochs": 0}), "epochs"),
    ("base value wrong type", with_(base={**BASE, "batch_size": "many"}), "batch_size must be int"),
    ("space missing", with_(space=None), "space: must map"),
    ("space field unknown", with_(space={"colour": [1, 2]}), "space.colour: not a config field"),
    ("space value bad", with_(space={"aux_weight": [0.0, -1.0]}), "space.aux_weight: value -1.0"),
    ("space value wrong type", with_(space={"seed": [0, "x"]}), "space.seed: value 'x'"),
    ("space empty list", with_(space={"seed": []}), "space.seed: an empty list"),
    ("space scalar", with_(space={"seed": 3}), "space.seed: must be a list"),
    ("space range on a string field", with_(space={"backbone": {"low": 0, "high": 1}}, sampler="tpe", n_trials=2),
     "space.backbone: backbone is not numeric"),
    ("range low above high", with_(space={"lr": {"low": 0.1, "high": 0.01}}, sampler="tpe", n_trials=2),
     "space.lr: low must be below high"),
    ("log range from 0", with_(space={"lr": {"low": 0, "high": 0.1, "log": True}}, sampler="tpe", n_trials=2),
     "space.lr: a log range needs low > 0"),
    ("float range on an int field", with_(space={"epochs": {"low": 1.5, "high": 3}}, sampler="tpe", n_trials=2),
     "space.epochs: epochs is an integer field"),
    ("range under grid", with_(space={"lr": {"low": 1e-4, "high": 1e-2}}, sampler="grid"),
     "space.lr: a range cannot be searched by sampler grid"),
    ("value invalid with base", with_(base={**BASE, "model": "inception_v3", "image_size": 100},
                                      space={"aux_weight": [0.0, 1.0]}), "space.aux_weight: value 1.0: image_size"),
    ("invalid combination", with_(base={**{k: v for k, v in BASE.items() if k != "image_size"},
                                        "model": "inception_v3", "aux_weight": 0.0},
                                  space={"image_size": [100, 299], "aux_weight": [0.0, 1.0]}),
     "space: the combination image_size=100, aux_weight=1.0 is invalid"),
    ("unknown sampler", with_(sampler="bayes"), "sampler: got 'bayes'"),
    ("sampler seed negative", with_(sampler_seed=-1), "sampler_seed: must be an integer >= 0"),
    ("unknown objective metric", with_(objectives=[{"maximize": "accuracy"}]), "unknown objective metric 'accuracy'"),
    ("objective target not in target_accs", with_(objectives=[{"minimize": "time_to_test_acc_95"}]),
     "time_to_test_acc_P needs P in base.target_accs"),
    ("objective direction", with_(objectives=[{"maximise": "best_test_acc"}]), "objectives[0]: must be one of"),
    ("objectives not a list", with_(objectives="best_test_acc"), "objectives: must be a list"),
    ("pruner with several objectives", with_(pruner="median", objectives=[{"maximize": "best_test_acc"},
                                                                          {"minimize": "total_time_s"}]),
     "pruner: median prunes on one objective"),
    ("unknown pruner", with_(pruner="asha"), "pruner: got 'asha'"),
    ("pruner warm-up without the wall-clock pruner", with_(pruner="median", pruner_warmup_s=60),
     "pruner_warmup_s: only with pruner wallclock_median"),
    ("pruner warm-up negative", with_(pruner="wallclock_median", pruner_warmup_s=-1),
     "pruner_warmup_s: must be a number of seconds >= 0"),
    ("report targets not percentages", with_(report_targets=[50, 120]),
     "report_targets: must be a list of percentages in (0, 100]"),
    ("report targets not a list", with_(report_targets="90"), "report_targets: must be a list of percentages"),
    ("n_trials zero", with_(n_trials=0), "n_trials: must be an integer >= 1"),
    ("n_trials beyond the grid", with_(n_trials=5), "n_trials: 5 is more than the grid's 4 points"),
    ("n_trials missing for tpe", with_(sampler="tpe"), "n_trials: required with sampler tpe"),
    ("max_retries negative", with_(max_retries=-1), "max_retries: must be an integer >= 0"),
    ("repeats a string", with_(repeats="two"), "repeats: must be an integer >= 1"),
    ("repeats with seed searched", with_(repeats=2), "repeats: with repeats > 1"),
    ("name too long", with_(name="x" * 200), "name: must be at most 128 characters"),
    ("experiment on two lines", with_(experiment="a\nb"), "experiment: must be one line"),
    ("grid too large", with_(space={"seed": list(range(1000)), "epochs": list(range(1, 102))}),
     "space: the grid has 101000 points; at most 100000"),
    ("list too long for an MLflow param", with_(space={"seed": list(range(2000))}),
     "space.seed: 2000 values do not fit one MLflow param"),
    ("sampler seed beyond numpy", with_(sampler_seed=2**40), "sampler_seed: must be an integer <= 2147483647"),
    ("n_trials beyond any study", with_(sampler="tpe", n_trials=2**70), "n_trials: must be an integer <= 100000"),
    ("range bound beyond a float", with_(space={"lr": {"low": 1e-3, "high": 10**400}}, sampler="tpe", n_trials=2),
     "space.lr: low and high must be finite numbers"),
    ("range step nan", with_(space={"lr": {"low": 1e-3, "high": 0.1, "step": float("nan")}}, sampler="tpe",
                             n_trials=2), "space.lr: step must be a number > 0 (finite)"),
    ("repeats past the last seed", with_(base={**BASE, "seed": 2**32 - 1}, space={"lr": [0.1, 0.01]}, repeats=2),
     "repeats: seeds base.seed .. base.seed+repeats-1 must stay <= 4294967295"),
    ("value too long for a path", with_(base={**BASE, "data_dir": "d" * 5000}), "data_dir must be at most 4096"),
    ("empty file", "", "name: must be a name"),
    ("a number of 5000 digits", "name: s\nn_trials: " + "1" * 5000 + "\n", "not valid YAML (a number of more"),
    ("not a mapping", "- a\n- b\n", "expected a mapping"),
    ("not YAML", "name: [unclosed\n", "not valid YAML"),
    # -- issue 18: a key written twice, and more runs than the trial cap --
    ("name twice", "name: a\nspace: {seed: [0]}\nname: b\n", "name: duplicate key (lines 1 and 3)"),
    ("space.seed twice", "name: a\nspace:\n  seed: [0]\n  lr: [0.1]\n  seed: [1]\n",
     "space.seed: duplicate key (lines 3 and 5)"),
    ("a key twice on one line", "name: a\nspace: {seed: [0], seed: [1]}\n",
     "space.seed: duplicate key (line 2, columns 9 and 20)"),
    ("repeats beyond the trial cap", with_(space={"lr": [0.1, 0.01]}, repeats=1_000_000),
     "repeats: 1000000 seeds x 2 trials = 2,000,000 training runs; at most 100,000"),
]


@pytest.mark.parametrize("what,doc,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_study_file_exits_2_and_creates_nothing(tmp_path, tracking_uri_no_store, capsys, what, doc, expected):
    path = write(tmp_path, doc)
    code = cli.main(["sweep", str(path), "--tracking-uri", tracking_uri_no_store, "--no-report"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and expected in err, err
    assert not (tmp_path / "optuna.db").exists()  # no Optuna study (the storage was never opened)
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run (the store was never opened)


@pytest.mark.parametrize("args,expected", [
    (["--set", "epochs"], "--set: expected field=value"),
    (["--set", "seed=3"], "--set seed: seed is searched"),
    (["--set", "epochs=0"], "epochs"),
    (["--n-trials", "9"], "--n-trials: 9 is more than the grid's 4 points"),
    (["--workers", "0"], "--workers: must be an integer >= 1"),
    (["--storage", "redis://u:secret@h/0"], "--storage: 'redis://u:***@h/0'"),
])
def test_bad_command_line_exits_2_and_creates_nothing(tmp_path, tracking_uri_no_store, capsys, args, expected):
    code = cli.main(["sweep", str(write(tmp_path, GOOD)), "--tracking-uri", tracking_uri_no_store, "--no-report",
                     *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "secret" not in err, err
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_load_error_is_a_user_error_naming_the_file(tmp_path):
    with pytest.raises(UserError, match=r"study\.yaml: space\.seed"):
        study_file.load(str(write(tmp_path, with_(space={"seed": [-1]}))))


def test_a_merge_key_may_be_overridden_and_an_alias_is_not_a_duplicate(tmp_path):
    """YAML's own ways to write a key once and use it in two places are not duplicates."""
    (tmp_path / "m.yaml").write_text("a: &b {k: 1, j: 2}\nc: {<<: *b, k: 3}\nd: *b\n")
    _, data = read_yaml_mapping(tmp_path / "m.yaml")
    assert data["c"] == {"k": 3, "j": 2} and data["d"] is data["a"]  # an alias stays one shared object
    p = write(tmp_path, "name: ok\nbase: &b {model: googlenet, dataset: digits, weights: none, image_size: 16}\n"
                        "space: {seed: [0, 1]}\nexperiment: e\n")
    assert study_file.load(str(p)).base["image_size"] == 16


def test_a_50_mb_study_file_is_refused_before_parsing_in_well_under_a_second(tmp_path, tracking_uri_no_store, capsys):
    """It took 9 min 15 s and 6 GB before the size limit (issue 18); the limit is checked by stat."""
    import time

    p = tmp_path / "study.yaml"
    with open(p, "w") as f:
        f.write("name: big\nspace:\n  seed: [")
        chunk = ",".join(["1234567"] * 125_000) + ","  # 1 MB a chunk
        for _ in range(50):
            f.write(chunk)
        f.write("0]\n")
    size = p.stat().st_size
    assert size > 50_000_000
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="a study or config file may be at most 1,048,576 bytes"):
        study_file.load(str(p))
    took = time.perf_counter() - t0
    assert took < 0.5, took  # measured: 0.1 ms
    code = cli.main(["sweep", str(p), "--tracking-uri", tracking_uri_no_store, "--no-report"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{p}: {size:,} bytes; a study or config file may be at most 1,048,576 bytes" in err, err
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
