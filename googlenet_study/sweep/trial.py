"""One trial of a sweep, the Optuna objective: suggest the trial's config, train it through the same
`train()` as `googlenet-study train` and return its objective values. One seed: the trial is one
child run of the study's parent run. repeats K > 1: a trial run under the parent with K seed runs
under it; the trial's value is the mean over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import optuna

from .. import tracking
from . import pruners
from ..checkpoint import AUTO
from ..config import RunConfig
from ..engine import Hooks
from ..stop import STOP
from .outage import Unavailable
from ..schema import (ACCURACY, CLOCK, MLFLOW_RUN_ID_ATTR, PRUNED_AT_TAG, PRUNED_TAG, RETRY_OF_TAG, ROLE_TAG,
                      SEED_INDEX_TAG, STUDY_TAG, TRIAL_ROLE, TRIAL_TAG)
from .space import Range
from .study_file import StudySpec
from ..train import RunOptions, train
from . import race_rounds


@dataclass(frozen=True)
class Worker:
    """Everything one worker process needs (picklable: it crosses a process boundary)."""
    spec: StudySpec
    storage: str
    tracking_uri: str
    parent_run_id: str
    experiment: str
    index: int
    seed: int                        # the sampler's seed in this worker
    fixed: tuple[tuple[str, object], ...] = ()  # per-worker config fields (threads, device)


def run_trial(trial: optuna.Trial, w: Worker) -> list[float] | float:
    """The objective: train the trial's config as a child run (repeats > 1: one run per seed)."""
    params = suggest(trial, w.spec)
    cfg = w.spec.config(params, **dict(w.fixed))
    tags = {STUDY_TAG: w.spec.name, TRIAL_TAG: str(trial.number), ROLE_TAG: TRIAL_ROLE}
    if RETRY_OF_TAG in trial.user_attrs:  # an Optuna user attr of the same name
        tags[RETRY_OF_TAG] = str(trial.user_attrs[RETRY_OF_TAG])
    name = f"{w.spec.name}-t{trial.number}"
    if w.spec.nests_seed_runs:
        values = _train_seeds(trial, w, cfg, params, name, tags)
    else:
        values = _train_seed(trial, w, cfg, w.parent_run_id, name, tags, 0)
    return values if len(values) > 1 else values[0]


def _train_seeds(trial: optuna.Trial, w: Worker, cfg: RunConfig, params: dict, name: str,
                 tags: dict) -> list[float]:
    """repeats > 1: a trial run under the parent, a run per seed under it; the mean over seeds."""
    uri, seeds = w.tracking_uri, [cfg.seed + k for k in range(w.spec.repeats)]
    run = tracking.create_child_run(w.experiment, w.parent_run_id, name, tags, uri)
    tracking.log_run_data(run, uri, params={**params, "repeats": w.spec.repeats, "seeds": ",".join(map(str, seeds))})
    trial.set_user_attr(MLFLOW_RUN_ID_ATTR, run)
    try:
        results = [_train_seed(trial, w, replace(cfg, seed=s), run, f"{name}-seed{s}",
                               {**tags, SEED_INDEX_TAG: str(k)}, k) for k, s in enumerate(seeds)]
    except optuna.TrialPruned as e:
        tracking.set_run_tags(run, {PRUNED_TAG: "true", PRUNED_AT_TAG: str(e)}, uri)
        tracking.end_run(run, "KILLED", uri)
        raise
    except BaseException:
        tracking.end_run(run, "KILLED" if STOP() else "FAILED", uri)
        raise
    tracking.log_run_data(run, uri, metrics=_spread(w.spec.metrics, results))
    tracking.end_run(run, "FINISHED", uri)
    return [sum(col) / len(col) for col in zip(*results)]


def _train_seed(trial: optuna.Trial, w: Worker, cfg: RunConfig, parent: str, name: str, tags: dict,
                seed_index: int) -> list[float]:
    """One seed's run under `parent` (used by both paths): its objective values, or raise when it was
    pruned, failed or stopped by a signal (ended KILLED by train(); its checkpoint resumes it)."""
    own = not w.spec.nests_seed_runs  # the seed's run is the trial's run: the trial records its id
    pruning = ([_pruning_hook(trial, seed_index, cfg.epochs, by_clock=w.spec.prunes_by_clock)]
               if w.spec.prunes else [])
    try:
        # resume AUTO: a trial re-queued after a stop or a dead worker continues its run from its checkpoint
        r = train(cfg, w.tracking_uri, w.experiment, RunOptions(
            parent_run_id=parent, run_name=name, tags=tags,
            hooks=Hooks(on_epoch=[*pruning, _storage_check(trial, cfg.epochs)], progress=False),
            resume=AUTO, checkpoint_dir=w.spec.checkpoint_dir, reraise=(optuna.TrialPruned, Unavailable)))
    except BaseException as e:
        run_ids = tracking.find_run_ids(w.experiment, tags, w.tracking_uri)[:1]  # train() raised: no result
        if own and run_ids:
            trial.set_user_attr(MLFLOW_RUN_ID_ATTR, run_ids[0])
        if isinstance(e, optuna.TrialPruned) and run_ids:
            tracking.set_run_tags(run_ids[0], {PRUNED_TAG: "true", PRUNED_AT_TAG: str(e)}, w.tracking_uri)
        raise
    if own:
        trial.set_user_attr(MLFLOW_RUN_ID_ATTR, r.run_id)
    if r.status != "FINISHED":
        why = r.failure_reason or ("stopped by a signal; its checkpoint resumes it" if STOP() else "no reason recorded")
        raise RuntimeError(f"run {r.run_id} {r.status}: {why}")
    if w.spec.races:  # what the round decisions read (sweep/race_rounds.py)
        trial.set_user_attr(race_rounds.CURVE_ATTR, race_rounds.curve(r.history))
    return objective_values(w.spec, r.summary, r.history)


def _spread(metrics: list[str], results: list[list[float]]) -> dict[str, float]:
    """Each objective over the seeds: mean (also under its own name), n, n_finite and sample std."""
    out = {}
    for i, m in enumerate(metrics):
        xs = [r[i] for r in results]
        finite = [x for x in xs if math.isfinite(x)]
        mean = sum(xs) / len(xs)
        out[m] = out[f"{m}_mean"] = mean
        out[f"{m}_n"] = len(xs)
        out[f"{m}_n_finite"] = len(finite)
        if len(xs) > 1 and math.isfinite(mean):
            out[f"{m}_std"] = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))  # sample std
    return out


def _pruning_hook(trial: optuna.Trial, seed_index: int, epochs: int, by_clock: bool = False):
    """After each epoch: report test_acc (by_clock: with the trial's elapsed seconds, for
    wallclock_median) and raise TrialPruned when the study's pruner says so."""
    def on_epoch(epoch: int, metrics: dict) -> None:
        # step counts epochs across the trial's seeds: seed k's epoch e is step k*epochs+e.
        step = seed_index * epochs + epoch
        if by_clock:
            pruners.report(trial, step, metrics[ACCURACY], metrics[CLOCK], seed_first_step=seed_index * epochs + 1)
        else:
            trial.report(metrics[ACCURACY], step)
        if trial.should_prune():
            at = f" at {metrics[CLOCK]:.1f} s" if by_clock else ""
            raise optuna.TrialPruned(f"epoch {epoch} of seed index {seed_index}{at}")
    return on_epoch


def _storage_check(trial: optuna.Trial, epochs: int):
    """After a run's last epoch, before train() ends it FINISHED: a write to the study's database, waited
    for through an outage (storage.PatientStorage). Past storage_timeout_s it raises Unavailable:
    the run ends KILLED, resumable, instead of FINISHED with a trial Optuna never hears of."""
    def on_epoch(epoch: int, metrics: dict) -> None:
        if epoch == epochs:
            trial.set_user_attr("trained_epochs", epoch)
    return on_epoch


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict:
    """The searched fields' values: the sampler's, or a queued grid point's (fixed by Optuna)."""
    params = {}
    for k, d in spec.space.items():
        if isinstance(d, Range):
            if d.is_int:
                params[k] = trial.suggest_int(k, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
            else:
                params[k] = trial.suggest_float(k, float(d.low), float(d.high), step=d.step, log=d.log)
        else:
            params[k] = trial.suggest_categorical(k, list(d))
    if spec.races:  # the racing dimension: the queued (configuration, seed)'s seed
        params["seed"] = trial.suggest_int("seed", 0, spec.racing.max_seeds - 1)
    return params


def objective_values(spec: StudySpec, summary: dict, history: list[dict]) -> list[float]:
    """Each objective from a finished run. An unreached time_to_test_acc_P (not logged) counts as
    the worst possible value: +inf when minimised (-inf when maximised). Optuna ranks it last and
    leaves it out of its plots; MLflow gets no metric for it."""
    out = []
    for direction, m in spec.objectives:
        v = summary.get(m, history[-1].get(m) if history else None)
        out.append(float(v) if v is not None else (math.inf if direction == "minimize" else -math.inf))
    return out
