"""Fake runs: a finished run logged into a real store as train() records one, the worked example of
docs/reports.md, and the per-run frame the report's statistics read (for tests of the math alone)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from googlenet_study.config import RunConfig

H100, T4 = "NVIDIA H100 80GB HBM3", "Tesla T4"
TARGETS = (50.0, 80.0)

# The worked example (docs/reports.md): (batch_size, device_name, epoch seconds, test_acc per epoch, log_run's
# keywords).
EXAMPLE = [
    (32, H100, 10.0, [0.40, 0.60, 0.85, 0.90], {}),   # 50 % at 20 s, 80 % at 30 s
    (32, H100, 10.0, [0.55, 0.70, 0.78, 0.82], {}),   # 50 % at 10 s, 80 % at 40 s
    (32, H100, 10.0, [0.45, 0.52, 0.70, 0.75], {}),   # 50 % at 20 s, 80 % never (censored at 40 s)
    (64, H100, 6.0, [0.30, 0.50, 0.65, 0.81], {}),    # 50 % at 12 s, 80 % at 24 s
    (64, H100, 6.0, [0.35, 0.45, 0.55, 0.70], {}),    # 50 % at 18 s, 80 % never (24 s)
    (64, H100, 6.0, [0.52, 0.60, 0.70, 0.79], {}),    # 50 % at 6 s, 80 % never (24 s)
    (32, T4, 30.0, [0.40, 0.60, 0.85, 0.90], {}),     # 50 % at 60 s, 80 % at 90 s
    (32, T4, 30.0, [0.55, 0.70, 0.78, 0.82], {}),     # 50 % at 30 s, 80 % at 120 s
    (32, T4, 20.0, [0.60, 0.70, 0.80, 0.88], {"hardware_changed": [H100, T4]}),  # times left out
    (128, H100, 5.0, [0.60, 0.85, 0.90, 0.90], {}),   # one run: 50 % at 5 s, 80 % at 10 s; not ranked
    # A loser: batch 16 never reaches 80 %, and 50 % once, on the one run that did not log train_time_s.
    (16, H100, 8.0, [0.20, 0.30, 0.35, 0.40], {}),    # never (censored at 32 s)
    (16, H100, 8.0, [0.25, 0.35, 0.40, 0.45], {}),    # never (32 s)
    (16, H100, 8.0, [0.30, 0.55, 0.60, 0.62], {"drop": ("train_time_s",)}),  # 50 % at 16 s; no training clock
]

def log_run(c: MlflowClient, exp: str, name: str, accs: list[float], epoch_s: float = 10.0,
            device_name: str | None = None, *, seed: int = 0, status: str = "FINISHED", host: str = "node1",
            device: str = "cuda", hardware_changed: list[str] | None = None, tags: dict | None = None,
            params: dict | None = None, per_epoch: dict | None = None, summary: dict | None = None,
            drop: tuple = (), start_time: int | None = None, filters: bool = False, **config) -> str:
    """One run as train() records it, ending `status`: every config field (`config` over a tiny GoogLeNet) as a
    param, its config_hash tag, per-epoch metrics with step = epoch (`epoch_s` s an epoch, 0.75 of it training),
    summary metrics. `device_name` (the GPU train() saw): with it, the host and hardware_changed tags and the
    device param. `params` {name: string} replace params with values no config would accept; `tags` are added;
    per_epoch {metric: values} and summary {metric: value} replace what it would log; `drop` names metrics it
    does not log at all (an older run, a lost clock). `filters`: a filters.pt artifact, as the filter figure
    reads it (written under the working folder)."""
    cfg = RunConfig(**{"model": "googlenet", "dataset": "digits", "weights": "none", "epochs": len(accs),
                       "seed": seed, "system_metrics": False, **config})
    all_tags = {"config_hash": cfg.digest(), **(tags or {})}
    all_params = {**cfg.to_params(), **(params or {})}
    if device_name is not None:
        all_tags.update(device_name=device_name, host=host)
        all_params["device"] = device
    if hardware_changed:
        all_tags["hardware_changed"] = json.dumps(hardware_changed)
    run_id = c.create_run(exp, run_name=name, start_time=start_time).info.run_id
    c.log_batch(run_id, params=[Param(k, v) for k, v in all_params.items()],
                tags=[RunTag(k, v) for k, v in all_tags.items()])
    now, metrics = int(time.time() * 1000), []
    for e, acc in enumerate(accs, start=1):
        err = 1 - acc if math.isfinite(acc) else math.nan  # an impossible accuracy (inf) has no loss to go with it
        vals = {"train_loss": err, "train_aux_loss": 0.5 * err, "train_total_loss": 1.5 * err,
                "train_acc": acc, "test_loss": 0.1 + err, "test_acc": acc, "epoch_time_s": epoch_s,
                "train_time_s": 0.75 * epoch_s, "eval_time_s": 0.25 * epoch_s, "data_time_s": 0.0,
                "elapsed_time_s": e * epoch_s, "throughput_img_s": 100.0 / epoch_s}
        vals.update({k: v[e - 1] for k, v in (per_epoch or {}).items()})
        metrics += [Metric(k, v, now + e, e) for k, v in vals.items() if k not in drop]
    s = {"best_test_acc": max(accs), "final_test_acc": accs[-1], "total_time_s": len(accs) * epoch_s,
         **(summary or {})}
    c.log_batch(run_id, metrics=metrics + [Metric(k, v, now, len(accs)) for k, v in s.items() if k not in drop])
    if filters:
        _log_filters(c, run_id, seed)
    c.set_terminated(run_id, status)
    return run_id


def _log_filters(c: MlflowClient, run_id: str, seed: int) -> None:
    """A filters.pt artifact: 64 first-layer 7x7 filters before training and a little changed after."""
    g = torch.Generator().manual_seed(seed)
    before = torch.randn(64, 3, 7, 7, generator=g)
    d = Path(f"filters-{run_id}")
    d.mkdir()
    torch.save({"before": before, "after": before + 0.1 * torch.randn(64, 3, 7, 7, generator=g)}, d / "filters.pt")
    c.log_artifact(run_id, str(d / "filters.pt"), artifact_path="filters")


def runs_frame(spec: dict) -> pd.DataFrame:
    """stats.per_run's columns from {configuration: [(time to 50 %, time to 80 %, end s, best acc)]}, a time
    None: never reached; a 5th item: why the run's times are left out."""
    rows = []
    for cfg, runs in spec.items():
        for t50, t80, end, acc, *why in runs:
            why = why[0] if why else ""
            rows.append({"configuration": cfg, "hardware": "H100", "model": "googlenet", "dataset": "digits",
                         "time_excluded": why, "best_test_acc": acc, "final_test_acc": acc,
                         "epoch_time_s": math.nan if why else end / 4, "total_time_s": math.nan if why else end,
                         "clock_end_s": math.nan if why else end,
                         "time_to_test_acc_50": math.nan if why or t50 is None else t50, "reached_50": t50 is not None,
                         "time_to_test_acc_80": math.nan if why or t80 is None else t80, "reached_80": t80 is not None})
    d = pd.DataFrame(rows)
    d["configuration"] = pd.Categorical(d["configuration"], categories=list(spec), ordered=True)
    return d
