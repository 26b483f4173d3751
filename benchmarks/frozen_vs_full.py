"""Epoch time of a frozen backbone against full fine-tuning (GoogLeNet, 64 px, batch 64, CPU).

Variants, interleaved in one process: full; frozen with BatchNorm as separate ops (no autograd graph
through the trunk, BN in eval mode); frozen with BN folded into the frozen convs (what runs) --
each in NCHW and channels_last. Epoch time = training + evaluation, as the harness logs it.
`--profile` adds a phase breakdown (forward / backward / optimiser) and the top ops per step.

    .venv/bin/python benchmarks/frozen_vs_full.py                  # ~2 min on 2 cores
    .venv/bin/python benchmarks/frozen_vs_full.py --repeats 1 --epochs 1 --train-size 64 --image-size 32
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _common import base_config, fit, machine, median, replace, table
from googlenet_study import model

GOAL = 2.5


def variants(cfg):
    for cl in (False, True):
        fmt = "channels_last" if cl else "NCHW"
        yield f"full, {fmt}", replace(cfg, backbone="full", channels_last=cl), True
        yield f"frozen, BN unfolded, {fmt}", replace(cfg, backbone="frozen", channels_last=cl), False
        yield f"frozen, BN folded, {fmt}", replace(cfg, backbone="frozen", channels_last=cl), True


def step_setup(cfg):
    """The model in train mode, Adam over what trains, and one random batch in the config's memory format."""
    net, _ = model.build(cfg)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size)
    x = x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x
    y = torch.randint(0, 10, (cfg.batch_size,))
    return net, opt, x, y


def phases(cfg, steps: int = 5) -> dict[str, float]:
    """Median seconds per training step in each phase (forward+loss, backward, optimiser)."""
    net, opt, x, y = step_setup(cfg)
    out = {"forward": [], "backward": [], "optimiser": []}
    for i in range(steps + 1):
        t0 = time.perf_counter()
        main, aux = net(x)
        loss = F.cross_entropy(main, y) + cfg.aux_weight * sum(F.cross_entropy(a, y) for a in aux)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i:  # the first step warms up the allocator and oneDNN's kernel cache
            for k, v in zip(out, (t1 - t0, t2 - t1, t3 - t2)):
                out[k].append(v)
    return {k: median(v) for k, v in out.items()}


def top_ops(cfg, n: int = 8) -> str:
    from torch.profiler import ProfilerActivity, profile

    net, opt, x, y = step_setup(cfg)

    def step():
        main, aux = net(x)
        loss = F.cross_entropy(main, y) + cfg.aux_weight * sum(F.cross_entropy(a, y) for a in aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(3):
            step()
    ev = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev)
    return "\n".join(f"    {e.key:<42} {e.self_cpu_time_total / total:6.1%}  {e.self_cpu_time_total / 3e3:8.1f} ms/step"
                     for e in ev[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds over all variants")
    ap.add_argument("--epochs", type=int, default=2, help="per fit; the first epoch of each fit is warm-up")
    ap.add_argument("--train-size", type=int, default=640, help="digits training images per epoch")
    ap.add_argument("--test-size", type=int, default=320)
    ap.add_argument("--image-size", type=int, default=64, help="px")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    ap.add_argument("--profile", action="store_true", help="phase breakdown and top ops per step")
    a = ap.parse_args()
    cfg = base_config(epochs=a.epochs, train_size=a.train_size, test_size=a.test_size,
                      image_size=a.image_size, batch_size=a.batch_size, threads=a.threads)
    torch.set_num_threads(cfg.threads)
    print(f"# frozen vs full: googlenet {cfg.image_size} px, batch {cfg.batch_size}, {cfg.train_size} train / "
          f"{cfg.test_size} test images, {a.repeats} interleaved repeats\n# {machine()}")
    vs = list(variants(cfg))
    epoch_t = {n: [] for n, _, _ in vs}
    train_t = {n: [] for n, _, _ in vs}
    for _ in range(a.repeats):
        for name, c, fold in vs:
            h = fit(c, fold_bn=fold)
            steady = h[1:] or h  # epoch 1 carries the warm-up when there is a second
            epoch_t[name] += [e["epoch_time_s"] for e in steady]
            train_t[name] += [e["train_time_s"] for e in steady]
    rows = []
    for name, _, _ in vs:
        full = "full, " + name.rsplit(", ", 1)[1]
        rows.append([name, median(epoch_t[name]), median(train_t[name]),
                     median(epoch_t[full]) / median(epoch_t[name]), median(train_t[full]) / median(train_t[name])])
    print(table(["variant", "epoch_s", "train_s", "full/this epoch", "full/this train"], rows))
    for fmt in ("NCHW", "channels_last"):
        r = median(epoch_t[f"full, {fmt}"]) / median(epoch_t[f"frozen, BN folded, {fmt}"])
        print(f"ratio full/frozen epoch time, {fmt}: {r:.2f}x (goal >= {GOAL}x: {'met' if r >= GOAL else 'not met'})")
    if a.profile:
        for cl in (False, True):
            for bb in ("full", "frozen"):
                c = replace(cfg, backbone=bb, channels_last=cl)
                ph = phases(c)
                fmt = "channels_last" if cl else "NCHW"
                print(f"\n## {bb}, {fmt}: s/step " + ", ".join(f"{k} {v:.3f}" for k, v in ph.items())
                      + f", total {sum(ph.values()):.3f}\n" + top_ops(c))


if __name__ == "__main__":
    main()
