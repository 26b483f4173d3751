"""Training throughput of a real googlenet-study run against a minimal PyTorch loop (goal >= 0.97).

Harness: `googlenet_study.train.train()` exactly as the CLI calls it -- MLflow on a fresh SQLite store
(params, tags, artifacts, per-epoch metrics, system-metrics sampling), progress bars, a checkpoint
every epoch. Bare: torchvision's GoogLeNet and a plain loop over the same uint8 tensors (upscale +
normalise per batch, train, evaluate), nothing else. Both: same data, model, batch, image size,
threads and optimiser; an epoch = training + evaluation. Each epoch's wall time is taken from the
outside (for the harness: between consecutive epoch-end callbacks, so logging and checkpointing
are inside it); the first epoch of every run is warm-up and is not counted. Runs alternate.

    .venv/bin/python benchmarks/harness_vs_bare.py                  # ~3 min on 2 cores
    .venv/bin/python benchmarks/harness_vs_bare.py --repeats 1 --epochs 2 --train-size 64 --image-size 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from _common import base_config, machine, median, table
from googlenet_study import data as data_mod
from googlenet_study import engine
from googlenet_study.data import IMAGENET_MEAN, IMAGENET_STD
from googlenet_study.engine import Hooks

GOAL = 0.97


def bare(cfg, ds) -> list[float]:
    """Per-epoch wall seconds of the minimal loop."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    net = torchvision.models.googlenet(weights=None, aux_logits=cfg.aux_weight > 0, num_classes=10,
                                       init_weights=True, transform_input=False)
    opt = engine.make_optimizer(cfg, net)  # the same optimiser the harness builds
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    s = cfg.image_size

    def prep(u8: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(u8.float(), size=(s, s), mode="bilinear", align_corners=False)
        return (x - mean) / std

    times = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(ds.train))
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            x, y = prep(ds.train.images[idx]), ds.train.labels[idx]
            out = net(x)
            loss = F.cross_entropy(out.logits, y)
            if cfg.aux_weight > 0:
                loss = loss + cfg.aux_weight * (F.cross_entropy(out.aux_logits1, y) + F.cross_entropy(out.aux_logits2, y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(ds.test), cfg.eval_batch_size):
                x, y = prep(ds.test.images[i:i + cfg.eval_batch_size]), ds.test.labels[i:i + cfg.eval_batch_size]
                correct += int((net(x).argmax(1) == y).sum())
        times.append(time.perf_counter() - t0)
    return times


def harness(cfg, store: Path) -> tuple[list[float], list[float], float]:
    """Per-epoch wall seconds (outside clock), the harness's own train throughputs, and the run's total wall."""
    from googlenet_study.checkpoint import NEVER
    from googlenet_study.train import RunOptions, train

    store.mkdir(parents=True, exist_ok=True)
    ends: list[float] = []
    hooks = Hooks(progress=True, on_epoch=[lambda epoch, m: ends.append(time.perf_counter())])
    t0 = time.perf_counter()
    result = train(cfg, tracking_uri=f"sqlite:///{store / 'mlflow.db'}", experiment="harness-vs-bare",
                   options=RunOptions(hooks=hooks, checkpoint_dir=store / "checkpoints", resume=NEVER))
    total = time.perf_counter() - t0
    assert result.status == "FINISHED", result.failure_reason
    epochs = [b - a for a, b in zip(ends, ends[1:])]
    return epochs, result.history[1:], total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="alternating bare/harness rounds")
    ap.add_argument("--epochs", type=int, default=3, help="per run (>= 2: the first is warm-up)")
    ap.add_argument("--train-size", type=int, default=640, help="digits training images per epoch")
    ap.add_argument("--test-size", type=int, default=320)
    ap.add_argument("--image-size", type=int, default=64, help="px")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    if a.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch of each run is warm-up)")
    cfg = base_config(epochs=a.epochs, train_size=a.train_size, test_size=a.test_size, image_size=a.image_size,
                      batch_size=a.batch_size, system_metrics=True)
    ds = data_mod.load(cfg)
    print(f"# harness vs bare loop: googlenet {cfg.image_size} px, batch {cfg.batch_size}, {len(ds.train)} train / "
          f"{len(ds.test)} test images, {cfg.epochs} epochs per run, {a.repeats} alternating repeats\n# {machine()}")
    bare_t, harness_t, own, totals = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="harness-vs-bare-") as d:
        for r in range(a.repeats):
            bare_t += bare(cfg, ds)[1:]
            ep, hist, total = harness(cfg, Path(d) / f"r{r}")
            harness_t += ep
            own += hist
            totals.append(total - sum(ep))  # setup, first epoch and end-of-run artifacts
    n = len(ds.train)
    b_ips, h_ips = n / median(bare_t), n / median(harness_t)
    print(table(["loop", "epoch_s (median)", "train img/s incl. eval and logging", "epochs timed"],
                [["bare PyTorch", median(bare_t), b_ips, len(bare_t)],
                 ["googlenet-study", median(harness_t), h_ips, len(harness_t)]]))
    # Where the harness's epoch goes: its own clocks (train, eval) and the rest (log_epoch, checkpoint, bars).
    tr, ev = median(h["train_time_s"] for h in own), median(h["eval_time_s"] for h in own)
    print(f"harness epoch: train {tr:.3f} s + eval {ev:.3f} s (its own clocks) + logging/checkpoint/bars "
          f"{median(e - h['epoch_time_s'] for e, h in zip(harness_t, own)):.3f} s; per run outside the timed "
          f"epochs (setup, warm-up epoch, final artifacts): {median(totals):.1f} s")
    r = h_ips / b_ips
    print(f"ratio harness/bare throughput: {r:.3f} (goal >= {GOAL}: {'met' if r >= GOAL else 'not met'})")


if __name__ == "__main__":
    main()
