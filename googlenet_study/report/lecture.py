"""Report stage 3, the lecture's figures: its two plots (main vs auxiliary loss, train vs test accuracy), the
first-conv filters before and after training, and its published inception_v3 curve beside ours. Each
function returns a figures.Drawn (title, caption, figure) or None."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import schema  # noqa: E402
from ..statistics.clock import EPOCH  # noqa: E402
from . import curves, stats  # noqa: E402
from .figures import Drawn, _accuracy_curves, _figure, _legend, _title  # noqa: E402

# The lecture's published inception_v3 run (CIFAR-10, ImageNet weights, 299 px, batch 32, adam, aux 1, full):
LECTURE_TEST_ACC = (52.87, 64.35, 68.81, 73.92, 75.29, 78.28, 79.34, 79.57)  # percent, epochs 1-8
LECTURE_EPOCH_S = 466.0  # seconds per epoch, about (the lecture's GPU)
MAX_FILTER_ROWS = 12  # the filters figure shows at most this many configurations (the best ranked)


def lecture_plots(runs, epochs, colors) -> Drawn:
    fig, (a, b) = _figure(len(colors), 11, 4.2, panels=2)
    for metric, ls in ((schema.TRAIN_LOSS, "-"), (schema.TRAIN_AUX_LOSS, "--")):
        if epochs[metric].notna().any():
            for cfg, g in stats.by_epoch(runs, epochs, metric).groupby("configuration", observed=True):
                a.plot(g["epoch"], g["mean"], ls, color=colors[cfg], lw=1.2, marker="o", ms=2)
    a.set(xlabel="epoch", ylabel="cross-entropy", title="main (solid) vs auxiliary (dashed) training loss")
    for metric, ls in ((schema.TRAIN_ACC, "--"), (schema.ACCURACY, "-")):
        for cfg, g in stats.by_epoch(runs, epochs, metric).groupby("configuration", observed=True):
            b.plot(g["epoch"], 100 * g["mean"], ls, color=colors[cfg], lw=1.2, marker="o", ms=2,
                   label=str(cfg) if metric == schema.ACCURACY else None)
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="train (dashed) vs test (solid) accuracy")
    _legend(fig, b, len(colors))
    _title(fig, "The lecture's two plots, mean over seeds per configuration")
    return Drawn("Losses and accuracies (the lecture's plots)",
                 "Left: main vs auxiliary training loss (the auxiliary loss is summed over the arms, 0 without "
                 "arms). Right: train vs test accuracy. Means over seeds.", fig)


def _montage(w: np.ndarray, lo: float, hi: float, cols: int = 8) -> np.ndarray:
    """(C, 3, k, k) -> one RGB image of C tiles, scaled with one range so grids compare."""
    c, _, k, _ = w.shape
    rows = math.ceil(c / cols)
    img = np.ones((rows * (k + 1) + 1, cols * (k + 1) + 1, 3))
    w = np.clip((w - lo) / ((hi - lo) or 1.0), 0, 1)
    for i in range(c):
        r, q = divmod(i, cols)
        img[1 + r * (k + 1):1 + r * (k + 1) + k, 1 + q * (k + 1):1 + q * (k + 1) + k] = w[i].transpose(1, 2, 0)
    return img


def filters(reps: list[tuple[str, str, dict]]) -> Drawn | None:
    """reps: (configuration, run name, {"before", "after"} arrays (C, 3, k, k)) per configuration."""
    if not reps:
        return None
    fig, axes = plt.subplots(len(reps), 3, figsize=(9, 1.9 * len(reps) + 0.6), squeeze=False, layout="constrained")
    for row, (cfg, name, f) in zip(axes, reps):
        before, after = np.asarray(f["before"], float), np.asarray(f["after"], float)
        lo, hi = min(before.min(), after.min()), max(before.max(), after.max())
        d = after - before
        lim = float(np.abs(d).max()) or 1.0
        for ax, img, t in ((row[0], _montage(before, lo, hi), "before"), (row[1], _montage(after, lo, hi), "after"),
                           (row[2], _montage(d, -lim, lim), f"after - before (max |d| {lim:.2g})")):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(t, fontsize=7)
        row[0].set_ylabel(f"{cfg}\n{name}"[:80], fontsize=6, rotation=0, ha="right", va="center")
    _title(fig, "First-conv filters of one representative run per configuration (the run with the median "
           "best accuracy)", 9)
    return Drawn("First-conv filters", "Before, after and difference, one representative run per configuration (at "
                 f"most {MAX_FILTER_ROWS}, best ranked first); before/after share one colour scale, the difference "
                 "is centred on grey.", fig)


def lecture_reference(runs, epochs, colors) -> Drawn | None:
    if "model" not in runs or not (runs["model"].astype(str) == "inception_v3").any():
        return None
    inc = runs[runs["model"].astype(str) == "inception_v3"]
    ep = epochs[epochs["run_id"].isin(inc["run_id"])]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    _accuracy_curves(a, inc, ep, "epoch", colors, step=False)
    _accuracy_curves(b, inc, curves.timed(inc, ep, EPOCH), "clock_s", colors, step=True)
    e = np.arange(1, len(LECTURE_TEST_ACC) + 1)
    for ax, x in ((a, e), (b, e * LECTURE_EPOCH_S)):
        ax.plot(x, LECTURE_TEST_ACC, "k--", marker="s", ms=4, lw=1.5,
                label=f"lecture (published; about {LECTURE_EPOCH_S:.0f} s/epoch)")
        ax.set(ylabel="test accuracy (%)")
    a.set(xlabel="epoch", title="inception_v3 runs vs the lecture, per epoch")
    b.set(xlabel="elapsed wall-clock time (s, epoch clock)", title="... and per second of training")
    a.legend(fontsize=7)
    return Drawn("Lecture reference (inception_v3)",
                 "Dashed black: the lecture's published curve (one run; test accuracy 52.87 ... 79.57 % for epochs "
                 "1-8, about 466 s per epoch on its GPU), drawn for reference, not averaged in.", fig)
