"""`googlenet-study sweep FILE`: validate, create or join the study, run this machine's workers, then
the parent run's results and the report. cli.py turns the command line into the values taken here."""

from __future__ import annotations

import sys
import warnings

import optuna

from .. import budget, tracking
from . import outage, study_file
from ..config import UserError
from ..stop import stop_at_once
from .study_file import StudySpec
from . import processes, results, setup, slurm
from .storage import default_storage


def load(file: str, sets: list[str], n_trials: int | None, checkpoint_dir: str | None) -> StudySpec:
    """The study file, validated (every UserError comes from here, before anything exists)."""
    with stop_at_once():  # nothing exists yet: a signal ends the command now, not after a batch
        return study_file.load(file, sets, n_trials, checkpoint_dir)


def run(spec: StudySpec, workers: int, storage_url: str | None, tracking_uri: str | None, no_report: bool) -> int:
    """Create or join the study, run `workers` workers here until it has no work left (or a signal
    stops them), then conclude; returns the exit status."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if workers < 1:
        raise UserError(f"--workers: must be an integer >= 1, got {workers}")
    uri = tracking.tracking_uri(tracking_uri)
    storage_url = storage_url or default_storage(uri)
    with stop_at_once():
        budget.check_study(spec, workers)  # workers and each point's step memory, before the study exists
    try:
        storage = setup.connect(spec, uri, storage_url)
        st, created = setup.open_study(spec, uri, storage_url, storage)
    except setup.Stopped as e:
        return _stopped(spec, e)
    parent, experiment = st.user_attrs[setup.PARENT], st.user_attrs[setup.EXPERIMENT]
    plan = processes.plan_workers(spec, workers, storage_url, uri, parent, experiment, created)
    print(f"[{spec.name}] {'created' if created else 'joined'} study in {tracking.redact(storage_url)}; "
          f"parent run {parent} (experiment {experiment!r}); {len(plan)} worker(s), "
          f"{dict(plan[0].fixed) or 'config as given'}", flush=True)
    codes, signum = processes.run(plan)
    if signum:
        print(f"[{spec.name}] stopped by signal {signum}; run the same command again to resume", file=sys.stderr)
        return 128 + signum
    if outage.EXIT_STATUS in codes:  # the database or server is down: the parent's results must wait too
        return outage.EXIT_STATUS
    bad = [c for c in codes if c != 0]
    if bad:
        print(f"[{spec.name}] {len(bad)} worker(s) exited with status {bad}", file=sys.stderr)
    return results.conclude(spec, storage, parent, experiment, uri, bool(bad), no_report)


def run_array(array: slurm.Array, wait: bool, no_report: bool) -> int:
    """`--slurm-array N`: the workers as a Slurm job array (slurm.py), submitted from here."""
    try:
        return slurm.submit(array, wait, no_report)
    except setup.Stopped as e:
        return _stopped(array.spec, e)


def _stopped(spec: StudySpec, e: setup.Stopped) -> int:
    print(f"[{spec.name}] stopped by signal {e.signum} before the study was ready; nothing of it is left, "
          "run the same command again to start it", file=sys.stderr)
    return 128 + e.signum
