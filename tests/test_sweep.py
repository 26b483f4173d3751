"""Sweeps seen through the real stores: every trial a finished MLflow child run of one parent, an
Optuna study that resumes without re-running anything, grid points run exactly once under
concurrency, repeats nested under the trial's run, pruned runs KILLED and tagged, and
optuna-dashboard serving the study."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from helpers import cli, new_store, write_study
from helpers.servers import dashboard_study

from googlenet_study import cli as cli_mod
from googlenet_study.sweep import study_file
from googlenet_study.sweep import setup, storage, worker
from googlenet_study.sweep import trial as trial_mod

pytestmark = pytest.mark.usefixtures("no_pdf_module")  # no test here reads report.pdf: the sweeps' reports skip it


def runs_of(uri: str) -> list:
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("googlenet-study")
    return c.search_runs([exp.experiment_id], max_results=1000) if exp else []


@pytest.fixture(scope="module")
def two_worker_sweep(tmp_path_factory):
    """One real 2-worker sweep of a 2 x 2 grid (shared by the tests that read its stores)."""
    d = tmp_path_factory.mktemp("sweep2")
    path = write_study(d, "tiny", {"seed": [0, 1], "aux_weight": [0.0, 0.3]})
    uri = new_store(d / "mlflow.db")
    t0 = time.monotonic()
    r = cli("sweep", str(path), "--workers", "2", "--tracking-uri", uri, "--no-report", cwd=d, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "leaked semaphore" not in r.stderr  # workers exit by os._exit: nothing of theirs may leak
    return {"dir": d, "path": path, "uri": uri, "out": r.stdout, "seconds": time.monotonic() - t0}


@pytest.mark.slow
def test_two_workers_every_trial_a_finished_child_of_one_parent(two_worker_sweep):
    d, uri = two_worker_sweep["dir"], two_worker_sweep["uri"]
    runs = runs_of(uri)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == "tiny" and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(children) == 5
    assert {(r.data.params["seed"], r.data.params["aux_weight"]) for r in children} == \
        {("0", "0.0"), ("0", "0.3"), ("1", "0.0"), ("1", "0.3")}
    cores = len(os.sched_getaffinity(0))
    c = MlflowClient(uri)
    for r in children:
        assert r.info.status == "FINISHED" and r.data.tags["study_name"] == "tiny"
        assert r.data.params["threads"] == str(max(1, cores // 2))  # the cores split between 2 workers
        assert [m.step for m in c.get_metric_history(r.info.run_id, "test_acc")] == [1, 2]
        assert [m.step for m in c.get_metric_history(r.info.run_id, "elapsed_time_s")] == [1, 2]

    st = optuna.load_study(study_name="tiny", storage=f"sqlite:///{d / 'optuna.db'}")
    assert [t.state.name for t in st.trials] == ["COMPLETE"] * 4
    by_trial = {r.data.tags["trial_number"]: r for r in children}
    for t in st.trials:
        run = by_trial[str(t.number)]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert t.value == pytest.approx(run.data.metrics["best_test_acc"])
        assert (int(run.data.params["seed"]), float(run.data.params["aux_weight"])) == \
            (t.params["seed"], t.params["aux_weight"])
    assert st.user_attrs[setup.PARENT] == parent.info.run_id

    best = max(r.data.metrics["best_test_acc"] for r in children)
    assert parent.data.metrics["best_trial.best_test_acc"] == pytest.approx(best)
    assert parent.data.metrics["n_trials_complete"] == 4
    assert parent.data.params["sampler"] == "grid" and parent.data.params["space.seed"] == "[0, 1]"
    arts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"study.yaml", "search_space.yaml", "trials.csv", "best_trials.json", "optimization_history.png"} <= arts
    local = c.download_artifacts(parent.info.run_id, "trials.csv", str(d))
    lines = Path(local).read_text().splitlines()
    assert len(lines) == 5 and "params_seed" in lines[0] and "user_attrs_mlflow_run_id" in lines[0]


@pytest.mark.slow
def test_running_the_same_sweep_again_adds_nothing(two_worker_sweep):
    d, uri = two_worker_sweep["dir"], two_worker_sweep["uri"]
    before = {r.info.run_id for r in runs_of(uri)}
    r = cli("sweep", str(two_worker_sweep["path"]), "--workers", "2", "--tracking-uri", uri, "--no-report",
            cwd=d, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "joined study" in r.stdout and "4 complete, 0 pruned, 0 failed" in r.stdout
    assert {r.info.run_id for r in runs_of(uri)} == before
    st = optuna.load_study(study_name="tiny", storage=f"sqlite:///{d / 'optuna.db'}")
    assert len(st.trials) == 4


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(two_worker_sweep):
    detail = dashboard_study(f"sqlite:///{two_worker_sweep['dir'] / 'optuna.db'}", "tiny")
    assert detail["name"] == "tiny" and [t["state"] for t in detail["trials"]] == ["Complete"] * 4


# ---- exactly once under concurrency (the claim, without training) ----------------------------
def _log_objective(trial, w):
    """Stands in for training: records which grid point this process ran, then 'scores' it."""
    p = trial_mod.suggest(trial, w.spec)
    with open(Path(w.storage[len("sqlite:///"):]).with_suffix(".log"), "a") as f:
        f.write(f"{p['seed']}/{p['lr']}\n")
    time.sleep(0.01)
    return float(p["seed"])


def _race_worker(w):
    worker.work(w, _log_objective)


def race(spec, url: str, workers: int) -> None:
    """Start `workers` processes on one study at once and wait for all of them to exit cleanly."""
    ctx = mp.get_context("fork")  # the claim is in the database; fork only saves each worker's imports
    procs = [ctx.Process(target=_race_worker, args=(worker.Worker(spec, url, "", "", "", i, i),)) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * workers


def test_grid_points_run_exactly_once_with_racing_workers(tmp_path):
    path = write_study(tmp_path, "race", {"seed": list(range(8)), "lr": [0.1, 0.2]})
    spec = study_file.load(str(path))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    st = optuna.create_study(study_name="race", storage=storage.open_storage(url))
    for i, point in enumerate(spec.grid):
        st.enqueue_trial(point, user_attrs={"grid_point": i})
    race(spec, url, workers=3)
    ran = Counter((tmp_path / "optuna.log").read_text().split())
    assert len(ran) == 16 and set(ran.values()) == {1}, [k for k, v in ran.items() if v > 1]
    trials = optuna.load_study(study_name="race", storage=url).trials
    real = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len(real) == 16 and all(t.state.name == "COMPLETE" for t in real)
    assert all(not t.params for t in trials if t.user_attrs.get("surplus"))  # surplus trials never ran


# ---- repeats and pruning, in-process (one worker) --------------------------------------------
@pytest.mark.slow
def test_repeats_nest_seed_runs_under_the_trial_run(tmp_path, tracking_uri, capsys):
    path = write_study(tmp_path, "rep", {"aux_weight": [0.3]}, repeats=2, base={"seed": 5, "epochs": 1, "threads": 1})
    assert cli_mod.main(["sweep", str(path), "--no-report"]) == 0, capsys.readouterr().err
    runs = runs_of(tracking_uri)
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    trial_run = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == trial_run.info.run_id]
    assert len(runs) == 4 and trial_run.info.status == "FINISHED"
    assert sorted(r.data.params["seed"] for r in seeds) == ["5", "6"]
    accs = [r.data.metrics["best_test_acc"] for r in seeds]
    m = trial_run.data.metrics
    assert m["best_test_acc_mean"] == pytest.approx(sum(accs) / 2) and m["best_test_acc_n"] == 2
    assert m["best_test_acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    st = optuna.load_study(study_name="rep", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert st.trials[0].value == pytest.approx(sum(accs) / 2)
    assert st.trials[0].user_attrs["mlflow_run_id"] == trial_run.info.run_id


@pytest.mark.slow
def test_pruned_trial_run_ends_killed_and_tagged(tmp_path, tracking_uri, capsys):
    # Three trials that learn (all 1,437 training images: ~0.4 after one epoch), then one whose lr is
    # too small to move off chance (0.1): below the median of the three at epoch 1, pruned there.
    path = write_study(tmp_path, "prune", {"lr": [1.0e-3, 1.0e-12], "seed": [0, 1, 2]}, n_trials=4,
                       pruner="median", base={"train_size": None, "epochs": 1, "threads": 1})
    assert cli_mod.main(["sweep", str(path), "--no-report"]) == 0, capsys.readouterr().err
    st = optuna.load_study(study_name="prune", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state.name for t in st.trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"], [t.intermediate_values for t in st.trials]
    runs = {r.info.run_id: r for r in runs_of(tracking_uri)}
    pruned = runs[st.trials[3].user_attrs["mlflow_run_id"]]
    assert pruned.info.status == "KILLED" and pruned.data.tags["pruned"] == "true"
    assert pruned.data.params["lr"] == "1e-12"
    assert all(runs[t.user_attrs["mlflow_run_id"]].info.status == "FINISHED" for t in st.trials[:3])


def test_sampler_budget_is_n_trials_across_racing_workers(tmp_path):
    path = write_study(tmp_path, "budget", {"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}, "seed": [0, 1, 2]},
                       sampler="random", n_trials=7)
    spec = study_file.load(str(path))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="budget", storage=storage.open_storage(url))
    race(spec, url, workers=3)
    trials = optuna.load_study(study_name="budget", storage=url).trials
    real = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len(real) == 7 and all(t.state.name == "COMPLETE" for t in real)
    assert len((tmp_path / "optuna.log").read_text().split()) == 7
    assert all(1e-4 <= t.params["lr"] <= 1e-2 for t in real)


def test_unreached_target_is_the_worst_value(tmp_path):
    path = write_study(tmp_path, "obj", {"seed": [0]}, objectives=[{"maximize": "best_test_acc"},
                                                                  {"minimize": "time_to_test_acc_80"},
                                                                  {"maximize": "time_to_test_acc_50"},
                                                                  {"minimize": "test_loss"}])
    spec = study_file.load(str(path))
    summary = {"best_test_acc": 0.6, "final_test_acc": 0.55, "total_time_s": 12.0}
    history = [{"test_acc": 0.6, "test_loss": 1.5}, {"test_acc": 0.55, "test_loss": 1.25}]
    assert trial_mod.objective_values(spec, summary, history) == [0.6, float("inf"), float("-inf"), 1.25]


@pytest.mark.slow
def test_run_made_by_mlflow_projects_becomes_the_parent(tmp_path, tracking_uri, monkeypatch, capsys):
    c = MlflowClient(tracking_uri)
    exp_id = c.create_experiment("projects-exp")  # `mlflow run --experiment-name` picks it, not the file
    own = c.create_run(exp_id, run_name="mlflow-run-made-this").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", own)
    path = write_study(tmp_path, "proj", {"aux_weight": [0.0]}, base={"epochs": 1, "threads": 1})
    assert cli_mod.main(["sweep", str(path), "--no-report"]) == 0, capsys.readouterr().err
    runs = c.search_runs([exp_id])
    child = next(r for r in runs if r.info.run_id != own)
    assert len(runs) == 2 and child.data.tags["mlflow.parentRunId"] == own
    assert c.get_run(own).data.tags["sweep_role"] == "parent" and c.get_run(own).data.params["study_name"] == "proj"
    assert c.get_experiment_by_name("googlenet-study") is None  # nothing landed beside the parent
