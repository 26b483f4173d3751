"""Shared by the benchmark scripts: run configs through the real engine, time side by side, print tables.

Every script runs the compared variants interleaved (A B A B ...) in one process, so that load from
other processes on the machine falls on all of them alike, and reports medians over repeats."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from googlenet_study import data as data_mod
from googlenet_study import engine, feature_cache, model
from googlenet_study.config import RunConfig
from googlenet_study.device import autocast, place, sync

ROOT = Path(__file__).resolve().parent.parent


class ListTracker:
    """engine.Tracker without a store: keeps the per-epoch metrics."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def log_epoch(self, epoch: int, metrics: dict[str, float], timestamp_ms: int | None = None) -> None:
        self.epochs.append(metrics)


def base_config(**over) -> RunConfig:
    """The CPU benchmark setting: GoogLeNet, random init, offline digits, 64 px, batch 64, no sampling thread."""
    kw = dict(model="googlenet", dataset="digits", weights="none", image_size=64, batch_size=64,
              epochs=2, system_metrics=False, device="cpu")
    kw.update(over)
    return RunConfig(**kw).resolve()


def fit(cfg: RunConfig, fold_bn: bool = True) -> list[dict]:
    """engine.fit on `cfg` without MLflow, on images (no feature cache); returns the per-epoch metrics."""
    return fit_cached(cfg, None, fold_bn)[0]


def fit_cached(cfg: RunConfig, cache_dir: str | None, fold_bn: bool = True):
    """engine.fit as train() runs it, a frozen config on the features cached in `cache_dir` (built there if
    absent; None: on images); returns the per-epoch metrics and the feature_cache.Cache (or None)."""
    engine.seed_everything(cfg)
    ds = data_mod.load(cfg)
    net, _ = model.build(cfg, fold_bn=fold_bn)
    cache = feature_cache.obtain(cfg, net, ds, cache_dir)[0] if cache_dir else None
    batches = (cache.batches if cache else data_mod.batches)(cfg, ds, place(cfg, net))
    history, _ = engine.fit(cfg, net, *batches, ListTracker(), engine.Hooks(progress=False))
    return history, cache


def median(xs) -> float:
    return statistics.median(list(xs))


def table(headers: list[str], rows: list[list]) -> str:
    """A plain fixed-width table (floats to 3 significant places)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    cells = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def machine() -> str:
    """One line: CPU or GPU name, threads, torch version."""
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        dev = f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} intra-op threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{dev}; torch {torch.__version__}; 1-min load average at start {load:.2f}"


def replace(cfg: RunConfig, **over) -> RunConfig:
    return dataclasses.replace(cfg, **over).resolve()


class Stepper:
    """One configuration's training step (and eval step) on random input, as engine.train_one_epoch does it:
    the engine's model, optimiser, autocast, GradScaler, memory format and loss."""

    def __init__(self, cfg: RunConfig, fold_bn: bool = True) -> None:
        self.cfg, self.device = cfg, torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.net, _ = model.build(cfg, fold_bn=fold_bn)
        self.learner = engine.Learner.build(cfg, self.net)  # the engine's own step: nothing copied here
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        s = cfg.image_size
        self.x = torch.randn(cfg.batch_size, 3, s, s, device=self.device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 10, (cfg.batch_size,), device=self.device)
        self.xe = torch.randn(cfg.eval_batch_size, 3, s, s, device=self.device).contiguous(memory_format=fmt)

    def train_step(self) -> None:
        self.net.train()
        self.learner.step(self.x, self.y)

    @torch.no_grad()
    def eval_step(self) -> None:
        self.net.eval()
        with autocast(self.cfg, self.device):
            self.net(self.xe)

    def time(self, steps: int, eval_: bool = False) -> float:
        """Seconds per step, averaged over `steps` consecutive steps (one sync at each end)."""
        f = self.eval_step if eval_ else self.train_step
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            f()
        sync(self.device)
        return (time.perf_counter() - t0) / steps

    def train_flops(self) -> float:
        """Model FLOPs of one training step (forward + backward, counted by torch's FlopCounterMode)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            self.train_step()
        return float(fc.get_total_flops())
