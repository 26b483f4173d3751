"""The clocks a report or a race reads times on, one value each (pandas in, pandas out).

A Clock says everything the report needs about one `--clock NAME`: the per-epoch metric it reads, whether
that metric is already cumulative seconds or per-epoch seconds to add up, and the words the report prints
(Scope and Method, headers, figure axes). Code reads those fields and never compares a clock's name, so a new
clock is one more Clock value (issue 28's `timestamps` and `metric:NAME`: a `metric:NAME` clock is built from
NAME by `parse`, cumulative seconds read as they are).

`epoch`: elapsed_time_s, training + evaluation as recorded; `train`: cumulative training seconds only
(AlgoPerf: evaluation is off the clock). Here, below the report and the race, so that the race's decision
reads its runs the report's way without importing the report."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .. import schema
from ..config import UserError


@dataclass(frozen=True)
class Clock:
    name: str          # as `--clock` spells it
    metric: str        # the per-epoch column it reads (a run without a value at some epoch is not timed)
    cumulative: bool   # True: `metric` is seconds since the run's start; False: seconds per epoch, summed
    words: str         # Scope's and Method's line: "epoch: elapsed_time_s, ..."
    axis: str          # a figure's x label: "elapsed wall-clock time (s; training + evaluation)"
    measures: str      # what its seconds are, in a figure's title: "wall-clock time" | "training time"

    @property
    def label(self) -> str:
        """How a header or a sentence names it: 'epoch clock'."""
        return f"{self.name} clock"


EPOCH = Clock("epoch", schema.CLOCK, cumulative=True,
              words="epoch: elapsed_time_s, the sum of epoch times (training + evaluation), as recorded",
              axis="elapsed wall-clock time (s; training + evaluation)", measures="wall-clock time")
TRAIN = Clock("train", schema.TRAIN_TIME, cumulative=False,
              words="train: cumulative train_time_s (training only; evaluation is off the clock, as in AlgoPerf)",
              axis="training time (s; evaluation off the clock)", measures="training time")
TIMESTAMP_COLUMN = "timestamp_s"  # the report's column for the timestamps clock (not an MLflow metric)
TIMESTAMPS = Clock("timestamps", TIMESTAMP_COLUMN, cumulative=True,
                   words="timestamps: seconds from each run's start_time to the MLflow timestamp of each accuracy "
                         "value (any tool's runs; downtime within a run counts)",
                   axis="seconds since the run's start (MLflow timestamps)", measures="wall-clock time")
CLOCKS = {c.name: c for c in (EPOCH, TRAIN, TIMESTAMPS)}  # --clock NAME -> its Clock, in --help's order
METRIC_PREFIX = "metric:"  # --clock metric:NAME: a cumulative-seconds metric NAME, logged at the accuracy's steps


def metric_clock(name: str) -> Clock:
    """`--clock metric:NAME`: NAME read as cumulative seconds (report.reading checks it never goes down)."""
    return Clock(f"{METRIC_PREFIX}{name}", name, cumulative=True,
                 words=f"{METRIC_PREFIX}{name}: {name}, cumulative seconds as logged at each accuracy value's step",
                 axis=f"{name} (s, as logged)", measures="time")


def parse(name: str) -> Clock:
    """The Clock `--clock NAME` names; an unknown name is one line naming the allowed ones."""
    if name.startswith(METRIC_PREFIX) and name[len(METRIC_PREFIX):].strip():
        return metric_clock(name[len(METRIC_PREFIX):].strip())
    if name not in CLOCKS:
        raise UserError(f"--clock: got {name!r}; allowed: {' | '.join(CLOCKS)} | {METRIC_PREFIX}NAME "
                        f"(a cumulative-seconds metric)")
    return CLOCKS[name]


def on_clock(epochs: pd.DataFrame, clock: Clock) -> pd.DataFrame:
    """The per-epoch rows in (run, epoch) order with clock_s: the seconds on `clock` at each epoch end."""
    e = epochs.sort_values(["run_id", "epoch"])
    return e.assign(clock_s=e[clock.metric] if clock.cumulative else e.groupby("run_id")[clock.metric].cumsum())
