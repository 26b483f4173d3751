"""One run, end to end: config -> data -> model -> engine, recorded by tracking.

`train()` is what `googlenet-study train`, `reproduce` and every sweep trial call. Everything
that can reject user input (config, data set, weights) runs before an MLflow run exists."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from . import data as data_mod
from . import engine, model
from .config import RunConfig
from .engine import Hooks, Interrupted, NonFiniteLoss


@dataclass
class RunResult:
    run_id: str
    status: str                               # FINISHED | FAILED | KILLED
    history: list[dict] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    failure_reason: str | None = None


def train(cfg: RunConfig, tracking_uri: str | None = None, experiment: str = "googlenet-study",
          parent_run_id: str | None = None, run_name: str | None = None, tags: dict | None = None,
          hooks: Hooks | None = None, run_id: str | None = None, resume: dict | None = None,
          reraise: tuple[type[BaseException], ...] = ()) -> RunResult:
    """Train `cfg` and record it; exceptions in `reraise` end the run KILLED and propagate."""
    from . import tracking  # mlflow is heavy; config errors should not wait for it

    cfg = cfg.resolve()
    engine.seed_everything(cfg)
    dataset = data_mod.load(cfg)
    net, weights = model.build(cfg)
    total, trainable = model.count_params(net)
    run = tracking.MlflowRun(cfg, tracking_uri, experiment, parent_run_id, run_name, tags, run_id=run_id)
    hooks = hooks or Hooks()
    result = RunResult(run.run_id, "RUNNING")
    try:
        run.log_start({**cfg.to_params(), "total_params": total, "trainable_params": trainable},
                      tracking.provenance_tags(cfg, dataset.digest, weights), model.parameter_table(net),
                      model.first_conv_weight(net))
        result.history, result.summary = engine.fit(cfg, dataset, net, run, hooks, resume=resume)
        run.log_summary(result.summary, result.history, model.first_conv_weight(net))
        result.status = "FINISHED"
    except reraise as e:
        result.status = "KILLED"
        run.set_tags({"end_reason": type(e).__name__})
        raise
    except Interrupted:
        result.status = "KILLED"
        run.set_tags({"end_reason": "interrupted by a signal; resume continues this run"})
    except NonFiniteLoss as e:
        result.status, result.failure_reason = "FAILED", str(e)
        run.set_tags({"failure_reason": str(e), "failure_epoch": str(e.epoch), "failure_batch": str(e.batch)})
    except BaseException as e:  # noqa: BLE001 - any crash must still end the run honestly
        result.status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        result.failure_reason = f"{type(e).__name__}: {e}"
        run.set_tags({"failure_reason": result.failure_reason[:4000],
                      "failure_traceback": traceback.format_exc()[-4000:]})
        raise
    finally:
        run.end(result.status if result.status != "RUNNING" else "FAILED")
    return result
