"""The study and its parent run: created by exactly one process, joined by every other (see the package
doc), or — when a signal comes before it is ready — removed again, so that the same command starts afresh."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import optuna

from .. import tracking
from ..config import UserError
from .. import stop
from ..stop import STOP
from ..schema import (BASE_PREFIX, GRID_POINT_ATTR, JOINED_PARENT_TAG, PARENT_ROLE, ROLE_TAG, SPACE_PREFIX,
                      STORAGE_TAG, STUDY_FILE_PARAM, STUDY_TAG)
from .space import dump_space
from .study_file import StudySpec
from . import race_rounds
from . import storage as storage_mod

READY_TIMEOUT_S = 300     # how long a joining process waits for the creator to set the study up
# The study's user attrs, written once by its creator; READY last, joiners wait for it.
READY = "googlenet_study.ready"
PARENT = "mlflow_parent_run_id"
EXPERIMENT = "mlflow_experiment"
DIGEST = "spec_digest"


class Stopped(Exception):
    """A SIGTERM/SIGINT came before the study was ready: nothing of this process's is left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum} before the study was ready")
        self.signum = signum


def check_stop() -> None:
    """Raise Stopped if a signal came: called between the setup's steps, each short."""
    if STOP():
        raise Stopped(STOP.signum)


def connect(spec: StudySpec, uri: str, storage_url: str) -> storage_mod.PatientStorage:
    """The tracking store checked and the Optuna storage opened (its tables made): no study yet."""
    tracking.check_tracking_uri(uri)  # a file: store or an unreachable server: one line, no study made
    storage_mod.check_distinct(storage_url, uri)
    storage_mod.check_url(storage_url)  # a damaged optuna.db: one line, before either database is made
    check_stop()
    storage = storage_mod.open_storage(storage_url, spec.max_retries, spec.storage_timeout_s)
    check_stop()
    return storage


def open_study(spec: StudySpec, uri: str, storage_url: str,
               storage: optuna.storages.RDBStorage) -> tuple[optuna.Study, bool]:
    """The study (created with its parent run, or joined) in an opened storage; True if we made it."""
    st, created = create_or_join(spec, storage, uri, storage_url)
    parent = st.user_attrs[PARENT]
    if tracking.run_experiment(parent, uri) is None:
        raise UserError(f"study {spec.name!r}'s parent run {parent} is not in {tracking.redact(uri)}; "
                        "use the --tracking-uri of the study's first run (if it was removed for good by "
                        "`mlflow gc`, give the study a new name)")
    if tracking.run_deleted(parent, uri):  # MLflow refuses every write to it: the results could not be logged
        raise UserError(parent_deleted(spec.name, parent, uri))
    own = os.environ.get("MLFLOW_RUN_ID")
    if own and own != parent:  # `mlflow run` made a run for us but the study already has its parent
        tracking.set_run_tags(own, {JOINED_PARENT_TAG: parent, STUDY_TAG: spec.name}, uri)
    return st, created


def parent_deleted(study: str, parent: str, uri: str) -> str:
    """The one line for a study whose parent run is in MLflow's trash: how to go on."""
    return (f"study {study!r}'s parent run {parent} is deleted (in MLflow's trash), so the study's results "
            f"cannot be logged to it; restore it (MLFLOW_TRACKING_URI={tracking.redact(uri)} mlflow runs restore "
            f"--run-id {parent}) and run the same command again, or give the study a new name to start over")


def create_or_join(spec: StudySpec, storage: optuna.storages.RDBStorage, uri: str,
                   storage_url: str) -> tuple[optuna.Study, bool]:
    """The study, created with its parent run and grid queue by exactly one process; True if we made it.

    A signal (or any error) before READY is set deletes the study and the parent run this process made
    (a run `mlflow run` made for it is only left as it was): a rerun creates them afresh."""
    try:
        st = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions,
                                 load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        st = optuna.load_study(study_name=spec.name, storage=storage)
        _wait_ready(st, spec)
        return st, False
    parent = None
    try:
        check_stop()
        st.set_metric_names(spec.metrics)
        parent = tracking.start_parent_run(spec.experiment, spec.name, {
            STUDY_TAG: spec.name, ROLE_TAG: PARENT_ROLE, STORAGE_TAG: tracking.redact(storage_url)}, uri)
        experiment = tracking.run_experiment(parent, uri) or spec.experiment
        log_parent_start(spec, parent, storage_url, uri)
        queue = race_rounds.first_queue(spec) if spec.races else [(p, {GRID_POINT_ATTR: i}) for i, p in enumerate(spec.grid)]
        for i, (point, attrs) in enumerate(queue):
            if i % 100 == 0:
                check_stop()
            st.enqueue_trial(point, user_attrs=attrs)
        st.set_user_attr(PARENT, parent)
        st.set_user_attr(EXPERIMENT, experiment)
        st.set_user_attr(DIGEST, spec.digest())
        check_stop()
        st.set_user_attr(READY, True)  # last: joiners wait for it
    except BaseException:
        _undo(spec, storage, parent, uri)
        raise
    return st, True


def _undo(spec: StudySpec, storage, parent: str | None, uri: str) -> None:
    """No half-made study left behind: the study deleted, the parent run this process created trashed.
    A further signal meanwhile is only recorded (STOP's second signal would cut this short)."""
    with stop.handling(STOP.record):
        optuna.delete_study(study_name=spec.name, storage=storage)
        if parent is not None and parent != os.environ.get("MLFLOW_RUN_ID"):
            tracking.delete_run(parent, uri)


def _wait_ready(st: optuna.Study, spec: StudySpec) -> None:
    t0 = time.monotonic()
    while not st.user_attrs.get(READY):
        check_stop()  # a joiner made nothing: it just goes
        if time.monotonic() - t0 > READY_TIMEOUT_S:
            raise UserError(f"study {spec.name!r} exists but its creator never finished setting it up; "
                            f"delete it (optuna delete-study --study-name {spec.name} --storage URL) or rename")
        time.sleep(1.0)
    if st.user_attrs.get(DIGEST) != spec.digest():
        raise UserError(f"{spec.path}: study {spec.name!r} already exists with a different base/space/sampler/"
                        "objectives/pruner/repeats; give the changed study a new name")
    if list(map(str.lower, (d.name for d in st.directions))) != spec.directions:
        raise UserError(f"{spec.path}: study {spec.name!r} exists with other objective directions")


def log_parent_start(spec: StudySpec, run_id: str, storage_url: str, uri: str) -> None:
    """The study file, its search space and its settings as the parent run's artifacts and params."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "study.yaml").write_text(tracking.redact(spec.text))
        (Path(d) / "search_space.yaml").write_text(dump_space(spec))
        params = {STUDY_TAG: spec.name, "sampler": spec.sampler, "sampler_seed": spec.sampler_seed,
                  "objectives": ", ".join(f"{d} {m}" for d, m in spec.objectives), "pruner": spec.pruner,
                  "n_trials": spec.n_trials, "max_retries": spec.max_retries, "repeats": spec.repeats,
                  STORAGE_TAG: storage_url, STUDY_FILE_PARAM: spec.path,
                  **({"pruner_warmup_s": spec.pruner_warmup_s if spec.pruner_warmup_s is not None else "first_epoch"}
                     if spec.prunes_by_clock else {}),
                  **{BASE_PREFIX + k: v for k, v in spec.base.items()},
                  **{SPACE_PREFIX + k: v for k, v in spec.space_dict().items()}}
        tracking.log_run_data(run_id, uri, params=params, files=[Path(d) / "study.yaml", Path(d) / "search_space.yaml"])
