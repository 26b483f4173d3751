"""Report stage 1, the runs' schema: how a run's metric histories become the report's per-epoch rows.

This tool's runs are read as logged (test_acc, elapsed_time_s, ... per epoch). Another tool's runs — Lightning's
MLFlowLogger, mlflow.pytorch.autolog, a hand-written loop with mlflow.log_metric — are read by what the user
names (docs/reports.md, "Your own runs"): `--accuracy-metric` (a fraction per step), `--clock timestamps` (MLflow's
own timestamp of each accuracy value, from the run's start_time) or `--clock metric:NAME` (cumulative seconds
logged at the accuracy's steps), `--by` (the params that make a configuration) and `--seed-param`. Every stage
after this one sees the same columns for both kinds: the accuracy in schema.ACCURACY, the clock in its metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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


def frame(runs: list[dict], histories: dict[str, dict], reading: Reading) -> pd.DataFrame:
    """Every run's per-epoch rows as one frame, its columns in the order of first appearance, run by run,
    epoch by epoch (as a frame of one dict per row has them). This tool's runs read as logged are pivoted in
    numpy all at once (`_logged_frame`): a Python dict per value took ~3 s for 10,000 runs x 30 epochs x 12
    metrics; another tool's runs go through `rows`."""
    order: dict[str, None] = dict.fromkeys(["run_id", "epoch"])
    logged, other = [], []
    for r in runs:
        h = histories[r["run_id"]]
        if reading.as_logged and is_ours(r):
            logged.append(r)
            present = [k for k, pts in h.items() if len(pts)]
            if not order.keys() >= {*present, *([TIMESTAMP_COLUMN] if schema.ACCURACY in present else [])}:
                order.update(dict.fromkeys(_logged_columns(h, present)))
        else:
            theirs = rows(r, h, reading)
            other += theirs
            for row in theirs:
                order.update(dict.fromkeys(row))
    parts = ([_logged_frame(logged, histories)] if logged else []) + ([pd.DataFrame(other)] if other else [])
    return pd.concat(parts, ignore_index=True)[list(order)]


def _logged_columns(history: dict[str, np.ndarray], present: list[str]) -> list[str]:
    """The columns a logged run's rows bring, in their dicts' order: a row's keys come in the history's key
    order (the accuracy's timestamp right after it), and the rows come by epoch, so a key first appears at its
    first step."""
    at = sorted(present, key=lambda k: (history[k]["step"].min(), present.index(k)))
    return [c for k in at for c in ((k, TIMESTAMP_COLUMN) if k == schema.ACCURACY else (k,))]


def _logged_frame(runs: list[dict], histories: dict[str, dict]) -> pd.DataFrame:
    """The rows of this tool's runs read as logged, all at once: one row per (run, logged epoch), a column per
    key, timestamp_s as `rows` gives it; an epoch logged again (a resumed run) keeps its last value in MLflow's
    order, and that value's timestamp."""
    groups = [(i, k, pts) for i, r in enumerate(runs) for k, pts in histories[r["run_id"]].items() if len(pts)]
    keys = list(dict.fromkeys(k for _, k, _ in groups))
    code = {k: j for j, k in enumerate(keys)}
    counts = np.array([len(pts) for _, _, pts in groups], dtype=np.int64)
    run = np.repeat(np.array([i for i, _, _ in groups], dtype=np.int64), counts)
    key = np.repeat(np.array([code[k] for _, k, _ in groups], dtype=np.int64), counts)
    p = np.concatenate([pts for _, _, pts in groups], dtype=groups[0][2].dtype)  # dtype=: no promotion per array
    o = np.lexsort((key, p["step"], run))  # stable: a (run, step, key)'s points stay in MLflow's order
    run, key, p = run[o], key[o], p[o]
    last = np.ones(len(o), dtype=bool)
    last[:-1] = (run[1:] != run[:-1]) | (p["step"][1:] != p["step"][:-1]) | (key[1:] != key[:-1])
    run, key, p = run[last], key[last], p[last]
    new_row = np.ones(len(run), dtype=bool)
    new_row[1:] = (run[1:] != run[:-1]) | (p["step"][1:] != p["step"][:-1])
    row = np.cumsum(new_row) - 1
    values = np.full((int(new_row.sum()), len(keys)), np.nan)
    values[row, key] = p["value"]
    ids = np.array([r["run_id"] for r in runs], dtype=object)
    out = {"run_id": ids[run[new_row]], "epoch": p["step"][new_row]}
    for j, k in enumerate(keys):
        out[k] = values[:, j]
        if k == schema.ACCURACY:
            at = key == j
            start = np.array([r["start_time"] for r in runs], dtype=np.int64)
            stamp = np.full(len(values), np.nan)
            stamp[row[at]] = (p["timestamp"][at] - start[run[at]]) / 1000.0  # ms -> s
            out[TIMESTAMP_COLUMN] = stamp
    return pd.DataFrame(out)


def rows(run: dict, history: dict[str, np.ndarray], reading: Reading) -> list[dict]:
    """The per-epoch rows {run_id, epoch, metric: value, timestamp_s} of a run not read as logged: the k-th
    accuracy value, in step order, is epoch k, and every other metric is taken at that value's step.
    timestamp_s (the timestamps clock, whichever clock was asked for) is the seconds from the run's start_time
    to the MLflow timestamp of the accuracy value."""
    history = {k: pts.tolist() for k, pts in history.items()}  # (step, value, timestamp_ms) tuples
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
            pts = sorted(histories.get(r["run_id"], {}).get(clock.metric, np.empty(0)).tolist())
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
