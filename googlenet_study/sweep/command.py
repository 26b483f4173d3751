"""Stage 6: a sweep. An Optuna study (storage: SQLite or PostgreSQL) whose trials are MLflow child
runs of one parent run, trained by the same `train()` as `googlenet-study train`. Here: the study,
one worker's loop and the command; one trial is sweep_trial.py, the worker processes sweep_workers.py,
the parent run's results sweep_results.py, a Slurm job array of workers slurm.py.

Race-free by construction, on one machine or many:
- the study is created with `load_if_exists=False`: exactly one process wins; it makes the parent
  run, enqueues every grid point once and then marks the study ready; the others wait for that;
- grid points are WAITING trials that workers pop (one SQL transaction per pop: PostgreSQL locks
  the row, SQLite transactions take the write lock first: optuna_storage.py), so each point runs
  once; a trial Optuna creates when the queue ran dry in between is marked `surplus` and skipped;
- failed trials are re-queued (`max_retries`), so are trials of killed workers (heartbeat);
- a trial stopped by SIGTERM/SIGINT goes back in the queue as it was (no retry used up) and its
  run, ended KILLED, resumes from its checkpoint when the queue hands the point out again; so does
  a trial whose database or tracking server stayed down past storage_timeout_s (outage.py)."""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from . import budget
from . import study as study_mod
from . import outage, tracking
from .config import UserError
from .engine import STOP
from .outage import Unavailable
from .optuna_storage import default_storage, open_storage  # noqa: F401 - part of this module's interface
from .pruners import WallclockMedianPruner
from .schema import ROLE_TAG, STUDY_TAG, TRIAL_TAG
from .study import StudySpec
from .sweep_trial import run_trial
from .sweep_workers import supervise

READY_TIMEOUT_S = 300     # how long a joining process waits for the creator to set the study up
READY = "googlenet_study.ready"  # study user attrs written once by the creator
PARENT = "mlflow_parent_run_id"
EXPERIMENT = "mlflow_experiment"
DIGEST = "spec_digest"
AGAIN = "its trial goes back in the queue; run the same command again when it is back"


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


def create_or_join(spec: StudySpec, storage: optuna.storages.RDBStorage, uri: str,
                   storage_url: str) -> tuple[optuna.Study, bool]:
    """The study, created with its parent run and grid queue by exactly one process; True if we made it."""
    try:
        st = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions,
                                 load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        st = optuna.load_study(study_name=spec.name, storage=storage)
        _wait_ready(st, spec)
        return st, False
    try:
        st.set_metric_names(spec.metrics)
        parent = tracking.start_parent_run(spec.experiment, spec.name, {
            STUDY_TAG: spec.name, ROLE_TAG: "parent", "optuna_storage": tracking.redact(storage_url)}, uri)
        experiment = tracking.run_experiment(parent, uri) or spec.experiment
        _log_parent_start(spec, parent, storage_url, uri)
        for i, point in enumerate(spec.grid):
            st.enqueue_trial(point, user_attrs={"grid_point": i})
        st.set_user_attr(PARENT, parent)
        st.set_user_attr(EXPERIMENT, experiment)
        st.set_user_attr(DIGEST, spec.digest())
        st.set_user_attr(READY, True)  # last: joiners wait for it
    except BaseException:
        optuna.delete_study(study_name=spec.name, storage=storage)  # no half-made study left behind
        raise
    return st, True


def _wait_ready(st: optuna.Study, spec: StudySpec) -> None:
    t0 = time.monotonic()
    while not st.user_attrs.get(READY):
        if time.monotonic() - t0 > READY_TIMEOUT_S:
            raise UserError(f"study {spec.name!r} exists but its creator never finished setting it up; "
                            f"delete it (optuna delete-study --study-name {spec.name} --storage URL) or rename")
        time.sleep(1.0)
    if st.user_attrs.get(DIGEST) != spec.digest():
        raise UserError(f"{spec.path}: study {spec.name!r} already exists with a different base/space/sampler/"
                        "objectives/pruner/repeats; give the changed study a new name")
    if list(map(str.lower, (d.name for d in st.directions))) != spec.directions:
        raise UserError(f"{spec.path}: study {spec.name!r} exists with other objective directions")


def _log_parent_start(spec: StudySpec, run_id: str, storage_url: str, uri: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "study.yaml").write_text(tracking.redact(spec.text))
        (Path(d) / "search_space.yaml").write_text(study_mod.dump_space(spec))
        params = {"study_name": spec.name, "sampler": spec.sampler, "sampler_seed": spec.sampler_seed,
                  "objectives": ", ".join(f"{d} {m}" for d, m in spec.objectives), "pruner": spec.pruner,
                  "n_trials": spec.n_trials, "max_retries": spec.max_retries, "repeats": spec.repeats,
                  "optuna_storage": storage_url, "study_file": spec.path,
                  **({"pruner_warmup_s": spec.pruner_warmup_s if spec.pruner_warmup_s is not None else "first_epoch"}
                     if spec.pruner == "wallclock_median" else {}),
                  **{f"base.{k}": v for k, v in spec.base.items()},
                  **{f"space.{k}": v for k, v in spec.space_dict().items()}}
        tracking.log_run_data(run_id, uri, params=params, files=[Path(d) / "study.yaml", Path(d) / "search_space.yaml"])


# ---- one worker ---------------------------------------------------------------------------
def _close_dead_attempt(w: Worker, dead_trial: int) -> None:
    """A dead worker's run must not stay RUNNING: ended KILLED before the retry trains, so that the retry
    resumes it from its checkpoint on any node (a RUNNING run of another host is never taken over);
    without a checkpoint it stays KILLED with this end_reason and the retry makes a fresh run."""
    for run_id in tracking.find_run_ids(w.experiment, {STUDY_TAG: w.spec.name, TRIAL_TAG: str(dead_trial)},
                                        w.tracking_uri):
        if tracking.run_status(w.tracking_uri, run_id) == "RUNNING":
            tracking.set_run_tags(run_id, {"end_reason": "its worker died; the trial was retried"}, w.tracking_uri)
            tracking.end_run(run_id, "KILLED", w.tracking_uri)


def has_work(st: optuna.Study, spec: StudySpec) -> bool:
    """WAITING trials left (grid points, retries) or, for samplers, budget left."""
    optuna.storages.fail_stale_trials(st)  # dead workers' trials: failed and re-queued
    trials = st.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    return spec.sampler != "grid" and sum(map(_is_fresh, trials)) < spec.n_trials


def _is_fresh(t) -> bool:
    """Created by the sampler, not popped from the queue (grid point or retry)."""
    return "fixed_params" not in t.system_attrs and "failed_trial" not in t.system_attrs


def _is_surplus(trials: list, spec: StudySpec, me) -> bool:
    if not _is_fresh(me):
        return False
    return spec.sampler == "grid" or sum(1 for t in trials if t.number < me.number and _is_fresh(t)) >= spec.n_trials


STOPPED = ("stopped_by_signal", "stopped_by_outage")  # user attrs of a FAIL trial that did not fail


def _requeue(st: optuna.Study, trial: optuna.Trial, me, why: str = "stopped_by_signal", value=None) -> None:
    """A trial stopped by a signal or an outage, back in the queue as it was: its run resumes from its
    checkpoint."""
    trial.set_user_attr(why, STOP.signum if value is None else value)  # FAIL to Optuna, but not a failure
    _enqueue_again(st, trial.params or me.system_attrs.get("fixed_params"), trial.user_attrs, trial.number)


def _enqueue_again(st: optuna.Study, params: dict | None, user_attrs: dict, number: int) -> None:
    if params:  # else a sampler's trial stopped before it suggested anything: nothing to resume
        attrs = {k: v for k, v in user_attrs.items() if k not in ("mlflow_run_id", *STOPPED)}
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
            trial.set_user_attr("surplus", True)  # the queue ran dry between our check and our ask
            exhausted.append(trial.number)
            raise optuna.TrialPruned("surplus: no grid point or budget left")
        retry_of = me.system_attrs.get("failed_trial")
        if retry_of is not None:  # its heartbeat proved the worker dead: its run is KILLED, so this resumes it
            trial.set_user_attr("retry_of_trial", retry_of)
            _close_dead_attempt(w, retry_of)
        try:
            return objective(trial, w)
        except BaseException as e:  # a second signal (KeyboardInterrupt) too: Optuna calls no callback then
            if STOP():  # stopped by a signal, not failed: no retry used up
                _requeue(st, trial, me)
            elif isinstance(e, Unavailable):  # the tracking server (else this write waits in vain too)
                _requeue(st, trial, me, "stopped_by_outage", str(e)[:500])
            raise

    def after(study: optuna.Study, t) -> None:
        if t.user_attrs.get("surplus"):
            return
        if t.state == TrialState.FAIL and not STOP() and not any(k in t.user_attrs for k in STOPPED):
            retry(study, t)  # a stopped trial is back in the queue (fn)
        _print_trial(spec, t)

    ran = 0
    try:
        while not exhausted and not STOP() and has_work(st, spec):
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
    # grid: every point is an enqueued trial, so the sampler never picks a grid value itself.
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        # Optuna's default warm-up (none); 3 finished trials before anything is pruned.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=_steps(spec))
    if spec.pruner == "wallclock_median":
        return WallclockMedianPruner(warmup_s=spec.pruner_warmup_s)  # 3 finished trials, like median
    return optuna.pruners.NopPruner()


def _steps(spec: StudySpec) -> int:
    return int(spec.config({}).epochs) * spec.repeats


def _print_trial(spec: StudySpec, t) -> None:
    vals = "" if not t.values else " " + " ".join(f"{m}={v:.4g}" for m, v in zip(spec.metrics, t.values))
    run = t.user_attrs.get("mlflow_run_id", "-")
    print(f"[{spec.name}] trial {t.number} {t.state.name}{vals} params={t.params} run={run}", flush=True)


# ---- the command ----------------------------------------------------------------------------
def plan_workers(spec: StudySpec, n: int, storage: str, uri: str, parent: str, experiment: str,
                 created: bool) -> list[Worker]:
    """N workers: CPU cores split between them (unless threads is set), one GPU each where there are GPUs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():  # a Slurm task: its allocation, not the node's
        cores = int(os.environ["SLURM_CPUS_PER_TASK"])
    gpus = 0
    if str(spec.base.get("device", "auto")) in ("auto", "cuda") and "device" not in spec.space:
        import torch
        gpus = torch.cuda.device_count()
    out = []
    for i in range(n):
        fixed = {}
        if "threads" not in spec.base and "threads" not in spec.space:
            fixed["threads"] = max(1, cores // n)
        if gpus:
            fixed["device"] = f"cuda:{i % gpus}"
        # Reproducible seeds for the process that created the study; joiners (other machines, resumes)
        # mix in their pid so that two machines do not propose the same first points.
        seed = spec.sampler_seed + i + (0 if created else 1000 * (os.getpid() % 100_000))
        out.append(Worker(spec, storage, uri, parent, experiment, i, seed, tuple(fixed.items())))
    return out


def main(args) -> int:
    """`googlenet-study sweep FILE`: create or join the study, run its trials, log the results."""
    spec = study_mod.load(args.file, args.set, args.n_trials, args.checkpoint_dir)  # every UserError first
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.workers < 1:
        raise UserError(f"--workers: must be an integer >= 1, got {args.workers}")
    given = [f for f, on in (("--dry-run", args.dry_run), ("--wait", args.wait), ("--slurm-option", args.slurm_option))
             if on]
    if given and args.slurm_array is None:
        raise UserError(f"{given[0]}: only with --slurm-array N")
    if args.slurm_array is not None:  # the workers run as a Slurm job array, not here
        from . import slurm
        return slurm.main(args, spec)
    budget.check_study(spec, args.workers)  # workers and each point's step memory, before the study exists
    uri = tracking.tracking_uri(args.tracking_uri)
    storage_url = args.storage or default_storage(uri)
    storage, st, created = open_study(spec, uri, storage_url)
    parent, experiment = st.user_attrs[PARENT], st.user_attrs[EXPERIMENT]
    workers = plan_workers(spec, args.workers, storage_url, uri, parent, experiment, created)
    print(f"[{spec.name}] {'created' if created else 'joined'} study in {tracking.redact(storage_url)}; "
          f"parent run {parent} (experiment {experiment!r}); {len(workers)} worker(s), "
          f"{dict(workers[0].fixed) or 'config as given'}", flush=True)
    codes, signum = _run(workers)
    if signum:
        print(f"[{spec.name}] stopped by signal {signum}; run the same command again to resume", file=sys.stderr)
        return 128 + signum
    if outage.EXIT_STATUS in codes:  # the database or server is down: the parent's results must wait too
        return outage.EXIT_STATUS
    bad = [c for c in codes if c != 0]
    if bad:
        print(f"[{spec.name}] {len(bad)} worker(s) exited with status {bad}", file=sys.stderr)
    return conclude(spec, storage, parent, experiment, uri, bool(bad), args.no_report)


def open_study(spec: StudySpec, uri: str, storage_url: str) -> tuple[optuna.storages.RDBStorage, optuna.Study, bool]:
    """The storage and the study (created with its parent run, or joined); True if we made it."""
    tracking.check_tracking_uri(uri)  # a file: store or an unreachable server: one line, no study made
    storage = open_storage(storage_url, spec.max_retries, spec.storage_timeout_s)
    st, created = create_or_join(spec, storage, uri, storage_url)
    parent = st.user_attrs[PARENT]
    if tracking.run_experiment(parent, uri) is None:
        raise UserError(f"study {spec.name!r}'s parent run {parent} is not in {tracking.redact(uri)}; "
                        "use the --tracking-uri of the study's first run")
    own = os.environ.get("MLFLOW_RUN_ID")
    if own and own != parent:  # `mlflow run` made a run for us but the study already has its parent
        tracking.set_run_tags(own, {"joined_parent_run_id": parent, STUDY_TAG: spec.name}, uri)
    return storage, st, created


def conclude(spec: StudySpec, storage, parent: str, experiment: str, uri: str, bad: bool, no_report: bool) -> int:
    """After the workers: the parent run's results (FINISHED when no trial is left), then the report."""
    from . import sweep_results

    res = sweep_results.finish(optuna.load_study(study_name=spec.name, storage=storage), spec, parent, uri)
    print(f"[{spec.name}] {res['complete']} complete, {res['pruned']} pruned, {res['fail']} failed"
          + (f" ({res['stopped']} of them stopped by a signal and re-queued)" if res["stopped"] else "")
          + ("" if res["done"] else f", {res['running']} running and {res['waiting']} waiting elsewhere"),
          flush=True)
    if bad or not res["done"] or no_report:
        return 1 if bad else 0
    return _report(spec, experiment, parent, uri)


def _run(workers: list[Worker]) -> tuple[list[int], int | None]:
    """The workers, run until the study has no work left or a signal stops them: the exit codes of
    worker processes, and that signal (None if none came)."""
    if STOP():  # a signal while the study was being set up
        return [], STOP.signum
    if len(workers) == 1:
        try:
            work(workers[0])  # in this process, under the CLI's STOP handlers
        except Unavailable as e:
            print(f"googlenet-study sweep: {e}; {AGAIN}", file=sys.stderr)
            return [outage.EXIT_STATUS], STOP.signum
        return [], STOP.signum
    return supervise(workers)


def _report(spec: StudySpec, experiment: str, parent: str, uri: str) -> int:
    """The report of the finished study (googlenet_study.report), attached to its parent run."""
    import argparse

    from . import report

    targets = ",".join(f"{p:g}" for p in spec.report_targets) if spec.report_targets else None  # the study file's
    return report.main(argparse.Namespace(experiment=experiment, study=spec.name, parent_run=None, filter=None,
                                          targets=targets, out=None, tracking_uri=uri))
