"""Frozen epochs on cached features against frozen epochs through the trunk and against full fine-tuning
(GoogLeNet, 64 px, batch 64, CPU).

Three runs of `--epochs` epochs through the real engine, interleaved over the repeats in one process: full;
frozen with feature_cache=off; frozen on the cache, built in a fresh folder every repeat, so that its build is
measured each time and charged to its epoch 1 as in a run on its own (engine.fit). Prints the epoch times
(epoch 1, and the median of the later ones), each run's elapsed_time_s (the build included), the build, and
the ratios against the goals: later epochs >= 10x faster than uncached, the whole run >= 4x.

    .venv/bin/python benchmarks/feature_cache.py                   # ~2 min on 2 quiet cores
    .venv/bin/python benchmarks/feature_cache.py --repeats 1 --epochs 2 --train-size 16 --test-size 10 \\
        --image-size 16 --batch-size 8                             # smoke (tests/test_benchmarks.py)
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from _common import base_config, fit_cached, machine, median, replace, table

GOAL_EPOCH, GOAL_RUN = 10.0, 4.0
VARIANTS = (("full", dict(backbone="full")),
            ("frozen, feature_cache=off", dict(backbone="frozen", feature_cache="off")),
            ("frozen, feature_cache=auto (built)", dict(backbone="frozen", feature_cache="auto")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds over the three runs")
    ap.add_argument("--epochs", type=int, default=10, help="per run (the factorial study's)")
    ap.add_argument("--train-size", type=int, default=320, help="digits training images per epoch")
    ap.add_argument("--test-size", type=int, default=160)
    ap.add_argument("--image-size", type=int, default=64, help="px")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    a = ap.parse_args()
    cfg = base_config(epochs=a.epochs, train_size=a.train_size, test_size=a.test_size, image_size=a.image_size,
                      batch_size=a.batch_size, threads=a.threads, channels_last=a.channels_last)
    torch.set_num_threads(cfg.threads)
    print(f"# feature cache: googlenet {cfg.image_size} px, batch {cfg.batch_size}, {cfg.train_size} train / "
          f"{cfg.test_size} test images, {cfg.epochs} epochs, {'channels_last' if cfg.channels_last else 'NCHW'}, "
          f"{a.repeats} interleaved repeats\n# {machine()}")
    first, later, run, build = ({n: [] for n, _ in VARIANTS} for _ in range(4))
    for _ in range(a.repeats):
        for name, over in VARIANTS:
            with tempfile.TemporaryDirectory() as d:  # a fresh cache folder: every cached run builds
                h, cache = fit_cached(replace(cfg, **over), d)
            first[name].append(h[0]["epoch_time_s"])
            later[name] += [e["epoch_time_s"] for e in h[1:]] or [h[0]["epoch_time_s"]]
            run[name].append(h[-1]["elapsed_time_s"])
            build[name].append(cache.build_s if cache else 0.0)
    off, on = VARIANTS[1][0], VARIANTS[2][0]
    rows = [[n, median(first[n]), median(later[n]), median(run[n]), median(build[n]),
             median(later[off]) / median(later[n]), median(run[off]) / median(run[n])] for n, _ in VARIANTS]
    print(table(["run", "epoch 1 s", f"epochs 2-{cfg.epochs} s (median)", "run s (elapsed)", "build s",
                 "uncached/this epoch", "uncached/this run"], rows))
    r_epoch, r_run = median(later[off]) / median(later[on]), median(run[off]) / median(run[on])
    print(f"ratio frozen uncached/cached epoch time, epochs 2-{cfg.epochs}: {r_epoch:.1f}x "
          f"(goal >= {GOAL_EPOCH:g}x: {'met' if r_epoch >= GOAL_EPOCH else 'not met'})")
    print(f"ratio frozen uncached/cached {cfg.epochs}-epoch run, build charged: {r_run:.1f}x "
          f"(goal >= {GOAL_RUN:g}x: {'met' if r_run >= GOAL_RUN else 'not met'})")
    print(f"ratio full/cached frozen {cfg.epochs}-epoch run: {median(run['full']) / median(run[on]):.1f}x; "
          f"per later epoch {median(later['full']) / median(later[on]):.1f}x")


if __name__ == "__main__":
    main()
