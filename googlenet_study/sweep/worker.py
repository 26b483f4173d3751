"""One worker's loop over the study's queue: pop a trial (a grid point, a retry, or a new one from the
sampler), run it (trial.py), and on a stop by signal or outage put it back as it was; until the study
has no work left for anyone. The package doc says why no point runs twice."""

from __future__ import annotations

import logging
import warnings
from typing import Callable

import optuna
from optuna.trial import TrialState

from .. import tracking
from . import pruners, samplers
from ..stop import STOP
from .outage import Unavailable
from ..schema import (END_REASON_TAG, MLFLOW_RUN_ID_ATTR, RETRY_OF_TAG, STOPPED_BY_OUTAGE_ATTR, STOPPED_BY_SIGNAL_ATTR,
                      STUDY_TAG, SURPLUS_ATTR, TRIAL_TAG)
from .study_file import StudySpec
from . import race_rounds
from .storage import open_storage
from .trial import Worker, run_trial

__all__ = ["AGAIN", "Worker", "has_work", "make_pruner", "make_sampler", "work"]

AGAIN = "its trial goes back in the queue; run the same command again when it is back"


def _close_dead_attempt(w: Worker, dead_trial: int) -> None:
    """A dead worker's run must not stay RUNNING: ended KILLED before the retry trains, so that the retry
    resumes it from its checkpoint on any node (a RUNNING run of another host is never taken over);
    without a checkpoint it stays KILLED with this end_reason and the retry makes a fresh run."""
    for run_id in tracking.find_run_ids(w.experiment, {STUDY_TAG: w.spec.name, TRIAL_TAG: str(dead_trial)},
                                        w.tracking_uri):
        if tracking.run_status(w.tracking_uri, run_id) == "RUNNING":
            tracking.set_run_tags(run_id, {END_REASON_TAG: "its worker died; the trial was retried"}, w.tracking_uri)
            tracking.end_run(run_id, "KILLED", w.tracking_uri)


def has_work(st: optuna.Study, spec: StudySpec) -> bool:
    """WAITING trials left (grid points, retries) or, for samplers, budget left."""
    optuna.storages.fail_stale_trials(st)  # dead workers' trials: failed and re-queued
    trials = st.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    return not spec.is_grid and sum(map(_is_fresh, trials)) < spec.n_trials


def _is_fresh(t) -> bool:
    """Created by the sampler, not popped from the queue (grid point or retry)."""
    return "fixed_params" not in t.system_attrs and "failed_trial" not in t.system_attrs


def _is_surplus(trials: list, spec: StudySpec, me) -> bool:
    if not _is_fresh(me):
        return False
    return spec.is_grid or sum(1 for t in trials if t.number < me.number and _is_fresh(t)) >= spec.n_trials


STOPPED = (STOPPED_BY_SIGNAL_ATTR, STOPPED_BY_OUTAGE_ATTR)  # user attrs of a FAIL trial that did not fail


def _requeue(st: optuna.Study, trial: optuna.Trial, me, why: str = STOPPED_BY_SIGNAL_ATTR, value=None) -> None:
    """A trial stopped by a signal or an outage, back in the queue as it was: its run resumes from its
    checkpoint."""
    trial.set_user_attr(why, STOP.signum if value is None else value)  # FAIL to Optuna, but not a failure
    _enqueue_again(st, trial.params or me.system_attrs.get("fixed_params"), trial.user_attrs, trial.number)


def _enqueue_again(st: optuna.Study, params: dict | None, user_attrs: dict, number: int) -> None:
    if params:  # else a sampler's trial stopped before it suggested anything: nothing to resume
        attrs = {k: v for k, v in user_attrs.items() if k not in (MLFLOW_RUN_ID_ATTR, *STOPPED)}
        st.enqueue_trial(params, user_attrs={**attrs, "resumes_trial": number})


def _stale_retry(w: Worker):
    """Optuna's callback for a trial whose heartbeat stopped: a worker that gave up on an outage (its run
    ended KILLED with that reason) goes back in the queue without using up a retry; a dead one is retried
    up to max_retries (Optuna's RetryHeartbeatStaleTrialCallback)."""
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(w.spec.max_retries)

    def callback(study: optuna.Study, t) -> None:
        runs = tracking.find_run_ids(w.experiment, {STUDY_TAG: w.spec.name, TRIAL_TAG: str(t.number)}, w.tracking_uri)
        if any(tracking.run_end_reason(w.tracking_uri, r).startswith(Unavailable.PREFIX) for r in runs):
            _enqueue_again(study, t.params or t.system_attrs.get("fixed_params"), t.user_attrs, t.number)
        else:
            retry(study, t)
    return callback


def work(w: Worker, objective: Callable[[optuna.Trial, Worker], object] | None = None) -> int:
    """Run trials until the study has none left for anyone (or STOP is set); returns how many this worker ran."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_log = logging.getLogger("optuna.study._optimize")  # where Optuna logs a trial's failure
    if not any(isinstance(f, _QuietWhenStopped) for f in trial_log.filters):
        trial_log.addFilter(_QuietWhenStopped())
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    spec, objective = w.spec, objective or run_trial
    storage = open_storage(w.storage, spec.max_retries, spec.storage_timeout_s, _stale_retry(w))
    tracking.set_timeout(spec.storage_timeout_s)
    st = optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec, w.seed),
                           pruner=make_pruner(spec))
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(spec.max_retries)
    exhausted = []

    def fn(trial: optuna.Trial):
        trials = st.get_trials(deepcopy=False)
        me = next(t for t in trials if t.number == trial.number)
        if _is_surplus(trials, spec, me):
            trial.set_user_attr(SURPLUS_ATTR, True)  # the queue ran dry between our check and our ask
            exhausted.append(trial.number)
            raise optuna.TrialPruned("surplus: no grid point or budget left")
        retry_of = me.system_attrs.get("failed_trial")
        if retry_of is not None:  # its heartbeat proved the worker dead: its run is KILLED, so this resumes it
            trial.set_user_attr(RETRY_OF_TAG, retry_of)
            _close_dead_attempt(w, retry_of)
        try:
            return objective(trial, w)
        except BaseException as e:  # a second signal (KeyboardInterrupt) too: Optuna calls no callback then
            if STOP():  # stopped by a signal, not failed: no retry used up
                _requeue(st, trial, me)
            elif isinstance(e, Unavailable):  # the tracking server (else this write waits in vain too)
                _requeue(st, trial, me, STOPPED_BY_OUTAGE_ATTR, str(e)[:500])
            raise

    def after(study: optuna.Study, t) -> None:
        if t.user_attrs.get(SURPLUS_ATTR):
            return
        if t.state == TrialState.FAIL and not STOP() and not any(k in t.user_attrs for k in STOPPED):
            retry(study, t)  # a stopped trial is back in the queue (fn)
        _print_trial(spec, t)

    ran = 0
    try:
        while not exhausted and not STOP() and (race_rounds.has_work(st, storage, w) if spec.races else has_work(st, spec)):
            st.optimize(fn, n_trials=1, catch=(Exception,), callbacks=[after])
            ran += 1
    except Exception as e:  # Optuna's tell may turn it into an UnboundLocalError: find the outage
        cause = _outage(e)
        if cause is None:
            raise
        raise cause from None
    return ran - len(exhausted)


def _outage(e: BaseException | None) -> Unavailable | None:
    """The Unavailable behind `e` (itself, its cause or context), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, Unavailable):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    """The study's sampler (samplers.SAMPLERS), seeded with this worker's seed."""
    return samplers.make(spec.sampler, seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner (pruners.PRUNERS); hyperband's resource is the trial's steps: epochs x repeats."""
    return pruners.make(spec.pruner, int(spec.config({}).epochs) * spec.repeats, spec.pruner_warmup_s)


def _print_trial(spec: StudySpec, t) -> None:
    vals = "" if not t.values else " " + " ".join(f"{m}={v:.4g}" for m, v in zip(spec.metrics, t.values))
    run = t.user_attrs.get(MLFLOW_RUN_ID_ATTR, "-")
    state = t.state.name
    if STOPPED_BY_SIGNAL_ATTR in t.user_attrs:
        state = "stopped by a signal (back in the queue; its run resumes from its checkpoint)"
    elif STOPPED_BY_OUTAGE_ATTR in t.user_attrs:
        state = "stopped by an outage (back in the queue; its run resumes from its checkpoint)"
    print(f"[{spec.name}] trial {t.number} {state}{vals} params={t.params} run={run}", flush=True)


class _QuietWhenStopped(logging.Filter):
    """Drops Optuna's "Trial N failed ... Traceback" for a trial a signal stopped: it did not fail, and
    _print_trial says what happened in one line (a Ctrl-C printed a traceback per worker before)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (STOP() and record.exc_info)
