"""One run through the real command line, and everything MLflow must hold for it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import yaml
from mlflow import MlflowClient

from googlenet_study import schema
from googlenet_study.cli import main
from googlenet_study.train import train

from helpers import cli
PARAMS = set("model weights dataset image_size backbone aux_weight batch_size epochs optimizer lr seed train_size "
             "test_size deterministic threads amp device target_accs".split()) | {"total_params", "trainable_params"}


def only_run(uri: str):
    c = MlflowClient(uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert len(runs) == 1
    return c, runs[0]


@pytest.mark.slow
def test_demo_run_learns_digits_and_records_everything(tracking_uri, tmp_path):
    p = cli("train", "--model", "googlenet", "--dataset", "digits", "--weights", "none", "--image-size", "32",
            "--epochs", "3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "FINISHED" in p.stdout and len(p.stdout.strip().splitlines()) == 1  # one-line summary, no bars off a TTY
    c, run = only_run(tracking_uri)
    rid, m, params, tags = run.info.run_id, run.data.metrics, run.data.params, run.data.tags
    assert run.info.status == "FINISHED"
    assert c.get_experiment(run.info.experiment_id).name == "googlenet-study"
    assert PARAMS <= set(params) and params["image_size"] == "32" and params["device"] == "cpu"
    assert int(params["total_params"]) == int(params["trainable_params"]) > 5_000_000
    assert m["best_test_acc"] >= 0.9

    hist = {k: c.get_metric_history(rid, k) for k in schema.EPOCH_METRICS}
    for k, h in hist.items():
        assert [x.step for x in h] == [1, 2, 3], k
    acc = [x.value for x in hist["test_acc"]]
    assert all(0 <= a <= 1 for a in acc) and m["best_test_acc"] == max(acc) and m["final_test_acc"] == acc[-1]
    ep = [x.value for x in hist["epoch_time_s"]]
    el = [x.value for x in hist["elapsed_time_s"]]
    assert el == pytest.approx([sum(ep[:i + 1]) for i in range(3)]) and m["total_time_s"] == pytest.approx(el[-1])
    tr, ev = [x.value for x in hist["train_time_s"]], [x.value for x in hist["eval_time_s"]]
    assert ep == pytest.approx([a + b for a, b in zip(tr, ev)])
    assert hist["epoch_time_s"][0].timestamp <= hist["epoch_time_s"][1].timestamp  # when the epoch ended
    for p_ in (50, 60, 70, 80):  # first epoch at or past the target
        first = next(i for i, a in enumerate(acc) if a >= p_ / 100)
        assert m[f"time_to_test_acc_{p_}"] == pytest.approx(el[first])
    assert any(k.startswith("system/cpu_utilization") for k in m)  # MLflow's system metrics

    for t in ("git_commit", "git_dirty", "python_version", "torch_version", "torchvision_version", "cuda_version",
              "cudnn_version", "device_name", "host", "dataset_digest", "config_hash"):
        assert tags.get(t), t
    arts = {a.path for a in c.list_artifacts(rid)} | {a.path for a in c.list_artifacts(rid, "filters")}
    assert {"config.yaml", "parameters.csv", "epochs.csv", "learning_curves.png", "environment.txt",
            "filters/filters_before.png", "filters/filters_after.png", "filters/filters_difference.png"} <= arts
    local = tmp_path / "dl"
    cfg = yaml.safe_load(open(c.download_artifacts(rid, "config.yaml", str(local))))
    assert cfg["model"] == "googlenet" and cfg["image_size"] == 32 and cfg["threads"] >= 1
    table = open(c.download_artifacts(rid, "parameters.csv", str(local))).read().splitlines()
    assert table[0] == "name,shape,count,trainable" and table[1].startswith("conv1.conv.weight,64x3x7x7,9408,")
    assert "torch==" in open(c.download_artifacts(rid, "environment.txt", str(local))).read()
    filters = torch.load(c.download_artifacts(rid, "filters/filters.pt", str(local)))
    assert filters["before"].shape == (64, 3, 7, 7) and not torch.equal(filters["before"], filters["after"])


@pytest.mark.slow  # reads conftest's shared_run (trained once per session)
def test_no_system_metrics_when_turned_off(shared_run):
    r = shared_run["result"]
    run = MlflowClient(shared_run["uri"]).get_run(r.run_id)
    assert not shared_run["cfg"].system_metrics
    assert run.info.status == "FINISHED" and not any(k.startswith("system/") for k in run.data.metrics)
    assert r.summary["total_time_s"] == r.history[-1]["elapsed_time_s"]


@pytest.mark.slow
def test_unreached_target_is_not_logged(shared_run):
    r = shared_run["result"]
    metrics = MlflowClient(shared_run["uri"]).get_run(r.run_id).data.metrics
    assert 99 in shared_run["cfg"].target_accs and r.summary["best_test_acc"] < 0.99
    assert "time_to_test_acc_99" not in metrics and "time_to_test_acc_10" in metrics  # a reached one is logged


@pytest.mark.slow
def test_deterministic_reruns_are_bit_identical(tiny_cfg, tracking_uri):
    cfg = dataclasses.replace(tiny_cfg, deterministic=True, threads=2, aux_weight=0.3)
    a, b = train(cfg), train(cfg)
    keys = ("train_loss", "train_aux_loss", "train_total_loss", "train_acc", "test_loss", "test_acc")
    assert [[h[k] for k in keys] for h in a.history] == [[h[k] for k in keys] for h in b.history]
    c = train(dataclasses.replace(cfg, seed=1))
    assert c.history[0]["train_loss"] != a.history[0]["train_loss"]  # the seed matters


@pytest.mark.slow
def test_reproduce_reruns_from_mlflow_alone_and_prints_differences(tiny_cfg, tracking_uri, capsys):
    first = train(dataclasses.replace(tiny_cfg, deterministic=True, epochs=1, train_size=80, test_size=40))
    assert main(["reproduce", first.run_id]) == 0
    out = capsys.readouterr().out
    assert "bit-identical" in out and "d_test_acc" in out
    c = MlflowClient(tracking_uri)
    runs = c.search_runs([c.get_run(first.run_id).info.experiment_id], f"tags.reproduces_run_id = '{first.run_id}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["seed"] == "0" and runs[0].data.params["train_size"] == "80"


@pytest.mark.slow
def test_frozen_run_trains_only_heads_and_records_counts(shared_run):
    assert shared_run["cfg"].backbone == "frozen"
    p = MlflowClient(shared_run["uri"]).get_run(shared_run["result"].run_id).data.params
    assert 0 < int(p["trainable_params"]) < int(p["total_params"])


@pytest.mark.slow
def test_short_inception_v3_run_at_299_px(tracking_uri):
    from googlenet_study.config import RunConfig
    cfg = RunConfig(model="inception_v3", dataset="digits", weights="none", image_size=299, batch_size=4,
                    train_size=10, test_size=10, epochs=1, threads=2, system_metrics=False)
    r = train(cfg)
    assert r.status == "FINISHED" and len(r.history) == 1
    assert math.isfinite(r.history[0]["train_aux_loss"]) and r.history[0]["train_aux_loss"] > 0
    p = MlflowClient(tracking_uri).get_run(r.run_id).data.params
    assert p["total_params"] == str(24_371_444)  # torchvision's inception_v3(num_classes=10)
