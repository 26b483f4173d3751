"""Report stage 3: the figures (seaborn on matplotlib). Every curve is aggregated before it is drawn (curves.py,
stats.py), so a figure costs about the same for 10 runs or 1,000. Each function returns a Figure or None.
Layouts are matplotlib's constrained layout, so titles, labels and legends stay inside the frame."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # no display: figures become PNG and PDF pages
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import schema  # noqa: E402
from . import curves, stats  # noqa: E402

# The lecture's published inception_v3 run (CIFAR-10, ImageNet weights, 299 px, batch 32, adam, aux 1, full):
LECTURE_TEST_ACC = (52.87, 64.35, 68.81, 73.92, 75.29, 78.28, 79.34, 79.57)  # percent, epochs 1-8
LECTURE_EPOCH_S = 466.0  # seconds per epoch, about (the lecture's GPU)
LOG_X_SPREAD = 20.0  # log time axis when configurations' longest runs differ by more than this factor


def style() -> dict:
    return {**sns.axes_style("whitegrid"), **sns.plotting_context("paper"), "figure.dpi": 100,
            "text.parse_math": False}  # a run named "$x$" is text, not mathtext


def palette(configs: list) -> dict:
    colors = sns.color_palette("tab10" if len(configs) <= 10 else "husl", len(configs))
    return dict(zip(configs, colors))


def _tci(x) -> tuple[float, float]:
    """seaborn errorbar: the same Student-t interval as the tables."""
    _, lo, hi = stats.t_interval(x)
    m = float(np.mean(x))
    return (m, m) if math.isnan(lo) else (lo, hi)


def _legend_rows(n: int) -> tuple[int, int]:
    """(columns, rows) of a legend of n configurations under the axes."""
    cols = 1 if n <= 4 else 2
    return cols, math.ceil(n / cols)


def _figure(n: int, width: float = 9.0, height: float = 4.2, panels: int = 1):
    """Figure and axes with room below for a legend of n entries (labels name every varying param: long)."""
    extra = 0.0 if n <= 1 else 0.35 + 0.15 * _legend_rows(n)[1] * (7 if n <= 12 else 5) / 7
    fig, axes = plt.subplots(1, panels, figsize=(width, height + extra), layout="constrained")
    return fig, axes


def _legend(fig, ax, n: int) -> None:
    """The configurations' legend, under the plot, inside the frame."""
    if n > 1:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=_legend_rows(n)[0],
                   fontsize=7 if n <= 12 else 5, frameon=False)


def _log_x_if_spread(ax, ends: pd.Series) -> bool:
    """A log time axis when the configurations' ends differ by more than LOG_X_SPREAD (a 1,000 s/epoch
    configuration would squash a 5 s/epoch one into the y-axis); plain numbers as its labels (text.parse_math
    is off, so matplotlib's 10^k labels would show raw)."""
    ends = ends[ends > 0]
    if len(ends) < 2 or ends.max() / ends.min() <= LOG_X_SPREAD:
        return False
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    return True


def _title(fig, text: str, size: float = 10.0) -> None:
    """A suptitle wrapped to the figure's width, so it stays inside the frame however few panels there are."""
    chars = max(30, int(fig.get_figwidth() * 72 / (0.55 * size)))  # DejaVu Sans: about 0.55 em per character
    fig.suptitle(textwrap.fill(text, chars), fontsize=size)


def _accuracy_curves(ax, runs, epochs, x: str, colors: dict, step: bool) -> pd.DataFrame:
    """Thin per-run lines (seaborn units=) under each configuration's mean and 95 % band; returns the mean
    frame drawn (curves.mean_curve)."""
    thin = curves.run_steps(runs, epochs, x)
    mean = curves.mean_curve(runs, epochs, x)
    kw = {"drawstyle": "steps-post"} if step else {}
    if len(thin):
        sns.lineplot(data=thin.assign(acc=100 * thin["acc"]), x=x, y="acc", hue="configuration", units="run_id",
                     estimator=None, palette=colors, lw=0.8, alpha=0.45, legend=False, ax=ax, sort=False, **kw)
    for cfg, g in mean.groupby("configuration", observed=True, sort=True):
        ax.plot(g[x], 100 * g["mean"], color=colors[cfg], lw=1.8, label=f"{cfg} (n={g['n'].iloc[0]})",
                gid=f"mean:{cfg}", **(kw or {"marker": "o", "ms": 3}))
        ax.fill_between(g[x], 100 * g["low"].clip(0, 1), 100 * g["high"].clip(0, 1), color=colors[cfg], alpha=0.18,
                        lw=0, step="post" if step else None)
    return mean


def acc_vs_epoch(runs, epochs, colors) -> plt.Figure:
    fig, ax = _figure(len(colors))
    _accuracy_curves(ax, runs, epochs, "epoch", colors, step=False)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)",
           title="Test accuracy per epoch (thin: runs; thick: mean of all n runs, 95 % t-interval)")
    _legend(fig, ax, len(colors))
    return fig


def acc_vs_time(runs, epochs, colors, clock: str = "epoch") -> plt.Figure:
    fig, ax = _figure(len(colors))
    mean = _accuracy_curves(ax, runs, curves.timed(runs, epochs, clock), "clock_s", colors, step=True)
    _log_x_if_spread(ax, mean.groupby("configuration", observed=True)["clock_s"].max())
    ax.set(xlabel=curves.CLOCK_LABEL[clock] + (", log scale" if ax.get_xscale() == "log" else ""),
           ylabel="test accuracy (%)",
           title="Test accuracy vs time (thin: runs; thick: mean of all n runs, 95 % t-interval)")
    _legend(fig, ax, len(colors))
    return fig


def reached_target(runs, target, colors, clock: str = "epoch") -> plt.Figure | None:
    """Kaplan-Meier: the fraction of each configuration's runs that have reached `target` % by time t."""
    if target is None:
        return None
    d = curves.reached_curve(runs, target)
    fig, ax = _figure(len(colors))
    for cfg, g in d.groupby("configuration", observed=True, sort=True):
        ax.plot(g["t"], 100 * g["reached"], drawstyle="steps-post", color=colors[cfg], lw=1.6,
                label=f"{cfg} (n={g['n'].iloc[0]})", gid=f"reached:{cfg}")
        ax.fill_between(g["t"], 100 * g["low"], 100 * g["high"].fillna(1.0), step="post", color=colors[cfg],
                        alpha=0.15, lw=0)
    ax.set(xlabel=curves.CLOCK_LABEL[clock] + (", log scale" if ax.get_xscale() == "log" else ""),
           ylabel=f"runs that reached {target:g} % (%)", ylim=(-2, 102),
           title=f"Runs that have reached {target:g} % test accuracy (Kaplan-Meier, 95 % interval; unreached runs "
                 "censored at their end)")
    if not _log_x_if_spread(ax, d.groupby("configuration", observed=True)["t"].max()):
        ax.set_xlim(left=0)
    _legend(fig, ax, len(colors))
    return fig


def profiles(prof: pd.DataFrame | None, colors) -> plt.Figure | None:
    """Performance profiles (Dolan & More): rho(tau), the fraction of workloads whose ERT is within a factor
    tau of the best configuration's; `prof` is stats.performance_profile's frame (configuration, tau, rho)."""
    if prof is None or not len(prof):
        return None
    fig, ax = _figure(len(colors))
    for cfg, g in prof.groupby("configuration", observed=True, sort=True):
        ax.plot(g["tau"], 100 * g["rho"], drawstyle="steps-post", color=colors.get(cfg, "k"), lw=1.6,
                label=str(cfg), gid=f"profile:{cfg}")
    ax.set(xlim=(1, 4), ylim=(-2, 102), xlabel="tau: expected running time within a factor tau of the best",
           ylabel="workloads (%)", title="Performance profiles: the share of workloads (model, dataset, target) "
                                          "on which a configuration is within tau of the best ERT")
    _legend(fig, ax, len(colors))
    return fig


def epoch_time(runs, varying) -> plt.Figure:
    x = "batch_size" if "batch_size" in varying else (varying[0] if varying else "configuration")
    hue = "backbone" if "backbone" in varying and x != "backbone" else None
    col = "aux_weight" if "aux_weight" in varying and x != "aux_weight" else None
    levels = sorted(runs[col].unique()) if col else [None]
    fig, axes = plt.subplots(1, len(levels), figsize=(min(4 * len(levels), 12) + 1, 4), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, lv in zip(axes[0], levels):
        d = runs if lv is None else runs[runs[col] == lv]
        sns.barplot(data=d, x=x, y="epoch_time_s", hue=hue, errorbar=_tci, capsize=0.1, ax=ax,
                    palette="deep" if hue else None, legend=ax is axes[0][-1])
        ax.set(title=f"{col}={lv}" if col else "", ylabel="seconds per epoch (mean over epochs)")
        if x == "configuration":
            ax.tick_params(axis="x", rotation=80, labelsize=6)
    _title(fig, "Seconds per epoch" + (f" by {x}" if x != "configuration" else "")
           + (f" x {hue}" if hue else "") + (f" x {col}" if col else "") + " (mean, 95 % t-interval)")
    return fig


def time_to_target(runs, targets, colors) -> plt.Figure:
    configs = list(colors)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.32 * len(configs) * max(1, len(targets)) ** 0.5), layout="constrained")
    tcol = sns.color_palette("viridis", len(targets))
    xmax = float(np.nanmax([runs[schema.time_to_target(p)].max() for p in targets] + [1.0]))
    for j, p in enumerate(targets):
        k = schema.time_to_target(p)
        ax.plot([], [], "o", color=tcol[j], label=f"{p:g} %")  # in the legend even if no run reached it
        for i, cfg in enumerate(configs):
            v = runs.loc[runs["configuration"] == cfg, k]
            y = i + (j - (len(targets) - 1) / 2) * 0.8 / max(1, len(targets))
            m, lo, hi = stats.t_interval(v)
            if not math.isnan(m):
                ax.errorbar(m, y, xerr=[[m - lo], [hi - m]] if not math.isnan(lo) else None, fmt="o", ms=4,
                            color=tcol[j], capsize=2)
            miss = int(v.isna().sum())
            if miss:  # never silently dropped: mark how many runs never reached it
                ax.plot(xmax * 1.06, y, marker="x", color=tcol[j], ms=5)
                ax.text(xmax * 1.09, y, f"{miss}/{len(v)} not reached", va="center", fontsize=6, color=tcol[j])
    ax.set_yticks(range(len(configs)), [str(c) for c in configs], fontsize=7 if len(configs) <= 20 else 5)
    ax.invert_yaxis()
    ax.set_xlim(0, xmax * 1.35)
    ax.set(xlabel="elapsed time to reach the target test accuracy (s)",
           title="Time to target accuracy (mean over runs that reached it, 95 % t-interval; x: not reached)")
    ax.legend(title="target", loc="lower right", fontsize=7)
    return fig


def factor_effects(runs, varying, main_target) -> plt.Figure | None:
    factors = [f for f in stats.FACTORS if f in varying] or varying[:3]
    if not factors:
        return None
    ys = [("best_test_acc", "best test accuracy (%)", 100.0), ("total_time_s", "total time (s)", 1.0)]
    if main_target is not None:
        ys.append((schema.time_to_target(main_target), f"time to {main_target:g} % (s, runs that reached it)", 1.0))
    fig, axes = plt.subplots(len(ys), len(factors), figsize=(max(7.5, 3.4 * len(factors) + 1), 2.6 * len(ys)), squeeze=False,
                             layout="constrained")
    for j, f in enumerate(factors):
        for i, (m, label, scale) in enumerate(ys):
            d = runs[[f, m]].dropna().assign(v=lambda d: scale * d[m])
            sns.pointplot(data=d, x=f, y="v", errorbar=_tci, capsize=0.15, ax=axes[i][j], color="C0")
            axes[i][j].set(xlabel=f, ylabel=label if j == 0 else "")
    _title(fig, "Effect of each factor, averaged over the other factors and seeds (mean, 95 % t-interval)")
    return fig


def pareto(summ, colors) -> plt.Figure:
    fig, ax = _figure(len(colors) + 1, height=4.5)
    x, y = summ["total_time_s_mean"], 100 * summ["best_test_acc_mean"]
    for _, r in summ.iterrows():
        xe = [[r.total_time_s_mean - r.total_time_s_ci_low], [r.total_time_s_ci_high - r.total_time_s_mean]]
        ye = [[100 * (r.best_test_acc_mean - r.best_test_acc_ci_low)],
              [100 * (r.best_test_acc_ci_high - r.best_test_acc_mean)]]
        ok = not math.isnan(r.total_time_s_ci_low)
        ax.errorbar(r.total_time_s_mean, 100 * r.best_test_acc_mean, xerr=xe if ok else None,
                    yerr=ye if ok else None, fmt="o", color=colors[r.configuration], label=str(r.configuration),
                    capsize=2, ms=5)
    order = np.argsort(x.to_numpy())  # front: no other configuration is both faster and more accurate
    front, best = [], -np.inf
    for i in order:
        if y.iloc[i] > best:
            front.append(i)
            best = y.iloc[i]
    ax.plot(x.iloc[front], y.iloc[front], "k--", lw=1, drawstyle="steps-post", label="Pareto front")
    ax.set(xlabel="total training time (s)", ylabel="best test accuracy (%)",
           title="Best accuracy vs total time per configuration (mean, 95 % t-interval)")
    _legend(fig, ax, len(colors) + 1)
    return fig


def lecture_plots(runs, epochs, colors) -> plt.Figure:
    fig, (a, b) = _figure(len(colors), 11, 4.2, panels=2)
    for metric, ls in (("train_loss", "-"), ("train_aux_loss", "--")):
        if epochs[metric].notna().any():
            for cfg, g in stats.by_epoch(runs, epochs, metric).groupby("configuration", observed=True):
                a.plot(g["epoch"], g["mean"], ls, color=colors[cfg], lw=1.2, marker="o", ms=2)
    a.set(xlabel="epoch", ylabel="cross-entropy", title="main (solid) vs auxiliary (dashed) training loss")
    for metric, ls in (("train_acc", "--"), ("test_acc", "-")):
        for cfg, g in stats.by_epoch(runs, epochs, metric).groupby("configuration", observed=True):
            b.plot(g["epoch"], 100 * g["mean"], ls, color=colors[cfg], lw=1.2, marker="o", ms=2,
                   label=str(cfg) if metric == "test_acc" else None)
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="train (dashed) vs test (solid) accuracy")
    _legend(fig, b, len(colors))
    _title(fig, "The lecture's two plots, mean over seeds per configuration")
    return fig


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


def filters(reps: list[tuple[str, str, dict]]) -> plt.Figure | None:
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
    return fig


def lecture_reference(runs, epochs, colors) -> plt.Figure | None:
    if "model" not in runs or not (runs["model"].astype(str) == "inception_v3").any():
        return None
    inc = runs[runs["model"].astype(str) == "inception_v3"]
    ep = epochs[epochs["run_id"].isin(inc["run_id"])]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    _accuracy_curves(a, inc, ep, "epoch", colors, step=False)
    _accuracy_curves(b, inc, curves.timed(inc, ep), "clock_s", colors, step=True)
    e = np.arange(1, len(LECTURE_TEST_ACC) + 1)
    for ax, x in ((a, e), (b, e * LECTURE_EPOCH_S)):
        ax.plot(x, LECTURE_TEST_ACC, "k--", marker="s", ms=4, lw=1.5,
                label=f"lecture (published; about {LECTURE_EPOCH_S:.0f} s/epoch)")
        ax.set(ylabel="test accuracy (%)")
    a.set(xlabel="epoch", title="inception_v3 runs vs the lecture, per epoch")
    b.set(xlabel="elapsed wall-clock time (s)", title="... and per second of training")
    a.legend(fontsize=7)
    return fig
