"""Stage 6: a sweep. An Optuna study (storage: SQLite or PostgreSQL) whose trials are MLflow child
runs of one parent run, trained by the same `train()` as `googlenet-study train`.

Race-free by construction, on one machine or many:
- the study is created with `load_if_exists=False`: exactly one process wins; it makes the parent
  run, enqueues every grid point once and then marks the study ready; the others wait for that;
- grid points are WAITING trials that workers pop (one SQL transaction per pop: PostgreSQL locks
  the row, SQLite transactions take the write lock first: optuna_storage.py), so each point runs
  once; a trial Optuna creates when the queue ran dry in between is marked `surplus` and skipped;
- failed trials are re-queued (`max_retries`), so are trials of killed workers (heartbeat)."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from . import study as study_mod
from . import tracking
from .config import UserError
from .optuna_storage import default_storage, open_storage  # noqa: F401 - part of this module's interface
from .study import Range, StudySpec

READY_TIMEOUT_S = 300     # how long a joining process waits for the creator to set the study up
READY = "googlenet_study.ready"  # study user attrs written once by the creator
PARENT = "mlflow_parent_run_id"
EXPERIMENT = "mlflow_experiment"
DIGEST = "spec_digest"


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
    directions = spec.directions
    try:
        st = optuna.create_study(study_name=spec.name, storage=storage, directions=directions,
                                 load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        st = optuna.load_study(study_name=spec.name, storage=storage)
        _wait_ready(st, spec)
        return st, False
    try:
        st.set_metric_names(spec.metrics)
        parent = tracking.start_parent_run(spec.experiment, spec.name, {
            "study_name": spec.name, "sweep_role": "parent", "optuna_storage": tracking.redact(storage_url)}, uri)
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
                  **{f"base.{k}": v for k, v in spec.base.items()},
                  **{f"space.{k}": v for k, v in spec.space_dict().items()}}
        tracking.log_run_data(run_id, uri, params=params, files=[Path(d) / "study.yaml", Path(d) / "search_space.yaml"])


# ---- one worker ---------------------------------------------------------------------------
def _close_dead_attempt(w: Worker, dead_trial: int) -> None:
    """A dead worker's run that this retry did not resume (no checkpoint yet) must not stay RUNNING.
    A resumed run carries the retry's trial number by now, so it is not found here."""
    for run_id in tracking.find_run_ids(w.experiment, {"study_name": w.spec.name,
                                                       "trial_number": str(dead_trial)}, w.tracking_uri):
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


def work(w: Worker, objective: Callable[[optuna.Trial], object] | None = None) -> int:
    """Run trials until the study has none left for anyone; returns how many this worker ran."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    spec = w.spec
    storage = open_storage(w.storage, spec.max_retries)
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
        if retry_of is None:
            return (objective or run_trial)(trial, w)
        trial.set_user_attr("retry_of_trial", retry_of)
        try:
            return (objective or run_trial)(trial, w)
        finally:
            _close_dead_attempt(w, retry_of)

    def after(study: optuna.Study, t) -> None:
        if t.state == TrialState.FAIL and not t.user_attrs.get("surplus"):
            if _stopping():  # stopped by a signal, not failed: back in the queue, no retry used up
                study.enqueue_trial(t.params, user_attrs={**{k: v for k, v in t.user_attrs.items()
                                                            if k != "mlflow_run_id"}, "resumes_trial": t.number})
            else:
                retry(study, t)
        if not t.user_attrs.get("surplus"):
            _print_trial(spec, t)

    ran = 0
    while not exhausted and not _stopping() and has_work(st, spec):
        st.optimize(fn, n_trials=1, catch=(Exception,), callbacks=[after])
        ran += 1
    return ran - len(exhausted)


def _stopping() -> bool:
    from .engine import STOP  # set by SIGTERM/SIGINT once installed (cli.main, _worker_main)
    return STOP()


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
    return optuna.pruners.NopPruner()


def _steps(spec: StudySpec) -> int:
    return int(spec.config({}).epochs) * spec.repeats


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict:
    params = {}
    for k, d in spec.space.items():
        if isinstance(d, Range):
            if d.is_int:
                params[k] = trial.suggest_int(k, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
            else:
                params[k] = trial.suggest_float(k, float(d.low), float(d.high), step=d.step, log=d.log)
        else:
            params[k] = trial.suggest_categorical(k, list(d))
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


def run_trial(trial: optuna.Trial, w: Worker) -> list[float] | float:
    """The objective: train the trial's config (repeats times, over seeds) as child runs."""
    from .engine import Hooks
    from .train import train

    spec = w.spec
    params = suggest(trial, spec)
    cfg = spec.config(params, **dict(w.fixed))
    tags = {"study_name": spec.name, "trial_number": str(trial.number), "sweep_role": "trial"}
    retry_of = trial.user_attrs.get("retry_of_trial")
    if retry_of is not None:
        tags["retry_of_trial"] = str(retry_of)
    name = f"{spec.name}-t{trial.number}"
    parent, seeds = w.parent_run_id, [cfg.seed]
    if spec.repeats > 1:
        seeds = [cfg.seed + k for k in range(spec.repeats)]
        parent = tracking.create_child_run(w.experiment, w.parent_run_id, name, tags, w.tracking_uri)
        tracking.log_run_data(parent, w.tracking_uri, params={**params, "repeats": spec.repeats,
                                                              "seeds": ",".join(map(str, seeds))})
        trial.set_user_attr("mlflow_run_id", parent)
    results = []
    for k, seed in enumerate(seeds):
        run_tags = {**tags, "seed_index": str(k)} if spec.repeats > 1 else tags
        hooks = Hooks(on_epoch=[_pruning_hook(trial, k, cfg.epochs)] if spec.pruner != "none" else [],
                      progress=False)
        try:
            r = train(replace(cfg, seed=seed), w.tracking_uri, w.experiment, parent_run_id=parent,
                      run_name=name if spec.repeats == 1 else f"{name}-seed{seed}", tags=run_tags,
                      hooks=hooks, reraise=(optuna.TrialPruned,))
        except BaseException as e:
            ids = tracking.find_run_ids(w.experiment, run_tags, w.tracking_uri)
            if ids and spec.repeats == 1:
                trial.set_user_attr("mlflow_run_id", ids[0])
            if isinstance(e, optuna.TrialPruned):
                for i in ids[:1] + ([parent] if spec.repeats > 1 else []):
                    tracking.set_run_tags(i, {"pruned": "true", "pruned_at": str(e)}, w.tracking_uri)
            if spec.repeats > 1:
                tracking.end_run(parent, "KILLED" if isinstance(e, optuna.TrialPruned) else "FAILED", w.tracking_uri)
            raise
        if spec.repeats == 1:
            trial.set_user_attr("mlflow_run_id", r.run_id)
        if r.status != "FINISHED":
            if spec.repeats > 1:
                tracking.end_run(parent, "FAILED", w.tracking_uri)
            raise RuntimeError(f"run {r.run_id} {r.status}: {r.failure_reason}")
        results.append(objective_values(spec, r.summary, r.history))
    values = [sum(col) / len(col) for col in zip(*results)]
    if spec.repeats > 1:
        tracking.log_run_data(parent, w.tracking_uri, metrics=_spread(spec.metrics, results))
        tracking.end_run(parent, "FINISHED", w.tracking_uri)
    return values if len(values) > 1 else values[0]


def _spread(metrics: list[str], results: list[list[float]]) -> dict[str, float]:
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


def _pruning_hook(trial: optuna.Trial, seed_index: int, epochs: int):
    def on_epoch(epoch: int, metrics: dict) -> None:
        # step counts epochs across the trial's seeds: seed k's epoch e is step k*epochs+e.
        trial.report(metrics["test_acc"], seed_index * epochs + epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch} of seed index {seed_index}")
    return on_epoch


def _print_trial(spec: StudySpec, t) -> None:
    vals = "" if not t.values else " " + " ".join(f"{m}={v:.4g}" for m, v in zip(spec.metrics, t.values))
    run = t.user_attrs.get("mlflow_run_id", "-")
    print(f"[{spec.name}] trial {t.number} {t.state.name}{vals} params={t.params} run={run}", flush=True)


def _worker_main(w: Worker) -> None:  # the target of each spawned worker process
    work(w)
    from .engine import STOP

    STOP.install()  # SIGTERM/SIGINT: the trial's run ends KILLED at a batch boundary, the trial is re-queued
    try:
        work(w)
    except UserError as e:
        print(f"googlenet-study sweep: worker {w.index}: error: {e}", file=sys.stderr)
        sys.exit(2)
    if STOP():
        sys.exit(128 + STOP.signum)


# ---- the command ----------------------------------------------------------------------------
def plan_workers(spec: StudySpec, n: int, storage: str, uri: str, parent: str, experiment: str,
                 created: bool) -> list[Worker]:
    """N workers: CPU cores split between them (unless threads is set), one GPU each where there are GPUs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
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
    spec = study_mod.load(args.file, args.set, args.n_trials)  # every UserError of the file comes first
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.workers < 1:
        raise UserError(f"--workers: must be an integer >= 1, got {args.workers}")
    uri = tracking.tracking_uri(args.tracking_uri)
    storage_url = args.storage or default_storage(uri)
    storage = open_storage(storage_url, spec.max_retries)
    st, created = create_or_join(spec, storage, uri, storage_url)
    parent, experiment = st.user_attrs[PARENT], st.user_attrs[EXPERIMENT]
    if tracking.run_experiment(parent, uri) is None:
        raise UserError(f"study {spec.name!r}'s parent run {parent} is not in {tracking.redact(uri)}; "
                        "use the --tracking-uri of the study's first run")
    own = os.environ.get("MLFLOW_RUN_ID")
    if own and own != parent:  # `mlflow run` made a run for us but the study already has its parent
        tracking.set_run_tags(own, {"joined_parent_run_id": parent, "study_name": spec.name}, uri)
    workers = plan_workers(spec, args.workers, storage_url, uri, parent, experiment, created)
    print(f"[{spec.name}] {'created' if created else 'joined'} study in {tracking.redact(storage_url)}; "
          f"parent run {parent} (experiment {experiment!r}); {len(workers)} worker(s), "
          f"{dict(workers[0].fixed) or 'config as given'}", flush=True)
    bad: list = []
    if len(workers) == 1:
        work(workers[0])
    else:
        ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch/MLflow state
        procs = [ctx.Process(target=_worker_main, args=(w,), name=f"sweep-worker-{w.index}") for w in workers]
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            procs[0].join(timeout=1.0) if procs[0].is_alive() else time.sleep(1.0)
            if _stopping():  # pass the signal on: each worker ends its trial's run KILLED
                for p in procs:
                    if p.is_alive():
                        p.terminate()
                for p in procs:
                    p.join()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            print(f"[{spec.name}] {len(bad)} worker(s) exited with status {bad}", file=sys.stderr)
    from . import sweep_results

    if _stopping():
        from .engine import STOP
        print(f"[{spec.name}] stopped by signal {STOP.signum}; run the same command again to resume", file=sys.stderr)
        return 128 + STOP.signum

    res = sweep_results.finish(optuna.load_study(study_name=spec.name, storage=storage), spec, parent, uri)
    print(f"[{spec.name}] {res['complete']} complete, {res['pruned']} pruned, {res['fail']} failed"
          + ("" if res["done"] else f", {res['running']} running and {res['waiting']} waiting elsewhere"),
          flush=True)
    code = 1 if bad else 0
    # ---- REPORT HOOK: the report (googlenet_study.report, another issue) of the finished study.
    if res["done"] and not args.no_report and code == 0:
        code = _report(spec, experiment, parent, uri)
    return code


def _report(spec: StudySpec, experiment: str, parent: str, uri: str) -> int:
    import argparse
    import importlib.util

    if importlib.util.find_spec("googlenet_study.report") is None:
        print(f"[{spec.name}] no report: googlenet_study.report is not installed", file=sys.stderr)
        return 0
    from . import report

    return report.main(argparse.Namespace(experiment=experiment, study=spec.name, parent_run=None, filter=None,
                                          targets=None, out=None, tracking_uri=uri))
