"""A sweep's runs (owner: googlenet_study/sweep.py): the study's parent run and a trial's own run."""

from __future__ import annotations

import math
import os
import time

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from .. import schema
from .store import as_tags, client, experiment_id, redact



def run_experiment(run_id: str, uri: str | None = None) -> str | None:
    """The experiment name of a run; None when the store has no such run."""
    c = client(uri)
    try:
        return c.get_experiment(c.get_run(run_id).info.experiment_id).name
    except MlflowException:
        return None


def run_deleted(run_id: str, uri: str | None = None) -> bool:
    """Is the run in MLflow's trash (deleted, restorable until `mlflow gc`)? False when it is absent."""
    try:
        return client(uri).get_run(run_id).info.lifecycle_stage == "deleted"
    except MlflowException:
        return False


def start_parent_run(experiment: str, name: str, tags: dict[str, str], uri: str | None = None) -> str:
    """A sweep's parent run: the run `mlflow run` made (MLFLOW_RUN_ID) if any, else a new one."""
    c = client(uri)
    attach = os.environ.get("MLFLOW_RUN_ID")
    if attach:
        c.log_batch(attach, tags=as_tags(tags))
        return attach
    return c.create_run(experiment_id(c, experiment), run_name=name,
                        tags={t.key: t.value for t in as_tags(tags)}).info.run_id  # credentials redacted


def create_child_run(experiment: str, parent_run_id: str, name: str, tags: dict[str, str],
                     uri: str | None = None) -> str:
    """A run nested under `parent_run_id` (a trial's run when it trains several seeds)."""
    c = client(uri)
    return c.create_run(experiment_id(c, experiment), run_name=name,
                        tags={"mlflow.parentRunId": parent_run_id, **tags}).info.run_id


def log_run_data(run_id: str, uri: str | None = None, params: dict | None = None, metrics: dict | None = None,
                 tags: dict | None = None, files: list | tuple = (), artifact_path: str | None = None,
                 step: int = 0) -> None:
    """Params, metrics (non-finite ones skipped; at `step`), tags and files, with credentials redacted."""
    c = client(uri)
    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None and math.isfinite(float(v))]
    ps = [Param(k, redact(str(v))[:schema.MLFLOW_MAX_PARAM_CHARS]) for k, v in (params or {}).items()]
    batch = schema.MLFLOW_MAX_PARAMS_PER_BATCH  # metrics may be 1000 a batch; params set the pace
    for i in range(0, max(len(ms), len(ps), 1), batch):
        c.log_batch(run_id, metrics=ms[i:i + batch], params=ps[i:i + batch], tags=as_tags(tags or {}) if i == 0 else [])
    for f in files:
        c.log_artifact(run_id, str(f), artifact_path=artifact_path)


def set_run_tags(run_id: str, tags: dict[str, str], uri: str | None = None) -> None:
    client(uri).log_batch(run_id, tags=as_tags(tags))


def run_end_reason(uri: str | None, run_id: str) -> str:
    """The run's end_reason tag ('' when it has none)."""
    return client(uri).get_run(run_id).data.tags.get(schema.END_REASON_TAG, "")


def end_run(run_id: str, status: str, uri: str | None = None) -> None:
    client(uri).set_terminated(run_id, status)


def delete_run(run_id: str, uri: str | None = None) -> None:
    """Ended KILLED, then moved to MLflow's trash (hidden from searches; `mlflow gc` removes it for good)."""
    c = client(uri)
    c.set_terminated(run_id, "KILLED")
    c.delete_run(run_id)


def find_run_ids(experiment: str, tags: dict[str, str], uri: str | None = None) -> list[str]:
    """Ids of the runs of `experiment` carrying all of `tags` (newest first)."""
    c = client(uri)
    exp_id = experiment_id(c, experiment, create=False)
    if exp_id is None:
        return []
    flt = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    return [r.info.run_id for r in c.search_runs([exp_id], flt, order_by=["attributes.start_time DESC"])]
