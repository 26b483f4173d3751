"""A sweep's pruners: PRUNERS (below) maps each `pruner:` name of a study file to its Optuna pruner.
One of them is this module's own, pruning by wall-clock seconds: `pruner: wallclock_median`.

Optuna's pruners compare trials at the same *step* (here: epoch). This tool asks which trial converges
fastest per *second*, and a configuration whose epochs take 3x longer reaches a given epoch 3x later:
at equal accuracy per epoch it is worse per second, and a step-based pruner never sees it. This pruner
compares at the same elapsed seconds instead (each trial's `elapsed_time_s`, the study's clock).

Each trial records its curve in the Optuna user attribute CURVE_ATTR: [[step, elapsed_s, test_acc], ...]
(`report`). A finished trial's curve is a step function of elapsed seconds: at t it has the accuracy of
its last epoch that ended by t, also after its last epoch (it stays what it reached); before its first
epoch it has none and does not count. A trial is pruned at an epoch end at t when its best accuracy so
far (as Optuna's MedianPruner takes it) is below the median of the other finished trials' at t — once
at least N_STARTUP_TRIALS finished trials have a value at t, and only after a warm-up of t > warmup_s
seconds (default: the trial's own first epoch, so no trial is pruned at its first epoch end)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

CURVE_ATTR = "acc_by_elapsed_s"  # Optuna user attr: [[step, elapsed_s, test_acc], ...] in step order
N_STARTUP_TRIALS = 3             # finished trials before anything is pruned (as this tool's median pruner)


def report(trial: optuna.Trial, step: int, acc: float, elapsed_s: float, seed_first_step: int = 1) -> None:
    """Report test accuracy at `step` to Optuna and add (step, trial seconds, acc) to the trial's curve.

    `elapsed_s` is the run's own clock; with repeats the trial's seeds run one after another, so a
    seed whose first step is `seed_first_step` starts at the seconds its earlier seeds ended at."""
    curve = [p for p in trial.user_attrs.get(CURVE_ATTR, []) if p[0] != step]  # a resumed epoch replaces
    offset = max((s for st, s, _ in curve if st < seed_first_step), default=0.0)
    curve = sorted(curve + [[step, offset + float(elapsed_s), float(acc)]])
    trial.set_user_attr(CURVE_ATTR, curve)  # before report(): should_prune() reads both from storage
    trial.report(acc, step)


def acc_at(curve: list[list[Any]], t: float) -> float | None:
    """A curve's accuracy at t seconds: that of its last epoch ended by t; None before its first."""
    ended = [(s, acc) for _, s, acc in curve if s <= t]
    return max(ended)[1] if ended else None


class WallclockMedianPruner(optuna.pruners.BasePruner):
    """Prune a trial whose best test accuracy so far is below the median of the finished trials'
    accuracies at the same elapsed seconds (after `warmup_s`; None: the trial's first epoch)."""

    def __init__(self, warmup_s: float | None = None, n_startup_trials: int = N_STARTUP_TRIALS) -> None:
        self.warmup_s, self.n_startup_trials = warmup_s, n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        curve = trial.user_attrs.get(CURVE_ATTR) or []
        if not curve:
            return False
        now = curve[-1][1]
        warmup = curve[0][1] if self.warmup_s is None else self.warmup_s
        if now <= warmup:
            return False
        others = [acc_at(t.user_attrs.get(CURVE_ATTR) or [], now)
                  for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.number != trial.number]
        others = [a for a in others if a is not None and math.isfinite(a)]
        if len(others) < self.n_startup_trials:
            return False
        best = max(acc for _, _, acc in curve)  # accuracy: higher is better, whatever the objective
        return best < statistics.median(others)


# ---- the study file's `pruner:` names -----------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """What a `pruner:` name means: its Optuna pruner, made from the trial's steps (epochs x repeats) and
    the study's pruner_warmup_s (seconds, or None); and whether it compares trials by clock seconds."""
    make: Callable[[int, float | None], optuna.pruners.BasePruner]
    by_clock: bool = False  # report (step, elapsed seconds, accuracy) through report(), not step alone


NONE = "none"
BY_CLOCK = "wallclock_median"  # the one that takes pruner_warmup_s
PRUNERS: dict[str, Kind] = {
    NONE: Kind(lambda steps, warmup_s: optuna.pruners.NopPruner()),
    # Optuna's default warm-up (none); 3 finished trials before anything is pruned.
    "median": Kind(lambda steps, warmup_s: optuna.pruners.MedianPruner(n_startup_trials=N_STARTUP_TRIALS,
                                                                         n_warmup_steps=0)),
    "hyperband": Kind(lambda steps, warmup_s: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=steps)),
    BY_CLOCK: Kind(lambda steps, warmup_s: WallclockMedianPruner(warmup_s=warmup_s), by_clock=True),
}


def make(name: str, steps: int, warmup_s: float | None = None) -> optuna.pruners.BasePruner:
    """The Optuna pruner for a study file's `pruner:` (validated by sweep/study_file.py against PRUNERS)."""
    return PRUNERS[name].make(steps, warmup_s)


def prunes(name: str) -> bool:
    return name != NONE


def by_clock(name: str) -> bool:
    return PRUNERS[name].by_clock
