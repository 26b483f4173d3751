"""The one rule for "reached target P": an epoch whose test accuracy (a fraction) is at least P / 100.

Written once, here, for the three places that read it: the training loop's summary metric
time_to_test_acc_P (engine.summarize), the report's per-run times (report/stats.per_run) and the race's runs
from curves (racing.runs_from_curves). A NaN accuracy (a missing evaluation) never reaches a target. Numpy
only: the training loop imports this without scipy or pandas."""

from __future__ import annotations

import numpy as np

# An accuracy of 0.8 logged for 80 % counts: P / 100 and correct / total can differ in the last bit.
TOLERANCE = 1e-12


def at_target(acc, p: float) -> np.ndarray:
    """Per epoch (acc: test accuracies as fractions), whether it is at or above target p % (NaN: False)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(acc, dtype=float) >= p / 100 - TOLERANCE


def first_at_target(acc, p: float) -> int | None:
    """Index of the first epoch at or above target p % (None: never reached)."""
    hit = np.flatnonzero(at_target(acc, p))
    return int(hit[0]) if len(hit) else None


def reached(p: float) -> str:
    """The per-run column (runs.csv, the race's runs): whether a run reached test accuracy p % (True even when
    its time is left out)."""
    return f"reached_{p:g}"
