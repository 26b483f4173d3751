"""The engine's seams in memory: a Tracker and a Checkpoint without a store or a file, a stop after n batches."""

from __future__ import annotations

from googlenet_study.checkpoint import RunIdentity, TrainingState
from googlenet_study.config import RunConfig

LEARNED = ("train_loss", "train_aux_loss", "train_total_loss", "train_acc", "test_loss", "test_acc")  # not clocks


class ListTracker:
    """engine.Tracker without a store: keeps what fit logs, (epoch, metrics, timestamp ms) an epoch."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict, int]] = []

    def log_epoch(self, epoch: int, metrics: dict[str, float], timestamp_ms: int) -> None:
        self.logged.append((epoch, metrics, timestamp_ms))


class ListCheckpoint:
    """engine.Checkpoint without a file: keeps every state fit saves."""

    def __init__(self, cfg: RunConfig) -> None:
        self.run = RunIdentity.of(cfg, "in-memory", None, None)
        self.states: list[TrainingState] = []

    def save(self, state: TrainingState) -> None:
        self.states.append(state)


class StopAfter:
    """hooks.should_stop asking for a stop after the n-th batch trained (counted from 1, across epochs)."""

    def __init__(self, n: int) -> None:
        self.n, self.batches = n, 0

    def __call__(self) -> bool:
        self.batches += 1
        return self.batches == self.n
