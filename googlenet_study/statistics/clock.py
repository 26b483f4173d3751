"""The clocks a report or a race reads times on, as the per-epoch rows carry them (pandas in, pandas out).

`epoch`: elapsed_time_s, training + evaluation as recorded; `train`: cumulative training seconds only
(AlgoPerf: evaluation is off the clock). Here, below the report and the race, so that the race's decision
reads its runs the report's way without importing the report."""

from __future__ import annotations

import pandas as pd

from .. import schema

CLOCKS = {"epoch": schema.CLOCK,   # elapsed_time_s: training + evaluation, as recorded
          "train": schema.TRAIN_TIME}  # cumulative training seconds only (AlgoPerf: evaluation is off the clock)


def on_clock(epochs: pd.DataFrame, clock: str) -> pd.DataFrame:
    """The per-epoch rows in (run, epoch) order with clock_s: the seconds on `clock` (CLOCKS) at each epoch end."""
    e = epochs.sort_values(["run_id", "epoch"])
    return e.assign(clock_s=e[schema.CLOCK] if clock == "epoch" else e.groupby("run_id")[CLOCKS[clock]].cumsum())
