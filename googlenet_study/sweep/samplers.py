"""A sweep's samplers: SAMPLERS maps each `sampler:` name of a study file to the Optuna sampler a worker
builds from its seed (the study's sampler_seed + the worker's index: sweep/processes.py). The study file
takes its allowed names from this table (sweep/study_file.py), so a name it accepts always has a sampler."""

from __future__ import annotations

from typing import Callable

import optuna

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    # Every grid point is an enqueued trial (its params fixed) and a trial beyond the queue is surplus
    # (sweep/worker.py), so this sampler is never asked for a value: the cheapest seeded one.
    "grid": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    # multivariate: models the searched fields jointly (batch size and lr interact), not one at a time.
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),  # several objectives: a Pareto front
}
GRID = "grid"  # the one that searches lists only, every point once; the study file's default when all are lists


def make(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for a study file's `sampler:` (validated by sweep/study_file.py against SAMPLERS)."""
    return SAMPLERS[name](seed)
