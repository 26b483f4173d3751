"""Stage 5: MLflow. The only module that imports mlflow; the engine sees `MlflowRun.log_epoch`."""

from __future__ import annotations

import functools
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import torch
import torchvision
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException

from . import artifacts
from .config import RunConfig, UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3's own default, in the working folder
DEFAULT_EXPERIMENT = "googlenet-study"
SYSTEM_METRICS_INTERVAL_S = 5.0

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")


def redact(text: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (anywhere in `text`)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def check_tracking_uri(uri: str) -> None:
    """Refuse, in one line and before any run exists, a tracking URI that cannot work."""
    from urllib.error import HTTPError
    from urllib.parse import urlparse
    from urllib.request import urlopen

    shown = redact(uri)
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in _SCHEMES:
        raise UserError(f"tracking-uri: {shown!r} is not a tracking URI; allowed: sqlite:///FILE, "
                        f"http(s)://HOST:PORT, postgresql://USER@HOST/DB, mysql://..., file:///DIR")
    if scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None
        if folder is None or not folder.is_dir():
            raise UserError(f"tracking-uri: {shown!r}: the folder for the SQLite file does not exist")
    if scheme in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        try:
            with sqlalchemy.create_engine(uri).connect():
                pass
        except Exception as e:  # noqa: BLE001 - driver, DNS, auth: all one line for the user
            first = redact(str(e).strip().splitlines()[0])[:160]
            raise UserError(f"tracking-uri: cannot open {shown} ({first})") from None
    if scheme in ("http", "https"):
        try:
            urlopen(uri.rstrip("/") + "/health", timeout=10)
        except HTTPError:
            pass  # it answers (an auth server may refuse /health): reachable
        except OSError as e:
            reason = getattr(e, "reason", e)
            raise UserError(f"tracking-uri: cannot reach {shown} ({reason}); start the server or fix the URI") from None


def client(uri: str | None = None) -> MlflowClient:
    uri = tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def experiment_id(c: MlflowClient, name: str, create: bool = True) -> str | None:
    """The experiment's id, created if missing (two workers racing both end with the same id)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if not create:
        return None
    try:
        return c.create_experiment(name)
    except MlflowException:  # created meanwhile by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@functools.lru_cache(maxsize=1)
def _git() -> tuple[str, str]:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if sha.returncode == 0:
            return sha.stdout.strip(), str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown", "unknown"


def provenance_tags(cfg: RunConfig, dataset_digest: str, weights) -> dict[str, str]:
    sha, dirty = _git()
    dev = torch.device(cfg.device)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    tags = {
        "mlflow.source.git.commit": sha, "git_commit": sha, "git_dirty": dirty,
        "python_version": platform.python_version(), "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "cuda_version": str(torch.version.cuda), "cudnn_version": str(torch.backends.cudnn.version()),
        "device_name": device_name, "host": socket.gethostname(),
        "dataset_digest": dataset_digest, "config_hash": cfg.digest(), "weights_source": weights.source,
    }
    if weights.url:
        tags["weights_url"] = weights.url
    if weights.enum:
        tags["weights_enum"] = weights.enum
    if weights.sha256:
        tags["weights_sha256"] = weights.sha256
    if weights.file:
        tags["weights_file"] = redact(weights.file)
    return tags


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _pip_freeze_text() -> str:
    with tempfile.TemporaryDirectory() as d:
        return artifacts.pip_freeze(Path(d) / "f.txt").read_text()


class MlflowRun:
    """One training run in MLflow: params and provenance at the start, per-epoch metrics,
    summary metrics and artifacts at the end, and an honest final status."""

    def __init__(self, cfg: RunConfig, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 parent_run_id: str | None = None, run_name: str | None = None,
                 tags: dict[str, str] | None = None, run_id: str | None = None) -> None:
        self.cfg, self.uri = cfg, tracking_uri(uri)
        self.client = client(self.uri)
        attach = run_id or (None if parent_run_id else os.environ.get("MLFLOW_RUN_ID"))
        if attach:  # `mlflow run .` made the run (MLFLOW_RUN_ID), or we resume one
            self.run_id = attach
            self.resumed = run_id is not None
        else:
            exp_id = experiment_id(self.client, experiment)
            t = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags={**t, **(tags or {})}).info.run_id
            self.resumed = False
        if attach and tags:
            self.client.log_batch(self.run_id, tags=_tags(tags))
        if cfg.system_metrics:
            mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
            mlflow.set_system_metrics_samples_before_logging(1)
        # The fluent run is what MLflow's system-metrics monitor attaches to.
        self._active = mlflow.start_run(run_id=self.run_id, log_system_metrics=cfg.system_metrics)
        self._tmp = tempfile.TemporaryDirectory(prefix="googlenet-study-")
        self.tmp = Path(self._tmp.name)

    def log_start(self, params: dict[str, Any], tags: dict[str, str], param_table: list[dict],
                  filters_before: torch.Tensor) -> None:
        if not self.resumed:  # params are immutable in MLflow: a resumed run has them already
            self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, redact(str(v)))
                                                       for k, v in params.items()])
        self.client.log_batch(self.run_id, tags=_tags(tags))
        (self.tmp / "config.yaml").write_text(redact(self.cfg.to_yaml()))
        artifacts.write_csv(self.tmp / "parameters.csv", param_table, ("name", "shape", "count", "trainable"))
        (self.tmp / "environment.txt").write_text(_pip_freeze_text())
        artifacts.filter_grid(self.tmp / "filters_before.png", filters_before, "first conv, before training")
        for f in ("config.yaml", "parameters.csv", "environment.txt"):
            self.client.log_artifact(self.run_id, str(self.tmp / f))
        torch.save(filters_before, self.tmp / "filters_before.pt")
        self.filters_before = filters_before

    def log_epoch(self, epoch: int, metrics: dict[str, float], timestamp_ms: int | None = None) -> None:
        """step = epoch (from 1); timestamp = when the epoch ended. One log_batch: all or nothing."""
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, epoch) for k, v in metrics.items()],
                              synchronous=True)

    def log_missing_epochs(self, history: list[dict], ended_ms: list[int]) -> None:
        """Log the checkpointed epochs this run lacks (killed between checkpoint and log).

        The checkpoint is written before an epoch is logged, so MLflow can be at most one epoch behind
        it and never ahead: each epoch ends up logged exactly once, with its original timestamp."""
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "elapsed_time_s")}
        for e in range(1, len(history) + 1):
            if e not in logged:
                self.log_epoch(e, history[e - 1], ended_ms[e - 1] if e <= len(ended_ms) else None)

    def log_summary(self, summary: dict[str, float], history: list[dict], filters_after: torch.Tensor) -> None:
        now = int(time.time() * 1000)
        step = len(history)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in summary.items()])
        t = self.tmp
        artifacts.epochs_csv(t / "epochs.csv", history)
        artifacts.learning_curves(t / "learning_curves.png", history, f"{self.cfg.model} on {self.cfg.dataset}")
        before = self.filters_before
        artifacts.filter_grid(t / "filters_after.png", filters_after, "first conv, after training")
        artifacts.filter_grid(t / "filters_difference.png", filters_after - before, "after - before", symmetric=True)
        torch.save({"before": before, "after": filters_after}, t / "filters.pt")
        for f in ("epochs.csv", "learning_curves.png"):
            self.client.log_artifact(self.run_id, str(t / f))
        for f in ("filters_before.png", "filters_after.png", "filters_difference.png", "filters.pt"):
            self.client.log_artifact(self.run_id, str(t / f), artifact_path="filters")

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=_tags(tags))

    def end(self, status: str = "FINISHED") -> None:
        """FINISHED | FAILED | KILLED; always stops the system-metrics monitor."""
        try:
            mlflow.end_run(status)
        finally:
            if self.client.get_run(self.run_id).info.status != status:
                self.client.set_terminated(self.run_id, status)
            self._tmp.cleanup()


def _tags(d: dict[str, str]) -> list:
    return [mlflow.entities.RunTag(k, redact(str(v))[:5000]) for k, v in d.items()]


def load_run_config(run_id: str, uri: str | None = None) -> tuple[RunConfig, dict]:
    """The config a run recorded (its config.yaml artifact, else its params)."""
    c = client(uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise UserError(f"run_id: no run {run_id!r} in {redact(tracking_uri(uri))}") from None
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml",
                                                    tracking_uri=tracking_uri(uri))
        data = yaml.safe_load(Path(local).read_text())
    except Exception:
        names = set(RunConfig.__dataclass_fields__)
        data = {k: v for k, v in run.data.params.items() if k in names}
    return RunConfig.from_dict(data, source=f"run {run_id}"), run.data.params


def run_status(uri: str | None, run_id: str) -> str | None:
    """RUNNING | FINISHED | FAILED | KILLED, or None when the store has no such run."""
    try:
        return client(uri).get_run(run_id).info.status
    except MlflowException:
        return None


def metric_history(run_id: str, key: str, uri: str | None = None) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client(uri).get_metric_history(run_id, key)]


# ==== reading runs back: used by googlenet_study.report (owner: reports) ===============
HISTORY_WORKERS = 8  # concurrent metric-history requests; they wait on I/O (SQLite, HTTP)


def search_runs_all(experiment: str, filter_string: str | None = None, uri: str | None = None,
                    page_size: int = 1000) -> list[dict]:
    """Every run of `experiment` matching `filter_string` (all pages), as plain dicts."""
    c = client(uri)
    exp_id = experiment_id(c, experiment, create=False)
    if exp_id is None:
        raise UserError(f"--experiment: no experiment named {experiment!r} in {redact(tracking_uri(uri))}")
    runs, token = [], None
    while True:
        try:
            page = c.search_runs([exp_id], filter_string or "", max_results=page_size, page_token=token)
        except MlflowException as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"--filter: MLflow rejected {filter_string!r}: {msg}") from None
        runs += [_run_dict(r) for r in page]
        token = page.token
        if not token:
            return runs


def _run_dict(r) -> dict:
    return {"run_id": r.info.run_id, "run_name": r.info.run_name or "", "status": r.info.status,
            "start_time": r.info.start_time, "end_time": r.info.end_time,
            "params": dict(r.data.params), "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)}


def metric_histories(keys_by_run: dict[str, list[str]], uri: str | None = None, progress=None,
                     workers: int = HISTORY_WORKERS) -> dict[str, dict[str, list[tuple[int, float, int]]]]:
    """{run_id: {key: [(step, value, timestamp_ms)]}}; `progress(n)` as runs complete.

    A database store (SQLite, PostgreSQL, MySQL) answers one query per key for a chunk of runs (its
    get_metric_history_bulk: one request per run per key costs ~5 ms on SQLite, 60 s for 1,000 runs x 12
    keys); any other store (an MLflow server over HTTP) gets per-run requests from a thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    c = client(uri)
    store = getattr(getattr(c, "_tracking_client", None), "store", None)
    if hasattr(store, "get_metric_history_bulk") and hasattr(store, "ManagedSessionMaker"):
        return _histories_bulk(store, keys_by_run, progress)

    def one(run_id: str) -> tuple[str, dict]:
        out = {k: [(m.step, m.value, m.timestamp) for m in c.get_metric_history(run_id, k)]
               for k in keys_by_run[run_id]}
        return run_id, out

    result = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for run_id, hist in pool.map(one, keys_by_run):
            result[run_id] = hist
            if progress is not None:
                progress(1)
    return result


def _histories_bulk(store, keys_by_run: dict[str, list[str]], progress, chunk: int = 200) -> dict:
    result: dict[str, dict] = {rid: {k: [] for k in keys} for rid, keys in keys_by_run.items()}
    ids = list(keys_by_run)
    for i in range(0, len(ids), chunk):  # chunks keep the SQL IN (...) list within every database's limit
        part = ids[i:i + chunk]
        for key in sorted({k for rid in part for k in keys_by_run[rid]}):
            for m in store.get_metric_history_bulk(part, key, None):  # ordered by run, timestamp, step
                if key in result[m.run_id]:
                    result[m.run_id][key].append((m.step, m.value, m.timestamp))
        if progress is not None:
            progress(len(part))
    return result


def download_artifact(run_id: str, path: str, dst: str | os.PathLike, uri: str | None = None) -> Path | None:
    """One artifact of a run, copied under `dst`; None when the run has no such artifact."""
    c = client(uri)
    try:
        folder = os.path.dirname(path)
        if path not in {f.path for f in c.list_artifacts(run_id, folder or None)}:
            return None
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(c.download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError):
        return None


def log_report(run_id: str, folder: str | os.PathLike, uri: str | None = None) -> None:
    """Attach a written report folder to a run (a sweep's parent) under `report/`."""
    client(uri).log_artifacts(run_id, str(folder), artifact_path="report")


# ==== sweeps: the study's parent run and trial runs (owner: sweeps, googlenet_study/sweep.py) ====
def run_experiment(run_id: str, uri: str | None = None) -> str | None:
    """The experiment name of a run; None when the store has no such run."""
    c = client(uri)
    try:
        return c.get_experiment(c.get_run(run_id).info.experiment_id).name
    except MlflowException:
        return None


def start_parent_run(experiment: str, name: str, tags: dict[str, str], uri: str | None = None) -> str:
    """A sweep's parent run: the run `mlflow run` made (MLFLOW_RUN_ID) if any, else a new one."""
    c = client(uri)
    attach = os.environ.get("MLFLOW_RUN_ID")
    if attach:
        c.log_batch(attach, tags=_tags(tags))
        return attach
    return c.create_run(experiment_id(c, experiment), run_name=name, tags=tags).info.run_id


def create_child_run(experiment: str, parent_run_id: str, name: str, tags: dict[str, str],
                     uri: str | None = None) -> str:
    """A run nested under `parent_run_id` (a trial's run when it trains several seeds)."""
    c = client(uri)
    return c.create_run(experiment_id(c, experiment), run_name=name,
                        tags={"mlflow.parentRunId": parent_run_id, **tags}).info.run_id


def log_run_data(run_id: str, uri: str | None = None, params: dict | None = None, metrics: dict | None = None,
                 tags: dict | None = None, files: list | tuple = (), artifact_path: str | None = None) -> None:
    """Params, metrics (non-finite ones skipped), tags and files, with credentials redacted."""
    c = client(uri)
    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None and abs(float(v)) < float("inf")]
    ps = [mlflow.entities.Param(k, redact(str(v))[:6000]) for k, v in (params or {}).items()]
    for i in range(0, max(len(ms), len(ps), 1), 100):  # MLflow's log_batch limit is 100 params
        c.log_batch(run_id, metrics=ms[i:i + 100], params=ps[i:i + 100], tags=_tags(tags or {}) if i == 0 else [])
    for f in files:
        c.log_artifact(run_id, str(f), artifact_path=artifact_path)


def set_run_tags(run_id: str, tags: dict[str, str], uri: str | None = None) -> None:
    client(uri).log_batch(run_id, tags=_tags(tags))


def end_run(run_id: str, status: str, uri: str | None = None) -> None:
    client(uri).set_terminated(run_id, status)


def find_run_ids(experiment: str, tags: dict[str, str], uri: str | None = None) -> list[str]:
    """Ids of the runs of `experiment` carrying all of `tags` (newest first)."""
    c = client(uri)
    exp_id = experiment_id(c, experiment, create=False)
    if exp_id is None:
        return []
    flt = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    return [r.info.run_id for r in c.search_runs([exp_id], flt, order_by=["attributes.start_time DESC"])]
