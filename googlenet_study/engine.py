"""Stage 4: the loop. `train_one_epoch` and `evaluate` are pure steps that return dicts;
`fit` is the epoch driver and the only place that times, logs and checkpoints."""

from __future__ import annotations

import functools
import math
import os
import random
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import RunConfig
from .data import Dataset, DeviceBatches
from .model import Network


class NonFiniteLoss(RuntimeError):
    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__(f"non-finite loss at epoch {epoch}, batch {batch}")
        self.epoch, self.batch = epoch, batch


class Interrupted(Exception):
    """A stop was requested (SIGTERM/SIGINT) and the batch in flight has finished.

    `partial` is the epoch so far (next batch, running sums, clocks): `fit` checkpoints it with the
    model, optimiser and RNG states of that moment, so a resume continues at the next batch."""

    def __init__(self, partial: dict) -> None:
        super().__init__("stopped by a signal")
        self.partial = partial


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes its batch, then stops. A second signal stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        import signal

        def handler(signum, frame):
            if self.signum is not None:
                raise KeyboardInterrupt  # the second signal: unwind now (runs still end KILLED)
            self.signum = signum
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, handler)


STOP = StopFlag()  # the process's flag; the CLI installs its handlers


class Tracker(Protocol):
    """What the driver needs from tracking (an MLflow run in practice; a list in tests)."""
    def log_epoch(self, epoch: int, metrics: dict[str, float], timestamp_ms: int) -> None: ...


@dataclass
class Hooks:
    on_epoch: list[Callable[[int, dict[str, float]], None]] = field(default_factory=list)  # e.g. pruning
    save_checkpoint: Callable[[dict], None] | None = None
    should_stop: Callable[[], bool] = STOP
    progress: bool | None = None  # None: bars only on a terminal


class EpochEnd:
    """The epoch-end writes (checkpoint with its fsync, then the MLflow log) on a worker thread, one
    epoch at a time, while the next epoch trains: the disk and the tracking server never stall
    training (benchmarks/harness_vs_bare.py). `wait()` joins it and raises what it raised."""

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


def cpu_copy(obj):
    """A deep copy with every tensor on the CPU: a snapshot that the next training step cannot change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


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


def _autocast(cfg: RunConfig, device: torch.device):
    if cfg.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(step_model, net: Network, batches: DeviceBatches, order: torch.Tensor,
                    opt: torch.optim.Optimizer, scaler, cfg: RunConfig, epoch: int, hooks: Hooks,
                    partial: dict | None = None) -> dict:
    """One pass over the training split; losses are per-image means over the epoch.

    `partial` (from an interrupted epoch's checkpoint) continues that epoch at its next batch with its
    running sums and clocks, so the epoch's numbers are those of an uninterrupted one."""
    device = batches.device
    net.train()
    # sums: float64 main CE, aux CE, total CE (each x images), correct predictions; kept on the device:
    # one host sync per epoch (and per finiteness check), not per batch. Times in s: waiting for input,
    # and this epoch's training before a stop.
    p = partial or {"batch": 0, "seen": 0, "data_time_s": 0.0, "train_time_s": 0.0,
                    "sums": torch.zeros(4, dtype=torch.float64)}
    sums, start, seen = p["sums"].to(device), p["batch"], p["seen"]
    data_time, time_before = p["data_time_s"], p["train_time_s"]
    check_every = 1 if device.type == "cpu" else 25
    pending: list[torch.Tensor] = []

    def check_finite(i: int) -> None:  # i: the batch index of the last pending loss
        finite = torch.isfinite(torch.stack(pending))
        if not bool(finite.all()):
            raise NonFiniteLoss(epoch, i + 1 - len(pending) + int((~finite).nonzero()[0]))
        pending.clear()

    bar = tqdm(total=len(order), initial=seen, desc=f"epoch {epoch}/{cfg.epochs} train", unit="img", leave=False,
               disable=_bar_disabled(hooks), dynamic_ncols=True)
    _sync(device)
    t0 = time.perf_counter()
    it = batches.iterate(order[start * batches.batch_size:])
    for i in range(start, len(batches)):
        t_data = time.perf_counter()
        x, y = next(it)
        data_time += time.perf_counter() - t_data
        with _autocast(cfg, device):
            main, aux = step_model(x)
            loss_main = F.cross_entropy(main, y)
            loss_aux = sum((F.cross_entropy(a, y) for a in aux), torch.zeros((), device=device))
            loss = loss_main + cfg.aux_weight * loss_aux
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        n = y.numel()
        sums += torch.stack([loss_main.detach() * n, loss_aux.detach() * n, loss.detach() * n,
                             (main.detach().argmax(1) == y).sum()]).double()
        seen += n
        pending.append(loss.detach())
        if len(pending) >= check_every or i == len(batches) - 1:
            check_finite(i)
        bar.update(n)
        if hooks.should_stop():
            bar.close()
            if pending:
                check_finite(i)  # never checkpoint a state that has already diverged
            _sync(device)
            raise Interrupted({"epoch": epoch, "batch": i + 1, "sums": sums.cpu(), "seen": seen,
                               "data_time_s": data_time, "train_time_s": time_before + time.perf_counter() - t0})
    _sync(device)
    train_time = time_before + time.perf_counter() - t0
    bar.close()
    s = (sums / seen).tolist()
    return {"train_loss": s[0], "train_aux_loss": s[1], "train_total_loss": s[2], "train_acc": s[3],
            "train_time_s": train_time, "data_time_s": data_time, "throughput_img_s": seen / train_time}


@torch.no_grad()
def evaluate(step_model, net: Network, batches: DeviceBatches, cfg: RunConfig, hooks: Hooks) -> dict:
    """Main head, eval mode, whole test split."""
    device = batches.device
    net.eval()
    sums = torch.zeros(2, device=device, dtype=torch.float64)
    _sync(device)
    t0 = time.perf_counter()
    order = batches.order(cfg.seed, 0)
    for x, y in tqdm(batches.iterate(order), total=len(batches), desc="  eval", leave=False,
                     disable=_bar_disabled(hooks), dynamic_ncols=True):
        with _autocast(cfg, device):
            main, _ = step_model(x)
        sums += torch.stack([F.cross_entropy(main.float(), y, reduction="sum"),
                             (main.argmax(1) == y).sum()]).double()
    _sync(device)
    t = time.perf_counter() - t0
    loss, correct = sums.tolist()
    return {"test_loss": loss / len(order), "test_acc": correct / len(order), "eval_time_s": t}


def _bar_disabled(hooks: Hooks) -> bool | None:
    return None if hooks.progress is None else not hooks.progress


def summarize(history: list[dict], target_accs: tuple[int, ...]) -> dict[str, float]:
    """best/final accuracy, total time and time-to-target from the per-epoch metrics."""
    out = {"best_test_acc": max(h["test_acc"] for h in history),
           "final_test_acc": history[-1]["test_acc"],
           "total_time_s": history[-1]["elapsed_time_s"]}
    for p in target_accs:
        hit = next((h for h in history if h["test_acc"] >= p / 100.0 - 1e-12), None)
        if hit is not None:  # never reached: not logged (the report counts it as unreached)
            out[f"time_to_test_acc_{p}"] = hit["elapsed_time_s"]
    return out


def rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def fit(cfg: RunConfig, data: Dataset, net: Network, tracker: Tracker, hooks: Hooks | None = None,
        resume: dict | None = None) -> tuple[list[dict], dict[str, float]]:
    """Train for cfg.epochs (continuing `resume`, a checkpoint, if given); returns history and summary."""
    hooks = hooks or Hooks()
    device = torch.device(cfg.device)
    net.to(device)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    step_model = torch.compile(net) if cfg.compile else net
    opt = make_optimizer(cfg, net)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    train = DeviceBatches(data.train, cfg.batch_size, cfg.image_size, device, True, cfg.channels_last)
    test = DeviceBatches(data.test, cfg.eval_batch_size, cfg.image_size, device, False, cfg.channels_last)
    history: list[dict] = []
    ended_ms: list[int] = []  # when each epoch ended (ms since the epoch): its metrics' MLflow timestamp
    partial = None
    if resume is not None:
        net.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        set_rng_state(resume["rng"])
        history = list(resume["history"])
        ended_ms = list(resume.get("epoch_ended_ms", []))
        partial = resume.get("partial")
    elapsed = history[-1]["elapsed_time_s"] if history else 0.0  # downtime between runs is not counted

    def snapshot(partial_epoch: dict | None) -> dict | None:
        """This moment's state, copied: the writer thread saves it while training moves on."""
        if hooks.save_checkpoint is None:
            return None
        return cpu_copy({"epoch": len(history), "model": net.state_dict(), "optimizer": opt.state_dict(),
                         "scaler": scaler.state_dict() if scaler else None, "rng": rng_state(),
                         "history": history, "epoch_ended_ms": ended_ms, "elapsed_time_s": elapsed,
                         "partial": partial_epoch})

    def epoch_end(state: dict | None, epoch: int, metrics: dict, ended: int) -> None:
        # Checkpoint, then log: a kill between the two leaves an epoch that the checkpoint has and
        # MLflow lacks, which the resume logs (tracking.MlflowRun.log_missing_epochs); the other
        # order would log that epoch twice.
        if state is not None:
            hooks.save_checkpoint(state)
        tracker.log_epoch(epoch, metrics, ended)

    writer = EpochEnd()
    try:
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            try:
                tr = train_one_epoch(step_model, net, train, train.order(cfg.seed, epoch), opt, scaler, cfg,
                                     epoch, hooks, partial)
            except Interrupted as stop:
                writer.wait()  # the last epoch's checkpoint and log land first
                if hooks.save_checkpoint is not None:
                    hooks.save_checkpoint(snapshot(stop.partial))  # a preempted run loses no finished batch
                raise
            partial = None
            ev = evaluate(step_model, net, test, cfg, hooks)
            epoch_time = tr["train_time_s"] + ev["eval_time_s"]
            elapsed += epoch_time
            metrics = {**tr, **ev, "epoch_time_s": epoch_time, "elapsed_time_s": elapsed}
            history.append(metrics)
            ended_ms.append(int(time.time() * 1000))
            writer.submit(functools.partial(epoch_end, snapshot(None), epoch, metrics, ended_ms[-1]))
            for cb in hooks.on_epoch:
                cb(epoch, metrics)
        writer.wait()
    except KeyboardInterrupt:
        raise  # a second signal: stop now, not after the writer
    except BaseException:
        writer.wait(raise_error=False)  # the first error is the one to report
        raise
    return history, summarize(history, cfg.target_accs)
