"""The MLflow Project: every config field is a parameter, and every parameter reaches the config."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from googlenet_study.config import RunConfig

from conftest import ROOT

SPEC = yaml.safe_load((ROOT / "MLproject").read_text())


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
                 device="cpu", target_accs="10,20", system_metrics="false")
    assert set(given) == {f.name for f in dataclasses.fields(RunConfig)}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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
