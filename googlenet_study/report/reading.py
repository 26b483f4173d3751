"""Report stage 1, the runs' schema: how a run's metric histories become the report's per-epoch rows.

This tool's runs are read as logged (test_acc, elapsed_time_s, ... per epoch). Another tool's runs — Lightning's
MLFlowLogger, mlflow.pytorch.autolog, a hand-written loop with mlflow.log_metric — are read by what the user
names (docs/reports.md, "Your own runs"): `--accuracy-metric` (a fraction per step), `--clock timestamps` (MLflow's
own timestamp of each accuracy value, from the run's start_time) or `--clock metric:NAME` (cumulative seconds
logged at the accuracy's steps), `--by` (the params that make a configuration) and `--seed-param`. Every stage
after this one sees the same columns for both kinds: the accuracy in schema.ACCURACY, the clock in its metric."""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..config import UserError
from ..statistics.clock import EPOCH, TIMESTAMP_COLUMN, Clock

MAX_LISTED = 25  # names an error lists before "..." (an experiment may hold hundreds of metric keys)


@dataclass(frozen=True)
class Reading:
    """What the user said about the runs' schema; the defaults read this tool's runs."""
    accuracy: str = schema.ACCURACY          # --accuracy-metric: per-step accuracy, a fraction in [0, 1]
    clock: Clock = EPOCH                     # --clock
    by: tuple[str, ...] | None = None        # --by: the configuration's params; None: every param that varies
    seed_param: str | None = None            # --seed-param; None: "seed" (no error when no run has it)

    @property
    def seed(self) -> str:
        return self.seed_param or "seed"

    @property
    def as_logged(self) -> bool:
        """This tool's schema as it is: rows keyed by the logged epoch, every per-epoch metric kept."""
        return self.accuracy == schema.ACCURACY

    def keys(self, run: dict, logged: list[str]) -> list[str]:
        """The metric keys to fetch for `run`, of those it logged (`logged`): all of them for this tool's
        runs, and for any run read in this tool's schema (test_acc on a clock of its own metrics); for another
        tool's runs read by --accuracy-metric or --clock, only the accuracy and the clock (a Lightning run may
        log thousands of per-batch losses that the report never reads)."""
        if is_ours(run) or (self.as_logged and self.clock.metric in schema.EPOCH_METRICS):
            return logged
        return [k for k in (self.accuracy, self.clock.metric) if k in logged]

    def required(self, run: dict) -> tuple[str, ...]:
        """Per-epoch metrics without which a run is left out (listed under excluded runs)."""
        if is_ours(run) and self.as_logged:
            return schema.REQUIRED_EPOCH_METRICS
        return (self.accuracy,) + ((self.clock.metric,) if self.clock.metric != TIMESTAMP_COLUMN else ())


def is_ours(run: dict) -> bool:
    """A run this tool logged: every training run it starts carries its config_hash tag."""
    return schema.CONFIG_HASH_TAG in run["tags"]


def rows(run: dict, history: dict[str, list], reading: Reading) -> list[dict]:
    """The run's per-epoch rows: {run_id, epoch, metric: value, timestamp_s}. This tool's runs keep the logged
    epoch (a resumed run may re-log one: the last value wins). Otherwise the k-th accuracy value, in step
    order, is epoch k, and every other metric is taken at that value's step. timestamp_s (the timestamps
    clock, whichever clock was asked for) is the seconds from the run's start_time to the MLflow timestamp
    of the accuracy value."""
    if reading.as_logged and is_ours(run):
        by_epoch: dict[int, dict] = {}
        for k, points in history.items():
            for step, value, ts in points:
                by_epoch.setdefault(step, {})[k] = value
                if k == schema.ACCURACY:
                    by_epoch[step][TIMESTAMP_COLUMN] = (ts - run["start_time"]) / 1000.0  # ms -> s
        return [{"run_id": run["run_id"], "epoch": e, **v} for e, v in sorted(by_epoch.items())]
    acc = {step: (value, ts) for step, value, ts in history.get(reading.accuracy, [])}  # last per step wins
    at = {k: {step: value for step, value, _ in pts} for k, pts in history.items() if k != reading.accuracy}
    out = []
    for epoch, step in enumerate(sorted(acc), start=1):
        value, ts = acc[step]
        row = {"run_id": run["run_id"], "epoch": epoch, **{k: v[step] for k, v in at.items() if step in v},
               schema.ACCURACY: value, TIMESTAMP_COLUMN: (ts - run["start_time"]) / 1000.0}
        out.append(row)
    return out


def check(runs: list[dict], histories: dict[str, dict], reading: Reading) -> None:
    """One line (UserError) for a metric or param the user named that the runs in scope do not have, and for a
    metric: clock that is not cumulative seconds; before anything is written."""
    logged = sorted({k for r in runs for k in r["metrics"] if not k.startswith("system/")})
    if reading.accuracy not in logged:
        raise UserError(f"--accuracy-metric: no run in scope logged {reading.accuracy!r}; "
                        f"metrics logged: {_listed(logged)}")
    clock = reading.clock
    if clock.name.startswith("metric:"):
        if clock.metric not in logged:
            raise UserError(f"--clock {clock.name}: no run in scope logged {clock.metric!r}; "
                            f"metrics logged: {_listed(logged)}")
        if clock.metric == reading.accuracy:
            raise UserError(f"--clock {clock.name}: that is the accuracy metric, not cumulative seconds")
        for r in runs:
            pts = sorted(histories.get(r["run_id"], {}).get(clock.metric, []))
            for (s0, v0, _), (s1, v1, _) in zip(pts, pts[1:]):
                if v1 < v0:
                    raise UserError(f"--clock {clock.name}: {clock.metric} is not cumulative seconds: in run "
                                    f"{r['run_name']!r} it goes down from {v0:g} (step {s0}) to {v1:g} (step {s1})")
            if pts and pts[0][1] < 0:
                raise UserError(f"--clock {clock.name}: {clock.metric} is not cumulative seconds: in run "
                                f"{r['run_name']!r} it is {pts[0][1]:g} at step {pts[0][0]}")
    params = sorted({k for r in runs for k in r["params"]})
    for name, what in [*((b, "--by") for b in reading.by or ()),
                       *([(reading.seed_param, "--seed-param")] if reading.seed_param else [])]:
        if name not in params:
            raise UserError(f"{what}: no run in scope has param {name!r}; params: {_listed(params)}")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:MAX_LISTED]) + (f", ... ({len(names)} in all)" if len(names) > MAX_LISTED else "") \
        if names else "none"


def config_params(runs: list[dict], reading: Reading, known: list[str], not_config: set[str]
                  ) -> tuple[list[str], list[str]]:
    """(the configuration's params, params left out because their value differs in every run). With --by,
    its params; else every param (but the seed and NOT_CONFIG), this tool's fields first. A param this tool
    does not know whose value differs in every run (a log_dir, a run's output path) would make each run its
    own configuration: it is left out, and Scope names it and suggests --by."""
    if reading.by is not None:
        return list(reading.by), []
    names = {k for r in runs for k in r["params"]} - not_config - {reading.seed}
    unique = sorted(p for p in names if p not in known and len(runs) >= 2
                    and len({r["params"].get(p) for r in runs}) == len(runs))
    params = sorted(names - set(unique), key=lambda k: (known.index(k) if k in known else 99, k))
    return params, unique
