"""Stage 4: the loop. `Learner.step` is the math of one batch; `train_one_epoch` and `evaluate` are passes
over the batches they are handed (`Batches`: images or cached features) that return dicts; `fit` is the
epoch driver and the only place that logs and checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import schema
from .checkpoint import PartialEpoch, RunIdentity, TrainingState
from .config import RunConfig
from .device import autocast, place, sync
from .model import Network
from .safe_files import out_of_space
from .schema import ACCURACY, CLOCK, time_to_target
from .statistics.target import first_at_target
from .stop import STOP


class NonFiniteLoss(RuntimeError):
    """A NaN/inf training loss; `epoch` and `batch` count from 1."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__(f"non-finite loss at epoch {epoch}, batch {batch}")
        self.epoch, self.batch = epoch, batch


class NoSpace(Exception):
    """A checkpoint could not be written for want of disk space; the epoch's metrics were logged first."""

    def __init__(self, folder: object, epoch: int | None) -> None:
        done = f"; epoch {epoch}'s metrics are logged, its checkpoint is not" if epoch else ""
        super().__init__(f"no space left on device: {folder}{done}; free some space and run the same command "
                         "again (it resumes from the last checkpoint written, if there is one)")
        self.folder = folder




def save_checkpoint(checkpoint: Checkpoint, state: TrainingState, epoch: int | None = None) -> None:
    """checkpoint.save(state); a full disk becomes NoSpace naming the folder."""
    try:
        checkpoint.save(state)
    except Exception as e:
        if not out_of_space(e):
            raise
        path = getattr(checkpoint, "path", None)
        raise NoSpace(path.parent if path is not None else "the checkpoint folder", epoch) from None


class Interrupted(Exception):
    """A stop was requested (SIGTERM/SIGINT) and the batch in flight has finished.

    `partial` is the epoch so far (next batch, running sums, clocks): `fit` checkpoints it with the
    model, optimiser and RNG states of that moment, so a resume continues at the next batch."""

    def __init__(self, partial: PartialEpoch) -> None:
        super().__init__("stopped by a signal")
        self.partial = partial


class Tracker(Protocol):
    """What the driver needs from tracking (an MLflow run in practice; a list in tests)."""
    def log_epoch(self, epoch: int, metrics: dict[str, float], timestamp_ms: int) -> None: ...


class Batches(Protocol):
    """What the loop reads: data.DeviceBatches (images) or feature_cache.FeatureBatches (a frozen trunk's
    features), made by the caller on the run's device, the way torchvision's train_one_epoch gets a loader."""
    split: Any             # len(split): the images of one pass
    batch_size: int
    device: torch.device
    on_features: bool      # batches of model.Features: the heads train (Network.heads), not the whole net
    charge_s: float        # s it took to make them (a feature cache's build), charged to epoch 1's train_time_s

    def __len__(self) -> int: ...
    def order(self, seed: int, epoch: int) -> torch.Tensor: ...
    def iterate(self, order: torch.Tensor) -> Iterator[tuple[Any, torch.Tensor]]: ...


class Checkpoint(Protocol):
    """Where `fit` saves its TrainingState (checkpoint.RunCheckpoint in practice; a list in tests)."""
    run: RunIdentity

    def save(self, state: TrainingState) -> None: ...


@dataclass(frozen=True)
class Hooks:
    """What the caller adds to a fit: callbacks after each epoch, when to stop, progress bars."""
    on_epoch: list[Callable[[int, dict[str, float]], None]] = field(default_factory=list)  # e.g. pruning
    should_stop: Callable[[], bool] = STOP
    progress: bool | None = None  # None: bars only on a terminal


class EpochEnd:
    """The epoch-end writes (checkpoint with its fsync, then the MLflow log) on a worker thread, one
    epoch at a time, while the next epoch trains: the disk and the tracking server never stall
    training (benchmarks/harness_vs_bare.py). `wait()` joins it and raises what it raised; leaving a
    `with` block waits too, except on a second signal (KeyboardInterrupt: stop now, not after the writer)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, work: Callable[[], None]) -> None:
        self.wait()  # at most one epoch in flight: checkpoints land in order

        def run() -> None:
            try:
                work()
            except BaseException as e:  # noqa: BLE001 - handed to the training thread by wait()
                self._error = e
        self._thread = threading.Thread(target=run, name="epoch-end", daemon=True)
        self._thread.start()

    def wait(self, raise_error: bool = True) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error

    def __enter__(self) -> EpochEnd:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is None:
            self.wait()
        elif not issubclass(kind, KeyboardInterrupt):
            self.wait(raise_error=False)  # the first error is the one to report


def seed_everything(cfg: RunConfig) -> None:
    """Seed every RNG and set the determinism and threading the config asks for."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # also seeds every CUDA device
    torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.backends.cudnn.deterministic = cfg.deterministic
    torch.backends.cudnn.benchmark = not cfg.deterministic  # autotuning picks kernels non-deterministically


def make_optimizer(cfg: RunConfig, net: Network) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    # fused: the same update rule in one kernel over all tensors instead of ~10 ops per tensor
    # (Adam's step 3-4x faster on CPU here; see docs/speed.md). CPU and CUDA both have it.
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, fused=True)
    return torch.optim.Adam(params, lr=cfg.lr, fused=True)


@dataclass
class Learner:
    """What a training step updates: the model, its forward (compiled or not), optimiser and loss scaler."""
    cfg: RunConfig
    net: Network
    forward: Callable  # net (images) or net.heads (cached features), or torch.compile of it: the same parameters
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # amp fp16 only
    device: torch.device

    @classmethod
    def build(cls, cfg: RunConfig, net: Network, on_features: bool = False) -> Learner:
        """`net` moved to cfg.device (in place), with the optimiser and scaler the config asks for;
        on_features: its steps take model.Features (feature_cache.FeatureBatches), not images."""
        device = place(cfg, net)
        fn = net.heads if on_features else net
        forward = torch.compile(fn) if cfg.compile else fn
        scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        return cls(cfg, net, forward, make_optimizer(cfg, net), scaler, device)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch; returns its loss and its sums (PartialEpoch.sums), detached."""
        with autocast(self.cfg, self.device):
            main, aux = self.forward(x)
            loss_main = F.cross_entropy(main, y)
            loss_aux = sum((F.cross_entropy(a, y) for a in aux), torch.zeros((), device=self.device))
            loss = loss_main + self.cfg.aux_weight * loss_aux
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        n = y.numel()
        sums = torch.stack([loss_main.detach() * n, loss_aux.detach() * n, loss.detach() * n,
                            (main.detach().argmax(1) == y).sum()]).double()
        return loss.detach(), sums


class FiniteCheck:
    """Raises NonFiniteLoss at the first NaN/inf loss of an epoch. It looks every `every` batches: each
    look is a host sync, cheap on the CPU, a stall on a GPU."""

    def __init__(self, epoch: int, every: int) -> None:
        self.epoch, self.every = epoch, every
        self.pending: list[torch.Tensor] = []  # losses not yet looked at, the last one of batch index `i`

    def add(self, loss: torch.Tensor, i: int, last: bool) -> None:
        self.pending.append(loss)
        if len(self.pending) >= self.every or last:
            self.flush(i)

    def flush(self, i: int) -> None:
        if not self.pending:
            return
        finite = torch.isfinite(torch.stack(self.pending))
        if not bool(finite.all()):
            first = i + 1 - len(self.pending)  # the batch index of pending[0]
            raise NonFiniteLoss(self.epoch, first + int((~finite).nonzero()[0]) + 1)  # batches count from 1
        self.pending.clear()


def train_one_epoch(learner: Learner, batches: Batches, hooks: Hooks, partial: PartialEpoch) -> dict:
    """One pass over the training split in the epoch's order, from `partial`'s next batch (a new epoch:
    PartialEpoch.fresh); losses are per-image means over the epoch, so a continued epoch's numbers are
    those of an uninterrupted one. Raises Interrupted, with the epoch so far, when hooks.should_stop()."""
    cfg, device, epoch = learner.cfg, batches.device, partial.epoch
    learner.net.train()
    sums, seen, data_time = partial.sums.to(device, copy=True), partial.seen, partial.data_time_s
    check = FiniteCheck(epoch, every=1 if device.type == "cpu" else 25)
    bar = tqdm(total=len(batches.split), initial=seen, desc=f"epoch {epoch}/{cfg.epochs} train", unit="img",
               leave=False, disable=_bar_disabled(hooks), dynamic_ncols=True)
    sync(device)
    t0 = time.perf_counter()
    it = batches.iterate(batches.order(cfg.seed, epoch)[partial.batch * batches.batch_size:])
    for i in range(partial.batch, len(batches)):
        t_data = time.perf_counter()
        x, y = next(it)
        data_time += time.perf_counter() - t_data
        loss, batch_sums = learner.step(x, y)
        sums += batch_sums
        seen += y.numel()
        check.add(loss, i, last=i == len(batches) - 1)
        bar.update(y.numel())
        if hooks.should_stop():
            bar.close()
            check.flush(i)  # never checkpoint a state that has already diverged
            sync(device)
            raise Interrupted(PartialEpoch(epoch, i + 1, seen, sums.cpu(), data_time,
                                           partial.train_time_s + time.perf_counter() - t0))
    sync(device)
    train_time = partial.train_time_s + time.perf_counter() - t0
    bar.close()
    main_ce, aux_ce, total_ce, correct = (sums / seen).tolist()  # PartialEpoch.sums' order, per image
    return {schema.TRAIN_LOSS: main_ce, schema.TRAIN_AUX_LOSS: aux_ce, schema.TRAIN_TOTAL_LOSS: total_ce,
            schema.TRAIN_ACC: correct, schema.TRAIN_TIME: train_time, schema.DATA_TIME: data_time,
            schema.THROUGHPUT: seen / train_time}


@torch.no_grad()
def evaluate(learner: Learner, batches: Batches, hooks: Hooks) -> dict:
    """Main head, eval mode, whole test split."""
    cfg, device = learner.cfg, batches.device
    learner.net.eval()
    sums = torch.zeros(2, device=device, dtype=torch.float64)
    sync(device)
    t0 = time.perf_counter()
    order = batches.order(cfg.seed, 0)
    for x, y in tqdm(batches.iterate(order), total=len(batches), desc="  eval", leave=False,
                     disable=_bar_disabled(hooks), dynamic_ncols=True):
        with autocast(cfg, device):
            main, _ = learner.forward(x)
        sums += torch.stack([F.cross_entropy(main.float(), y, reduction="sum"),
                             (main.argmax(1) == y).sum()]).double()
    sync(device)
    t = time.perf_counter() - t0
    loss, correct = sums.tolist()  # summed over the split's images
    return {schema.TEST_LOSS: loss / len(order), schema.ACCURACY: correct / len(order), schema.EVAL_TIME: t}


def _bar_disabled(hooks: Hooks) -> bool | None:
    return None if hooks.progress is None else not hooks.progress


def epoch_metrics(train: dict, ev: dict, history: list[dict]) -> dict[str, float]:
    """One epoch's record (schema.EPOCH_METRICS): its train and eval metrics and the clocks, each by name
    (a metric added to the schema is one more key here or in the pass that measures it, never a position)."""
    epoch_time = train[schema.TRAIN_TIME] + ev[schema.EVAL_TIME]
    elapsed = history[-1][CLOCK] if history else 0.0  # the study's clock: downtime between runs is not counted
    return {**train, **ev, schema.EPOCH_TIME: epoch_time, CLOCK: elapsed + epoch_time}


def summarize(history: list[dict], target_accs: tuple[int, ...]) -> dict[str, float]:
    """best/final accuracy, total time and time-to-target (schema.SUMMARY_METRICS) from the per-epoch metrics:
    best = the highest finite test_acc (NaN when none is), final = the last epoch's (NaN stays NaN)."""
    finite = [h[ACCURACY] for h in history if np.isfinite(h[ACCURACY])]  # max() of a list led by NaN is NaN
    out = {schema.BEST_ACC: max(finite) if finite else float("nan"),
           schema.FINAL_ACC: history[-1][ACCURACY],
           schema.TOTAL_TIME: history[-1][CLOCK]}
    for p in target_accs:  # statistics.target: the report's and the race's rule too
        hit = first_at_target([h[ACCURACY] for h in history], p)
        if hit is not None:  # never reached: not logged (the report counts it as unreached)
            out[time_to_target(p)] = history[hit][CLOCK]
    return out


def fit(cfg: RunConfig, net: Network, train: Batches, test: Batches, tracker: Tracker, hooks: Hooks | None = None,
        resume: TrainingState | None = None, checkpoint: Checkpoint | None = None
        ) -> tuple[list[dict], dict[str, float]]:
    """Train `net` on `train` for cfg.epochs, evaluating on `test` after each epoch, continuing `resume` if
    given and saving every epoch's state to `checkpoint` (and the epoch so far, when a signal stops it);
    returns history and summary. On cached features (feature_cache.FeatureBatches) the heads train, and
    the cache's build time (train.charge_s) is charged to epoch 1."""
    hooks = hooks or Hooks()
    learner = Learner.build(cfg, net, on_features=train.on_features)
    if resume is not None:
        resume.restore(net, learner.opt, learner.scaler)
    history = list(resume.history) if resume else []
    ended_ms = list(resume.epoch_ended_ms) if resume else []  # ms since 1970: each epoch's MLflow timestamp
    partial = resume.partial if resume and resume.partial else PartialEpoch.fresh(len(history) + 1)
    if train.charge_s and resume is None:  # once: a resumed run has the charge in its history (or partial)
        partial = dataclasses.replace(partial, train_time_s=train.charge_s)
    with EpochEnd() as writer:
        for epoch in range(partial.epoch, cfg.epochs + 1):
            try:
                tr = train_one_epoch(learner, train, hooks, partial)
            except Interrupted as stop:
                writer.wait()  # the last epoch's checkpoint and log land first
                if checkpoint is not None:  # a preempted run loses no finished batch
                    save_checkpoint(checkpoint, _snapshot(checkpoint, learner, history, ended_ms, stop.partial))
                raise
            history.append(epoch_metrics(tr, evaluate(learner, test, hooks), history))
            ended_ms.append(int(time.time() * 1000))
            state = _snapshot(checkpoint, learner, history, ended_ms)
            writer.submit(functools.partial(_save_then_log, checkpoint, state, tracker, epoch, history[-1],
                                            ended_ms[-1]))
            for cb in hooks.on_epoch:
                cb(epoch, history[-1])
            partial = PartialEpoch.fresh(epoch + 1)
    return history, summarize(history, cfg.target_accs)


def _snapshot(checkpoint: Checkpoint | None, learner: Learner, history: list[dict], ended_ms: list[int],
              partial: PartialEpoch | None = None) -> TrainingState | None:
    if checkpoint is None:
        return None  # nothing to save it to: skip the copy
    return TrainingState.snapshot(checkpoint.run, learner.net, learner.opt, learner.scaler, history, ended_ms,
                                  partial)


def _save_then_log(checkpoint: Checkpoint | None, state: TrainingState | None, tracker: Tracker, epoch: int,
                   metrics: dict[str, float], ended_ms: int) -> None:
    """The epoch-end writes, on the EpochEnd thread. Checkpoint, then log: a kill between the two leaves
    an epoch that the checkpoint has and MLflow lacks, which the resume logs (MlflowRun.log_missing_epochs);
    the other order would log that epoch twice. A full disk still logs the epoch, then ends the run
    (NoSpace): the older checkpoint stays, and a resume retrains this epoch without logging it again
    (MlflowRun.log_missing_epochs)."""
    if checkpoint is not None:
        try:
            save_checkpoint(checkpoint, state, epoch)
        except NoSpace:
            tracker.log_epoch(epoch, metrics, ended_ms)
            raise
    tracker.log_epoch(epoch, metrics, ended_ms)
