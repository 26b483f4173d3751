"""The MLflow Project: every config field is a parameter, and every parameter reaches the config."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from googlenet_study import schema, tracking
from googlenet_study.config import RunConfig
from googlenet_study.report import fetch

from helpers import ROOT, new_store
from helpers.reference import undocumented

SPEC = yaml.safe_load((ROOT / "MLproject").read_text())
FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def test_main_declares_every_config_field_with_its_default_and_passes_it_on():
    main = SPEC["entry_points"]["main"]
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    assert set(fields) <= set(main["parameters"])
    for name, f in fields.items():
        assert f"--{name.replace('_', '-')} {{{name}}}" in main["command"], name
        default = main["parameters"][name]["default"]
        assert RunConfig.from_dict({name: default}) == RunConfig(), name  # MLproject default == config default


def test_conda_env_builds_the_same_torch():
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "torch==2.14.1" in pip and "torchvision==0.29.1" in pip and "-e ." in pip


@pytest.mark.slow
def test_mlflow_run_logs_into_the_run_mlflow_projects_created(tmp_path):
    given = dict(model="googlenet", weights="none", dataset="digits", data_dir=str(tmp_path / "d"), download="false",
                 image_size="16", backbone="frozen", aux_weight="0.5", batch_size="16", eval_batch_size="20",
                 epochs="1", optimizer="sgd", lr="0.01", seed="3", train_size="100", test_size="50",
                 deterministic="true", threads="1", amp="none", channels_last="true", compile="false",
                 feature_cache="off", device="cpu", target_accs="10,20", system_metrics="false")
    assert set(given) == {f.name for f in dataclasses.fields(RunConfig)}
    uri = new_store(tmp_path / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "proj"]
    for k, v in given.items():
        cmd += ["-P", f"{k}={v}"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("proj").experiment_id])
    assert len(runs) == 1, "training must attach to MLFLOW_RUN_ID, not start a second run"
    run = runs[0]
    assert run.info.status == "FINISHED" and "test_acc" in run.data.metrics
    expect = RunConfig.from_dict(given).to_params()
    assert {k: run.data.params[k] for k in expect} == expect


def test_entry_points_declare_the_names_the_schema_lists_beyond_config_fields():
    assert set(SPEC["entry_points"]["main"]["parameters"]) == FIELDS | set(schema.PROJECT_PARAMS)
    assert set(SPEC["entry_points"]["sweep"]["parameters"]) == set(schema.PROJECT_SWEEP_PARAMS)


def test_a_run_that_has_params_already_gets_the_missing_ones_and_resolved_values():
    given = {"device": "auto", "threads": "none", "lr": "0.0001", "experiment": "googlenet-study"}
    resolved = {"device": "cpu", "threads": "2", "lr": "0.0001", "seed": "0"}
    assert tracking.params_to_log(resolved, given) == {"seed": "0", "resolved.device": "cpu", "resolved.threads": "2"}
    assert tracking.params_to_log(resolved, {}) == resolved
    recorded = {**given, "seed": "0", "resolved.device": "cpu", "resolved.threads": "2"}
    assert schema.resolved_params(recorded) == {**resolved, "experiment": "googlenet-study"}


# ---- `mlflow run .` with the MLproject's own defaults, as documented: from the repo root ----------------
TINY_P = dict(dataset="digits", weights="none", model="googlenet", image_size="32", epochs="1")


@pytest.fixture(scope="module")
def project_store(tmp_path_factory):
    """A SQLite store whose experiments keep their artifacts in tmp (`mlflow run .` works in the repo root)."""
    d = tmp_path_factory.mktemp("mlproject")
    uri = new_store(d / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)  # the Default experiment's artifact folder is made relative to the working folder
        MlflowClient(uri).create_experiment(tracking.DEFAULT_EXPERIMENT, artifact_location=str(d / "artifacts"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GOOGLENET_STUDY_CACHE": "off",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        env.pop(k, None)
    return {"dir": d, "uri": uri, "env": env}


def mlflow_run(store: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlflow", "run", ".", "--env-manager", "local", *args]
    p = subprocess.run(cmd, cwd=ROOT, env=store["env"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def recorded_names(run) -> set[str]:
    return ({k for k in run.data.metrics if not k.startswith("system/")} | set(run.data.params)
            | {k for k in run.data.tags if not k.startswith("mlflow.")})


@pytest.mark.slow
def test_mlflow_run_main_with_the_mlproject_defaults_records_what_it_resolved(project_store):
    p = dict(TINY_P, train_size="100", test_size="50", system_metrics="false")
    mlflow_run(project_store, *[a for k, v in p.items() for a in ("-P", f"{k}={v}")])
    c = MlflowClient(project_store["uri"])
    runs = c.search_runs(["0"], "params.model = 'googlenet'")  # no --experiment-name: MLflow's Default one
    assert len(runs) == 1, "training must attach to MLFLOW_RUN_ID, not start a second run"
    run = runs[0]
    assert run.info.status == "FINISHED" and "test_acc" in run.data.metrics
    params = run.data.params
    assert (params["device"], params["resolved.device"]) == ("auto", "cpu")
    assert params["threads"] == "none" and int(params["resolved.threads"]) >= 1
    assert params["eval_batch_size"] == "none" and params["resolved.eval_batch_size"] == "64"
    assert undocumented(recorded_names(run)) == set()
    f = fetch.fetch("Default", uri=project_store["uri"], cache_dir=project_store["dir"] / "cache")
    assert f.runs.loc[0, "device"] == "cpu" and f.runs.loc[0, "threads"] == params["resolved.threads"]
    assert not [k for k in f.params if k.startswith(schema.RESOLVED_PREFIX)] and "experiment" not in f.params
    cfg, _ = tracking.load_run_config(run.info.run_id, project_store["uri"])
    assert (cfg.device, cfg.threads) == ("cpu", int(params["resolved.threads"]))


@pytest.fixture(scope="module")
def project_sweep(project_store):
    """`mlflow run . -e sweep -P file=STUDY`: one grid point, two seeds (a trial run with two seed runs).
    --experiment-name: the run MLflow Projects makes is the parent, so the sweep lives in its experiment."""
    name = f"mlproject-{os.getpid()}"
    study = project_store["dir"] / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": name, "base": {**TINY_P, "image_size": 32, "epochs": 1, "train_size": 100, "test_size": 50,
                               "system_metrics": False},
        "space": {"aux_weight": [0.3]}, "sampler": "grid", "objectives": [{"maximize": "best_test_acc"}],
        "repeats": 2}))
    out = ROOT / "reports" / name  # reports go under the working folder, the repo root here
    try:
        mlflow_run(project_store, "--experiment-name", tracking.DEFAULT_EXPERIMENT, "-e", "sweep",
                   "-P", f"file={study}")
        yield {**project_store, "name": name, "out": out}
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.slow
def test_mlflow_run_sweep_with_only_the_study_file_runs_it_under_the_projects_run(project_sweep):
    c = MlflowClient(project_sweep["uri"])
    exp = c.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    runs = c.search_runs([exp], f"tags.study_name = '{project_sweep['name']}'")
    parent = next(r for r in runs if r.data.tags.get(schema.ROLE_TAG) == "parent")
    trial = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == trial.info.run_id]
    assert len(runs) == 4 and len(seeds) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    assert parent.data.metrics["n_trials_complete"] == 1 and trial.data.params["seeds"] == "0,1"
    assert set(schema.PROJECT_SWEEP_PARAMS) <= set(parent.data.params)  # the run `mlflow run` made
    assert undocumented(set().union(*(recorded_names(r) for r in runs))) == set()


@pytest.mark.slow
def test_mlflow_run_report_with_only_the_study_writes_the_report(project_sweep):
    out = project_sweep["out"]
    shutil.rmtree(out, ignore_errors=True)  # the sweep wrote one at its end: this one must be new
    mlflow_run(project_sweep, "-e", "report", "-P", f"study={project_sweep['name']}")
    assert {"report.html", "report.pdf", "runs.csv", "summary.csv"} <= {p.name for p in out.iterdir()}
