"""The run lifecycle owned by train(): params and provenance at the start, per-epoch metrics,
summary metrics and artifacts at the end, an honest final status; and reading one run's config back."""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from .. import schema
from ..config import RunConfig, UserError
from .store import DEFAULT_EXPERIMENT, as_tags, client, experiment_id, redact, tracking_uri

if TYPE_CHECKING:
    import torch

# torch, torchvision and the artefact drawing (artifacts: matplotlib) load in the functions a training run
# calls, where they are loaded already: `report` and a sweep's parent read runs through this package and
# need none of them (torch and torchvision are 3.4 s of a report's 6.3 s of imports on 2 cores).
SYSTEM_METRICS_INTERVAL_S = 5.0


@functools.lru_cache(maxsize=1)
def _git() -> tuple[str, str]:
    root = Path(__file__).resolve().parents[2]
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
    """Where a result came from: code, libraries, hardware, data and weights (schema.PROVENANCE_TAGS)."""
    import torch

    from ..vision import torchvision

    sha, dirty = _git()
    dev = torch.device(cfg.device)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    tags = {
        "mlflow.source.git.commit": sha, schema.GIT_COMMIT_TAG: sha, schema.GIT_DIRTY_TAG: dirty,
        schema.PYTHON_VERSION_TAG: platform.python_version(), schema.TORCH_VERSION_TAG: torch.__version__,
        schema.TORCHVISION_VERSION_TAG: torchvision.__version__, schema.CUDA_VERSION_TAG: str(torch.version.cuda),
        schema.CUDNN_VERSION_TAG: str(torch.backends.cudnn.version()),
        schema.DEVICE_NAME_TAG: device_name, schema.HOST_TAG: socket.gethostname(),
        schema.DATASET_DIGEST_TAG: dataset_digest, schema.CONFIG_HASH_TAG: cfg.digest(),
        schema.WEIGHTS_SOURCE_TAG: weights.source,
    }
    optional = {schema.WEIGHTS_URL_TAG: weights.url, schema.WEIGHTS_ENUM_TAG: weights.enum,
                schema.WEIGHTS_SHA256_TAG: weights.sha256,
                schema.WEIGHTS_FILE_TAG: redact(weights.file) if weights.file else None}
    return {**tags, **{k: v for k, v in optional.items() if v}}


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
    from .. import artifacts

    with tempfile.TemporaryDirectory() as d:
        return artifacts.pip_freeze(Path(d) / "f.txt").read_text()


def params_to_log(resolved: dict[str, str], existing: dict[str, str]) -> dict[str, str]:
    """What a run that already has `existing` params still needs: the params it lacks, and
    resolved.<name> for each one whose recorded value is not what it resolved to.

    `mlflow run` logs every entry-point parameter as given ("auto", "none") before train() starts,
    and MLflow params are immutable: the device and thread count actually used go under resolved.*."""
    out = {k: v for k, v in resolved.items() if k not in existing}
    out.update({schema.RESOLVED_PREFIX + k: v for k, v in resolved.items() if k in existing and existing[k] != v})
    return out


def hardware_changed(before: dict[str, str], device_name: str | None) -> dict[str, str]:
    """{hardware_changed: JSON list of device_names} for a run resumed on `device_name`, when that is not
    the hardware it last ran on (`before`: the run's tags so far); else {} (an existing tag stays)."""
    tag, name = schema.HARDWARE_CHANGED_TAG, schema.DEVICE_NAME_TAG
    seen = json.loads(before[tag]) if tag in before else [before[name]] if name in before else []
    if device_name is None or not seen or seen[-1] == device_name:
        return {}
    return {tag: json.dumps(seen + [device_name])}


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
            self.client.log_batch(self.run_id, tags=as_tags(tags))
        if cfg.system_metrics:
            mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
            mlflow.set_system_metrics_samples_before_logging(1)
        # The fluent run is what MLflow's system-metrics monitor attaches to.
        self._active = mlflow.start_run(run_id=self.run_id, log_system_metrics=cfg.system_metrics)
        self._logged_ahead: set[int] = set()  # epochs logged before a resume that its checkpoint lacks
        self._tmp = tempfile.TemporaryDirectory(prefix="googlenet-study-")
        self.tmp = Path(self._tmp.name)

    def log_start(self, params: dict[str, Any], tags: dict[str, str], param_table: list[dict],
                  filters_before: torch.Tensor) -> None:
        import torch

        from .. import artifacts

        if not self.resumed:  # params are immutable in MLflow: a resumed run has them already
            self._log_params({k: redact(str(v)) for k, v in params.items()})
            # The version of the record its metrics follow; a resume keeps the first (its earlier epochs are that
            # version's), so a run logged before the tag existed stays version 1.
            tags = {**tags, schema.RECORD_VERSION_TAG: str(schema.RECORD_VERSION)}
        else:  # device_name is about to be overwritten: keep what the run ran on so far
            tags = {**tags, **hardware_changed(self.client.get_run(self.run_id).data.tags,
                                               tags.get(schema.DEVICE_NAME_TAG))}
        self.client.log_batch(self.run_id, tags=as_tags(tags))
        (self.tmp / "config.yaml").write_text(redact(self.cfg.to_yaml()))
        artifacts.write_csv(self.tmp / "parameters.csv", param_table, ("name", "shape", "count", "trainable"))
        (self.tmp / "environment.txt").write_text(_pip_freeze_text())
        artifacts.filter_grid(self.tmp / "filters_before.png", filters_before, "first conv, before training")
        for f in ("config.yaml", "parameters.csv", "environment.txt"):
            self.client.log_artifact(self.run_id, str(self.tmp / f))
        torch.save(filters_before, self.tmp / "filters_before.pt")
        self.filters_before = filters_before

    def _log_params(self, params: dict[str, str]) -> None:
        existing = self.client.get_run(self.run_id).data.params  # non-empty under `mlflow run`
        todo = [Param(k, v) for k, v in params_to_log(params, existing).items()]
        batch = schema.MLFLOW_MAX_PARAMS_PER_BATCH
        for i in range(0, len(todo), batch):
            self.client.log_batch(self.run_id, params=todo[i:i + batch])

    def log_epoch(self, epoch: int, metrics: dict[str, float], timestamp_ms: int | None = None) -> None:
        """step = epoch (from 1); timestamp = when the epoch ended. One log_batch: all or nothing."""
        if epoch in self._logged_ahead:
            return
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, epoch) for k, v in metrics.items()],
                              synchronous=True)

    def log_missing_epochs(self, history: list[dict], ended_ms: list[int]) -> None:
        """Log the checkpointed epochs this run lacks (killed between checkpoint and log).

        The checkpoint is written before an epoch is logged, so MLflow can be at most one epoch behind
        it and never ahead: each epoch ends up logged exactly once, with its original timestamp."""
        logged = {m.step for m in self.client.get_metric_history(self.run_id, schema.CLOCK)}
        # Logged beyond the checkpoint: its write hit a full disk after the epoch ended (engine.NoSpace). The
        # resume trains that epoch again; the values logged when it first ended stand (logged once, never twice).
        self._logged_ahead = {s for s in logged if s > len(history)}
        for e in range(1, len(history) + 1):
            if e not in logged:
                self.log_epoch(e, history[e - 1], ended_ms[e - 1] if e <= len(ended_ms) else None)

    def log_summary(self, summary: dict[str, float], history: list[dict], filters_after: torch.Tensor) -> None:
        import torch

        from .. import artifacts

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
        self.client.log_batch(self.run_id, tags=as_tags(tags))

    def clear_tags(self, keys: tuple[str, ...]) -> None:
        """Delete those of `keys` the run has (a resumed run's reasons for its earlier stop)."""
        present = self.client.get_run(self.run_id).data.tags
        for k in keys:
            if k in present:
                self.client.delete_tag(self.run_id, k)

    def end(self, status: str = "FINISHED") -> None:
        """FINISHED | FAILED | KILLED; always stops the system-metrics monitor."""
        try:
            mlflow.end_run(status)
        finally:
            if self.client.get_run(self.run_id).info.status != status:
                self.client.set_terminated(self.run_id, status)
            self._tmp.cleanup()


    def end_unrecorded(self) -> None:
        """This process lets go of the run without writing to the store (its disk is full): the run stays
        RUNNING there, and a resume continues it once this process is gone."""
        try:
            mlflow.end_run("FAILED")  # pops the fluent run first; the status write itself fails
        except Exception:  # noqa: BLE001 - the store is full: nothing can be written, nothing more to say
            pass
        finally:
            self._tmp.cleanup()


def load_run_config(run_id: str, uri: str | None = None) -> tuple[RunConfig, dict]:
    """The config a run recorded (its config.yaml artifact, else its params, resolved.* first); a sweep's
    parent run, or a run that recorded no config, is a one-line error (never the defaults)."""
    c = client(uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise UserError(f"run_id: no run {run_id!r} in {redact(tracking_uri(uri))}") from None
    if run.data.tags.get(schema.ROLE_TAG) == schema.PARENT_ROLE:
        exp = run.info.experiment_id
        trials = c.search_runs([exp], f"tags.mlflow.parentRunId = '{run_id}'", max_results=20,
                               order_by=["attributes.start_time ASC"])
        listed = ", ".join(t.info.run_id for t in trials) or "it has none yet"
        raise UserError(f"run_id: {run_id} is a sweep's parent run; reproduce one of its trials: {listed}")
    names = set(RunConfig.__dataclass_fields__)
    try:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar on stderr is noise
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml",
                                                    tracking_uri=tracking_uri(uri))
        data = yaml.safe_load(Path(local).read_text())
    except Exception:  # noqa: BLE001 - no artifact (or no artifact store): the params say the same
        data = {k: v for k, v in schema.resolved_params(run.data.params).items() if k in names}
        if not data:
            raise UserError(f"run_id: run {run_id} recorded no config (no config.yaml artifact, none of the "
                            f"config's params); it was not made by googlenet-study train") from None
    if schema.CONFIG_HASH_TAG not in run.data.tags:  # not made by googlenet-study train: its params are not a config
        raise UserError(f"run_id: run {run_id} has no {schema.CONFIG_HASH_TAG} tag; it was not made by "
                        f"googlenet-study train, so there is no config of ours to reproduce")
    return RunConfig.from_dict(data, source=f"run {run_id}"), run.data.params


def run_status(uri: str | None, run_id: str) -> str | None:
    """RUNNING | FINISHED | FAILED | KILLED, or None when the store has no such run."""
    try:
        return client(uri).get_run(run_id).info.status
    except MlflowException:
        return None


def metric_history(run_id: str, key: str, uri: str | None = None) -> list[tuple[int, float]]:
    """[(step, value)] of one metric of one run."""
    return [(m.step, m.value) for m in client(uri).get_metric_history(run_id, key)]
