"""One run, end to end: config -> data -> model -> engine, recorded by tracking.

`train()` is what `googlenet-study train`, `reproduce` and every sweep trial call. Everything
that can reject user input (config, data set, weights, checkpoint) runs before an MLflow run
is created or reopened."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoint as ckpt
from . import data as data_mod
from . import budget, engine, feature_cache, model, schema
from .config import RunConfig, UserError
from .device import place
from .engine import Hooks, Interrupted, NonFiniteLoss


@dataclass
class RunResult:
    run_id: str
    status: str                               # FINISHED | FAILED | KILLED
    history: list[dict] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    failure_reason: str | None = None
    resumed_from_epoch: int = 0               # epochs already done when this process took over


@dataclass(frozen=True)
class RunOptions:
    """How train() places, continues and ends a run, beyond its config and its store (defaults: a fresh
    top-level run of `googlenet-study train`)."""
    parent_run_id: str | None = None          # a sweep trial's: the run is nested under it
    run_name: str | None = None               # None: MLflow names it
    tags: dict | None = None                  # set at the start (a sweep's study/trial tags, reproduce's)
    hooks: Hooks | None = None                # per-epoch callbacks and the stop check (engine.Hooks)
    resume: ckpt.Resume = ckpt.AUTO           # AUTO: this config's unfinished run, if any; NEVER; or a run id
    checkpoint_dir: str | Path | None = None  # None: beside the tracking store (ckpt.default_dir)
    keep_checkpoints: bool = False            # keep a FINISHED run's checkpoint (else it is removed)
    reraise: tuple[type[BaseException], ...] = ()  # end the run KILLED and propagate (a trial's pruning, outages)


@dataclass
class _Ready:
    """Everything a run needs that can reject input, made before the MLflow run is created or reopened."""
    cfg: RunConfig
    uri: str
    root: Path                                # the checkpoints' folder
    dataset: data_mod.Dataset
    net: model.Network
    weights: model.WeightsInfo
    state: ckpt.TrainingState | None          # what a resumed run continues from; None: a fresh run
    cache: feature_cache.Cache | None         # a frozen trunk's features, shared between runs
    cache_tags: dict[str, str]


def train(cfg: RunConfig, tracking_uri: str | None = None, experiment: str = "googlenet-study",
          options: RunOptions = RunOptions()) -> RunResult:
    """Train `cfg` and record it in `experiment` of the store at `tracking_uri`; exceptions in
    options.reraise end the run KILLED and propagate. Every way it ends maps to a run status below.

    options.resume: ckpt.AUTO (continue this config's unfinished run from its checkpoint, if any), ckpt.NEVER,
    or ckpt.Resume.parse(run_id) to continue that run (the caller decides: cli.py parses --resume)."""
    from . import tracking  # mlflow is heavy; config errors should not wait for it

    r = _prepare(cfg, tracking_uri, experiment, options)
    run = tracking.MlflowRun(r.cfg, r.uri, experiment, options.parent_run_id, options.run_name, options.tags,
                             run_id=r.state.run.run_id if r.state else None)
    filters_before = r.state.run.filters_before if r.state else model.first_conv_weight(r.net)
    saver = ckpt.RunCheckpoint(ckpt.path_for(r.root, r.cfg, run.run_id),
                               ckpt.RunIdentity.of(r.cfg, run.run_id, options.parent_run_id, filters_before))
    result = RunResult(run.run_id, "RUNNING", resumed_from_epoch=r.state.epoch if r.state else 0)
    store_full = False  # the tracking store's disk filled up: not even the run's end can be written
    try:
        _log_start(run, r, saver, filters_before)
        result.history, result.summary = _fit(run, r, saver, options.hooks)
        result.status = "FINISHED"
    except options.reraise as e:
        result.status = "KILLED"
        run.set_tags({schema.END_REASON_TAG: getattr(e, "end_reason", type(e).__name__)})  # outage.Unavailable has one
        raise
    except Interrupted:
        result.status = "KILLED"
        run.set_tags({schema.END_REASON_TAG: "stopped by a signal; `--resume auto` continues this run"})
    except engine.NoSpace as e:  # the epoch is logged; the user frees space and resumes
        result.status, result.failure_reason = "FAILED", str(e)
        run.set_tags({schema.FAILURE_REASON_TAG: str(e)})
    except NonFiniteLoss as e:
        result.status, result.failure_reason = "FAILED", str(e)
        run.set_tags({schema.FAILURE_REASON_TAG: str(e), schema.FAILURE_EPOCH_TAG: str(e.epoch),
                      schema.FAILURE_BATCH_TAG: str(e.batch)})
    except BaseException as e:  # noqa: BLE001 - any crash must still end the run honestly
        full = tracking.full_store(e, r.uri)
        if full is not None:  # it stays RUNNING in MLflow, its writer gone: `--resume auto` continues it
            store_full = True
            raise UserError(f"tracking-uri: {full}; run {run.run_id} is left RUNNING (the store takes no more "
                            "writes): free some space and run the same command again (it resumes the run from "
                            "its checkpoint, if one was written)") from None
        result.status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        result.failure_reason = f"{type(e).__name__}: {e}"
        run.set_tags({schema.FAILURE_REASON_TAG: result.failure_reason[:4000],
                      schema.FAILURE_TRACEBACK_TAG: traceback.format_exc()[-4000:]})
        raise
    finally:
        if store_full:
            run.end_unrecorded()
        else:
            run.end(result.status if result.status != "RUNNING" else "FAILED")
        if result.status == "FINISHED" and not options.keep_checkpoints:
            ckpt.remove(saver.path)
    return result


def _prepare(cfg: RunConfig, tracking_uri: str | None, experiment: str, options: RunOptions) -> _Ready:
    """Every check that can reject input, in order, and what it made: nothing is recorded yet."""
    from . import tracking

    cfg = cfg.resolve()
    budget.check_fits(cfg)  # memory of a step and threads against this machine, before any data or run
    uri = tracking.tracking_uri(tracking_uri)
    tracking.check_tracking_uri(uri)
    root = Path(options.checkpoint_dir) if options.checkpoint_dir else ckpt.default_dir(uri)
    engine.seed_everything(cfg)
    dataset = data_mod.load(cfg)
    net, weights = model.build(cfg)
    state = _resume_state(cfg, uri, root, options.resume, options.parent_run_id, net)
    tracking.experiment_id(tracking.client(uri), experiment, create=False)  # a deleted one: a line, not a trace
    cache, cache_tags = feature_cache.obtain(cfg, net, dataset, root)  # a frozen run's features, shared
    return _Ready(cfg, uri, root, dataset, net, weights, state, cache, cache_tags)


def _log_start(run, r: _Ready, saver: ckpt.RunCheckpoint, filters_before) -> None:
    """Params, provenance and the start's artefacts; a resumed run's missing epochs, a fresh one's cache charge."""
    total, trainable = model.count_params(r.net)
    run.log_start({**r.cfg.to_params(), schema.TOTAL_PARAMS: total, schema.TRAINABLE_PARAMS: trainable},
                  _start_tags(r, saver),
                  model.parameter_table(r.net), filters_before)
    if r.state:  # the earlier stop's reason no longer describes how this run ends, nor its cache warning this one
        run.clear_tags(schema.END_TAGS + tuple(k for k in schema.FEATURE_CACHE_TAGS if k not in r.cache_tags))
        run.log_missing_epochs(r.state.history, r.state.epoch_ended_ms)
    elif r.cache is not None:  # step 0, once: a resumed run has it, and its charge in the checkpointed history
        run.log_epoch(0, {schema.FEATURE_CACHE_BUILD_S: r.cache.build_s})


def _start_tags(r: _Ready, saver: ckpt.RunCheckpoint) -> dict[str, str]:
    """The tags a run starts with: provenance, how the model runs, the feature cache, its checkpoint, where
    it resumed."""
    from . import tracking

    return {**tracking.provenance_tags(r.cfg, r.dataset.digest, r.weights), **model.speed_tags(r.net),
            **r.cache_tags, schema.CHECKPOINT_TAG: str(saver.path), **(_resume_tags(r.state) if r.state else {})}


def _fit(run, r: _Ready, saver: ckpt.RunCheckpoint, hooks: Hooks | None) -> tuple[list[dict], dict[str, float]]:
    """The epochs (engine.fit, from the checkpoint when resumed), then the summary and end-of-run artefacts."""
    train_b, test_b = (r.cache.batches if r.cache else data_mod.batches)(r.cfg, r.dataset, place(r.cfg, r.net))
    history, summary = engine.fit(r.cfg, r.net, train_b, test_b, run, hooks, resume=r.state, checkpoint=saver)
    run.log_summary(summary, history, model.first_conv_weight(r.net))
    return history, summary


def _resume_tags(state: ckpt.TrainingState) -> dict[str, str]:
    """Where this process took over: the next epoch, and the next batch when a signal stopped mid-epoch."""
    tags = {schema.RESUMED_AT_EPOCH_TAG: str(state.epoch + 1)}
    if state.partial is not None:
        tags[schema.RESUMED_AT_BATCH_TAG] = str(state.partial.batch + 1)
    return tags


def _resume_state(cfg: RunConfig, uri: str, root: Path, resume: ckpt.Resume, parent_run_id: str | None,
                  net=None) -> ckpt.TrainingState | None:
    """The checkpoint to continue from, or None for a fresh run; checked against `net`'s tensors."""
    from . import tracking

    if resume.run_id is not None:  # an explicit run id (32 hex digits: Resume.parse checked it)
        path = ckpt.find_by_run_id(root, resume.run_id)
        if path is None:
            raise UserError(f"resume: no checkpoint for run {resume.run_id} under {root}; "
                            f"allowed: auto | never | the id of a run with a checkpoint there")
        if tracking.run_status(uri, resume.run_id) == "FINISHED":  # before the file is read: it is not used
            raise UserError(f"resume: run {resume.run_id} already FINISHED; use --resume never for a new run")
        return ckpt.load(path, cfg, net)
    if not resume.auto:
        return None
    for path in ckpt.candidates(root, cfg):
        state = ckpt.load(path, cfg, net)  # corrupt -> one-line error naming the file, never a silent fresh start
        if state.run.parent_run_id != parent_run_id:
            continue
        status = tracking.run_status(uri, state.run.run_id)
        if status in ("FAILED", "KILLED") or (status == "RUNNING" and not state.writer.alive()):
            return state
    return None
