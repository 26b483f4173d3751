"""A run's first-conv filter pictures: one axes per filter (how artifacts.filter_grid drew them until
2026-12-03) vs one image of tiles (artifacts.filter_sheet, what it draws now). Every run draws three grids
(before, after, difference); with GoogLeNet's 64 filters the old way took about a second each on a 2-core CPU.

    .venv/bin/python benchmarks/filter_grid.py                  # ~20 s on 2 cores
    .venv/bin/python benchmarks/filter_grid.py --repeats 1 --filters 8
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from _common import machine, median, table

from googlenet_study import artifacts
from googlenet_study.artifacts import plt


def axes_per_filter(path: Path, w: torch.Tensor, title: str) -> None:
    """The former filter_grid: a subplot per filter (kept here as the reference)."""
    n, cols = w.shape[0], artifacts.FILTER_COLS
    rows = math.ceil(n / cols)
    img = (w - w.min()) / (float(w.max() - w.min()) or 1.0)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(img[i].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    fig.suptitle(f"{title} (max |w| = {float(w.abs().max()):.3g})", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--filters", type=int, default=64, help="first-conv filters (GoogLeNet 64, Inception-v3 32)")
    ap.add_argument("--kernel", type=int, default=7, help="kernel size (GoogLeNet 7, Inception-v3 3)")
    a = ap.parse_args()
    w = torch.randn(a.filters, 3, a.kernel, a.kernel, generator=torch.Generator().manual_seed(0))
    print(f"# filter grid of {a.filters} filters {a.kernel}x{a.kernel}: one axes per filter vs one image\n"
          f"# {machine()}")
    with tempfile.TemporaryDirectory() as d:
        ways = {"one axes per filter (before)": lambda p: axes_per_filter(p, w, "first conv"),
                "one image of tiles (now)": lambda p: artifacts.filter_grid(p, w, "first conv")}
        for draw in ways.values():  # warm-up: matplotlib's fonts and caches
            draw(Path(d) / "warm.png")
        times = {}
        for name, draw in ways.items():
            ts = []
            for r in range(a.repeats):
                t0 = time.perf_counter()
                draw(Path(d) / f"{r}.png")
                ts.append(time.perf_counter() - t0)
            times[name] = median(ts)
    print(table(["way", "s per grid (median)"], [[k, f"{v:.3f}"] for k, v in times.items()]))
    before, now = times.values()
    print(f"ratio before / now: {before / now:.1f}x ({3 * (before - now):.2f} s saved per run: 3 grids)")


if __name__ == "__main__":
    main()
