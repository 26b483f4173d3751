"""How long `googlenet-study report` takes over many runs: logs N synthetic runs x E epochs into a fresh
SQLite MLflow store (log_batch: four requests per run; --fast-log: the same rows in one SQL transaction), then
times the report over them, cold (no local history cache) and warm (finished runs' histories cached).

    .venv/bin/python benchmarks/report_scale.py --runs 1000 --epochs 30   # goal (issue 17): cold <= 25 s
    .venv/bin/python benchmarks/report_scale.py --runs 10000 --epochs 30 --fast-log  # issue 28: cold <= 40 s
    .venv/bin/python benchmarks/report_scale.py --server   # also through a local `mlflow server` on the same
    #                                                        file, alternated with it; goal: cold <= 1.5x direct
    .venv/bin/python benchmarks/report_scale.py --foreign  # the same curves logged as another tool logs them
    #   (val_acc at Lightning's global steps with MLflow timestamps, a per-run log_dir, per-batch train_loss the
    #   report skips), reported with --accuracy-metric val_acc --clock timestamps (issue 28)

The machine is shared: the load average is printed before and after; compare variants alternately in one
spell (docs/speed.md, section 8)."""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from googlenet_study import report  # noqa: E402
from googlenet_study.config import RunConfig  # noqa: E402
from googlenet_study.report.reading import Reading  # noqa: E402
from googlenet_study.statistics.clock import TIMESTAMPS  # noqa: E402

GRID = list(itertools.product((32, 64, 128), (0.0, 0.3, 1.0), ("frozen", "full")))  # batch, aux, backbone


@dataclass
class SyntheticRun:
    """One FINISHED run as the benchmark logs it: times in ms since the epoch, as MLflow keeps them."""
    name: str
    start_ms: int
    end_ms: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[Metric]


def synthetic_runs(n_runs: int, epochs: int, seed: int = 0) -> Iterator[SyntheticRun]:
    """n_runs plausible-looking FINISHED runs spread over the 18-point factorial grid, in this tool's schema."""
    rng = np.random.default_rng(seed)
    for i in range(n_runs):
        batch, aux, backbone = GRID[i % len(GRID)]
        cfg = RunConfig(model="googlenet", dataset="cifar10", batch_size=batch, aux_weight=aux, backbone=backbone,
                        epochs=epochs, seed=i // len(GRID), system_metrics=False)
        params = {**cfg.to_params(), "total_params": "5610154", "trainable_params": "5610154"}
        sec = (30 + 4000 / batch) * (0.45 if backbone == "frozen" else 1.0) * (1 + 0.15 * (aux > 0))
        top, rate = (0.72 if backbone == "frozen" else 0.9) - 0.02 * (batch == 128), 0.25 + 0.1 * aux
        now, elapsed, best, metrics, reached = int(time.time() * 1000), 0.0, 0.0, [], {}
        for e in range(1, epochs + 1):
            t = sec * rng.uniform(0.95, 1.05)
            elapsed += t
            acc = float(np.clip(top * (1 - math.exp(-rate * e)) + rng.normal(0, 0.01), 0, 1))
            best = max(best, acc)
            for p in (50, 60, 70, 80):
                if acc >= p / 100 and p not in reached:
                    reached[p] = elapsed
            loss = -math.log(max(acc, 0.05))
            vals = {"train_loss": loss, "train_aux_loss": 2 * aux * loss, "train_total_loss": (1 + 2 * aux) * loss,
                    "train_acc": min(1.0, acc + 0.03), "test_loss": loss * 1.1, "test_acc": acc,
                    "epoch_time_s": t, "train_time_s": 0.85 * t, "eval_time_s": 0.15 * t, "data_time_s": 0.01 * t,
                    "elapsed_time_s": elapsed, "throughput_img_s": 50000 / (0.85 * t)}
            metrics += [Metric(k, v, now + e, e) for k, v in vals.items()]
        summary = {"best_test_acc": best, "final_test_acc": acc, "total_time_s": elapsed,
                   **{f"time_to_test_acc_{p}": v for p, v in reached.items()}}
        metrics += [Metric(k, v, now + epochs, epochs) for k, v in summary.items()]
        yield SyntheticRun(f"run-{i}", now, now + epochs + 1, {"config_hash": cfg.digest(), "device_name": "synthetic"},
                           params, metrics)


def foreign_runs(n_runs: int, epochs: int, seed: int = 0) -> Iterator[SyntheticRun]:
    """The same kind of curves as synthetic_runs, as Lightning's MLFlowLogger logs them: no config_hash, no
    elapsed_time_s; val_acc (a fraction) per validation at the global step, its timestamp the wall clock
    (start_time + the seconds so far); train_loss every 10 steps (keys the report need not fetch)."""
    rng = np.random.default_rng(seed)
    t0, steps = int(time.time() * 1000) - 10**9, 100  # ms; steps per epoch
    for i in range(n_runs):
        batch, aux, backbone = GRID[i % len(GRID)]
        params = {"batch_size": batch, "aux_weight": aux, "backbone": backbone, "seed": i // len(GRID),
                  "log_dir": f"lightning_logs/version_{i}"}
        sec = (30 + 4000 / batch) * (0.45 if backbone == "frozen" else 1.0) * (1 + 0.15 * (aux > 0))
        top, rate = (0.72 if backbone == "frozen" else 0.9) - 0.02 * (batch == 128), 0.25 + 0.1 * aux
        elapsed, metrics = 0.0, []
        for e in range(1, epochs + 1):
            elapsed += sec * rng.uniform(0.95, 1.05)
            acc = float(np.clip(top * (1 - math.exp(-rate * e)) + rng.normal(0, 0.01), 0, 1))
            ts = t0 + int(elapsed * 1000)
            metrics += [Metric("val_acc", acc, ts, e * steps), Metric("epoch", float(e - 1), ts, e * steps)]
            metrics += [Metric("train_loss", -math.log(max(acc, 0.05)), ts - 1000, (e - 1) * steps + k)
                        for k in range(0, steps, 10)]
        yield SyntheticRun(f"run-{i}", t0, t0 + int(elapsed * 1000) + 1000, {},
                           {k: str(v) for k, v in params.items()}, metrics)


def log_with_client(uri: str, experiment: str, runs: Iterable[SyntheticRun]) -> None:
    """Through MLflow's client, as a user logs: four requests per run (~0.3 s a run here: 10,000 take ~50 min)."""
    c = MlflowClient(uri)
    exp = c.create_experiment(experiment)
    for r in runs:
        run = c.create_run(exp, run_name=r.name, start_time=r.start_ms, tags=r.tags)
        c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in r.params.items()])
        for j in range(0, len(r.metrics), 1000):  # log_batch takes at most 1000 metrics
            c.log_batch(run.info.run_id, metrics=r.metrics[j:j + 1000])
        c.set_terminated(run.info.run_id, "FINISHED", end_time=r.end_ms)


def log_with_sql(uri: str, experiment: str, runs: Iterable[SyntheticRun]) -> None:
    """The rows log_with_client makes, written in one SQLite transaction (10,000 runs in about a minute).
    MLflow's client makes the store and the experiment; tests/test_benchmarks.py checks that every table
    holds the same rows either way. Latest metrics follow MLflow's rule: the largest (step, timestamp, value)."""
    c = MlflowClient(uri)
    exp = c.get_experiment(c.create_experiment(experiment))
    con = sqlite3.connect(uri.removeprefix("sqlite:///"))
    with con:
        for r in runs:
            rid = uuid.uuid4().hex
            con.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                        "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                        "experiment_id, deleted_time) VALUES (?, ?, 'UNKNOWN', '', '', 'unknown', 'FINISHED', ?, "
                        "?, '', 'active', ?, ?, NULL)",
                        (rid, r.name, r.start_ms, r.end_ms, f"{exp.artifact_location}/{rid}/artifacts",
                         int(exp.experiment_id)))
            con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                            [(k, v, rid) for k, v in {**r.tags, "mlflow.runName": r.name}.items()])
            con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                            [(k, v, rid) for k, v in r.params.items()])
            con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                            "VALUES (?, ?, ?, ?, ?, 0)", [(m.key, m.value, m.timestamp, rid, m.step) for m in r.metrics])
            latest: dict[str, Metric] = {}
            for m in r.metrics:
                old = latest.get(m.key)
                if old is None or (m.step, m.timestamp, m.value) > (old.step, old.timestamp, old.value):
                    latest[m.key] = m
            con.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                            "VALUES (?, ?, ?, ?, 0, ?)", [(m.key, m.value, m.timestamp, m.step, rid)
                                                          for m in latest.values()])
    con.close()


def start_server(work: Path, uri: str) -> tuple[subprocess.Popen, str]:
    """`mlflow server` over the store at `uri`, on 127.0.0.1 and a free port, with its default workers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(work / "server.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                          "--host", "127.0.0.1", "--port", str(port)], cwd=work, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)  # its group: its workers end with it
    deadline, http = time.monotonic() + 300, f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(f"{http}/health", timeout=2)
            break
        except (urllib.error.URLError, OSError):
            if p.poll() is not None or time.monotonic() > deadline:
                os.killpg(p.pid, signal.SIGKILL)
                sys.exit(f"mlflow server did not answer on port {port}: {(work / 'server.log').read_text()[-1500:]}")
            time.sleep(0.5)
    # A team's server is long running: each worker opens its store at its first request (~7 CPU s here),
    # which is no part of a report. 32 requests at once reach every one of its (default 4) workers.
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda _: urllib.request.urlopen(
            f"{http}/api/2.0/mlflow/experiments/get-by-name?experiment_name=scale", timeout=300).read(), range(32)))
    return p, http


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workdir", default=None, help="default: a fresh temp dir")
    ap.add_argument("--reuse", action="store_true", help="time the report over the store already in --workdir")
    ap.add_argument("--foreign", action="store_true",
                    help="runs logged as another tool logs them (Lightning's MLFlowLogger), reported with "
                         "--accuracy-metric val_acc --clock timestamps")
    ap.add_argument("--server", action="store_true",
                    help="also through a local `mlflow server` on the same store (127.0.0.1, a free port): "
                         "direct and server alternate, cold then warm, and the ratio is printed")
    ap.add_argument("--fast-log", action="store_true",
                    help="write the runs' rows in one SQLite transaction instead of through MLflow's client (the "
                         "same rows, tests/test_benchmarks.py checks; 10,000 runs in about a minute, not an hour)")
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="report-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["GOOGLENET_STUDY_CACHE"] = str(work / "cache")
    shutil.rmtree(work / "cache", ignore_errors=True)  # the first report is cold
    if not a.reuse:
        t0 = time.perf_counter()
        runs = (foreign_runs if a.foreign else synthetic_runs)(a.runs, a.epochs)
        (log_with_sql if a.fast_log else log_with_client)(uri, "scale", runs)
        print(f"logged {a.runs} runs x {a.epochs} epochs into {uri} in {time.perf_counter() - t0:.1f} s", flush=True)
    server, sources = None, [("", uri)]
    if a.server:
        server, http = start_server(work, uri)
        sources.append(("server, ", http))  # its history cache is its own (keyed by URI): cold too
    rows, load0 = [], os.getloadavg()[0]
    how = {}
    if a.foreign:  # the flags a user of another tool gives (docs/reports.md, "Your own runs")
        how = {"reading": Reading("val_acc", TIMESTAMPS)}
    try:
        for label in ("cold (no cache)", "warm (histories cached)"):
            for where, u in sources:  # alternated: both share whatever else loads the machine
                _, t = report.build(report.Request("scale", uri=u, out=work / "report", **how))
                rows.append((f"{where}{label}", t))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    keys = ["fetch_s", "stats_s", "artifacts_s", "figures_s", "render_s", "pdf_s", "total_s"]  # pdf_s: of render_s
    n = rows[0][1]["n_runs"]  # with --reuse, the store's runs, whatever --runs says
    print(f"\n{f'report over {n} runs':<40}"
          + "".join(f"{k:>12}" for k in keys))
    for label, t in rows:
        print(f"{label:<40}" + "".join(f"{t[k]:>12.1f}" for k in keys))
    if a.server:
        t = dict(rows)
        for label in ("cold (no cache)", "warm (histories cached)"):
            d, s = t[label], t[f"server, {label}"]
            print(f"server / direct, {label}: total {s['total_s'] / d['total_s']:.2f}x, "
                  f"fetch {s['fetch_s'] / d['fetch_s']:.2f}x")
    print(f"\n{os.cpu_count()} cores, load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after; "
          f"report folder: {work / 'report'}")


if __name__ == "__main__":
    main()
