"""Many machines, simulated on one: two separate `googlenet-study sweep` processes started together
with the same PostgreSQL Optuna storage and the same real `mlflow server` (PostgreSQL backend store,
local artifact folder) join one study and one parent run; the storage password is never written.
Every URL is a plain `postgresql://` one, as README writes them: psycopg 3 is the driver."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from helpers.servers import dashboard_study, mlflow_server


from googlenet_study.sweep import storage as sweep_storage

pytestmark = pytest.mark.usefixtures("no_pdf_module")  # no test here reads report.pdf: the sweeps' reports skip it


@pytest.fixture
def mlflow_db(postgres_url):
    """A fresh PostgreSQL database for the MLflow server's backend store, dropped afterwards."""
    import psycopg

    name = f"gs_mlflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        try:
            yield postgres_url.rsplit("/", 1)[0] + f"/{name}"  # plain postgresql://, as README writes it
        finally:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_join_one_study_and_one_parent_run(tmp_path, postgres_url, mlflow_db, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    # Trust auth ignores the password, so a real one can be in the URL and must never be written.
    storage = postgres_url.replace("postgres@", "postgres:s3cret-pw@", 1)
    assert "s3cret-pw" in storage
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": name, "base": {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16,
                               "epochs": 1, "train_size": 100, "test_size": 50, "system_metrics": False,
                               "threads": 1},
        "space": {"seed": [0, 1], "aux_weight": [0.0, 0.3]}}, sort_keys=False))
    try:
        with mlflow_server(mlflow_db, tmp_path) as url:
            cmd = [sys.executable, "-m", "googlenet_study", "sweep", str(study), "--storage", storage,
                   "--tracking-uri", url, "--no-report"]
            procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]  # started together: they race to create the study
            outs = [p.communicate(timeout=400) for p in procs]
            for p, (out, err) in zip(procs, outs):
                assert p.returncode == 0, err[-3000:]
            logs = "".join(o + e for o, e in outs)
            assert sorted(o.split("] ", 1)[1].split(" ", 1)[0] for o, _ in outs) == ["created", "joined"]
            assert "s3cret-pw" not in logs and "postgres:***@" in logs

            c = MlflowClient(url)
            exp = c.get_experiment_by_name("googlenet-study")
            runs = c.search_runs([exp.experiment_id], max_results=100)
            parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
            assert len(parents) == 1 and parents[0].info.run_name == name
            pid = parents[0].info.run_id
            children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid]
            assert len(children) == 4 == len(runs) - 1
            assert all(r.info.status == "FINISHED" for r in children)
            assert {(r.data.params["seed"], r.data.params["aux_weight"]) for r in children} == \
                {("0", "0.0"), ("0", "0.3"), ("1", "0.0"), ("1", "0.3")}
            assert all(f"parent run {pid}" in o for o, _ in outs)
            # both processes trained: the study really was shared, not run twice or by one alone
            assert all(" COMPLETE " in o for o, _ in outs)
            assert parents[0].data.params["optuna_storage"] == storage.replace("s3cret-pw", "***")
            for r in runs:
                assert "s3cret-pw" not in str(r.data.params) + str(r.data.tags)
            arts = c.download_artifacts(pid, "study.yaml", str(tmp_path / "dl"))
            assert name in Path(arts).read_text()

        assert postgres_url.startswith("postgresql://")
        st = optuna.load_study(study_name=name, storage=postgres_url)  # README's way, no driver named
        assert len(st.trials) == 4 and all(t.state.name == "COMPLETE" for t in st.trials)
        assert st.user_attrs["mlflow_parent_run_id"] == pid
        assert sorted(t.user_attrs["mlflow_run_id"] for t in st.trials) == sorted(r.info.run_id for r in children)
        detail = dashboard_study(postgres_url, name)
        assert [t["state"] for t in detail["trials"]] == ["Complete"] * 4
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=sweep_storage.open_storage(postgres_url))
