"""Files a run leaves behind (written to a folder; tracking.run uploads them): the parameter
table, the per-epoch CSV, the learning curves and the first-conv filter grids."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures go to files
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from . import csv_cells, schema  # noqa: E402

EPOCH_COLUMNS = ("epoch", *schema.EPOCH_METRICS)  # epochs.csv


def write_csv(path: Path, rows: list[dict], columns: list[str] | tuple[str, ...]) -> Path:
    """A CSV whose text cells cannot be spreadsheet formulas (csv_cells)."""
    return csv_cells.write_rows(path, rows, columns)


def epochs_csv(path: Path, history: list[dict]) -> Path:
    return write_csv(path, [{"epoch": i + 1, **h} for i, h in enumerate(history)], EPOCH_COLUMNS)


def learning_curves(path: Path, history: list[dict], title: str) -> Path:
    """The lecture's two plots: main vs auxiliary training loss; train vs test accuracy."""
    ep = list(range(1, len(history) + 1))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h[schema.TRAIN_LOSS] for h in history], "o-", label="main (train)")
    a.plot(ep, [h[schema.TRAIN_AUX_LOSS] for h in history], "s--", label="auxiliary, summed (train)")
    a.plot(ep, [h[schema.TEST_LOSS] for h in history], "^-", label="main (test)")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="losses")
    b.plot(ep, [100 * h[schema.TRAIN_ACC] for h in history], "o-", label="train")
    b.plot(ep, [100 * h[schema.ACCURACY] for h in history], "s-", label="test")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


FILTER_COLS = 8  # tiles per row of a filter grid


def filter_sheet(w: torch.Tensor, symmetric: bool = False) -> tuple[torch.Tensor, float]:
    """w: (C_out, 3, k, k) -> (an (H, W, 3) image in [0, 1] with one k x k tile per filter, FILTER_COLS to a row,
    white between tiles; max |w|). Filters are scaled together (one range for the grid) so before/after grids
    compare; `symmetric` draws around 0 (grey), for a difference."""
    n, _, kh, kw = w.shape
    rows = math.ceil(n / FILTER_COLS)
    lim = float(w.abs().max()) or 1.0
    if symmetric:
        img = 0.5 + 0.5 * w / lim
    else:
        img = (w - w.min()) / (float(w.max() - w.min()) or 1.0)
    gap = max(1, kh // 4)  # px of white between tiles
    sheet = torch.ones(rows * (kh + gap) - gap, FILTER_COLS * (kw + gap) - gap, 3)
    for i in range(n):
        r, c = divmod(i, FILTER_COLS)
        sheet[r * (kh + gap):r * (kh + gap) + kh, c * (kw + gap):c * (kw + gap) + kw] = img[i].permute(1, 2, 0)
    return sheet.clamp(0, 1), lim


def filter_grid(path: Path, w: torch.Tensor, title: str, symmetric: bool = False) -> Path:
    """The first conv layer's filters as one picture (filter_sheet): one image, not one axes per filter, so a
    64-filter grid draws in a tenth of a second instead of a second (three grids per run)."""
    sheet, lim = filter_sheet(w, symmetric)
    fig, ax = plt.subplots(figsize=(FILTER_COLS * 0.9, math.ceil(w.shape[0] / FILTER_COLS) * 0.9 + 0.4))
    ax.axis("off")
    ax.imshow(sheet.numpy(), interpolation="nearest")
    fig.suptitle(f"{title} (max |w| = {lim:.3g})", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pip_freeze(path: Path) -> Path:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120)
    path.write_text(out.stdout or out.stderr)
    return path
