"""Stage 5: MLflow. This package is the only importer of mlflow; the engine sees `MlflowRun.log_epoch`.

One module per owner: store (where runs live: URI, client), run (the run lifecycle owned by train()),
read (read-back for reports; bulk.py its private-API fast path), sweep_runs (a sweep's parent and
trial runs). The names below are re-exported so callers write `tracking.X(...)`."""

from .read import download_artifact, log_report, metric_histories, search_runs_all
from .run import MlflowRun, load_run_config, metric_history, params_to_log, provenance_tags, run_status
from .store import (DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI, check_tracking_uri, client, experiment_id, full_store,
                    redact, set_timeout, tracking_uri, url_problem)
from .sweep_runs import (create_child_run, delete_run, end_run, find_run_ids, log_run_data, run_deleted,
                         run_end_reason, run_experiment, set_run_tags, start_parent_run)

__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_TRACKING_URI", "MlflowRun", "check_tracking_uri", "client",
           "create_child_run", "delete_run", "download_artifact", "end_run", "experiment_id", "find_run_ids",
           "full_store", "load_run_config",
           "log_report", "log_run_data", "metric_histories", "metric_history", "params_to_log", "provenance_tags",
           "redact", "run_deleted", "run_end_reason", "run_experiment", "run_status", "search_runs_all", "set_run_tags",
           "set_timeout", "start_parent_run",
           "tracking_uri", "url_problem"]
