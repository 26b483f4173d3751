"""Report stage 3: the figures (seaborn on matplotlib). Every curve is aggregated before it is drawn (curves.py,
stats.py), so a figure costs about the same for 10 runs or 1,000. Each function returns a Drawn (title,
caption, figure) or None: a figure's caption is written beside the code that draws it. The lecture's own
figures are in lecture.py. Layouts are matplotlib's constrained layout, so titles, labels and legends stay
inside the frame."""

from __future__ import annotations

import math
import textwrap
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # no display: figures become PNG and PDF pages
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import schema  # noqa: E402
from ..statistics import robust  # noqa: E402
from ..statistics.clock import Clock  # noqa: E402
from . import curves, fmt, stats  # noqa: E402

LOG_X_SPREAD = 20.0  # log time axis when configurations' longest runs differ by more than this factor


class Drawn(NamedTuple):
    title: str      # the section's heading
    caption: str    # what the figure shows and how it was computed, for the reader
    fig: plt.Figure


def style() -> dict:
    return {**sns.axes_style("whitegrid"), **sns.plotting_context("paper"), "figure.dpi": 100,
            "text.parse_math": False}  # a run named "$x$" is text, not mathtext


def palette(configs: list) -> dict:
    colors = sns.color_palette("tab10" if len(configs) <= 10 else "husl", len(configs))
    return dict(zip(configs, colors))


def _tci(x) -> tuple[float, float]:
    """seaborn errorbar: the same Student-t interval as the tables."""
    _, lo, hi = robust.t_interval(x)
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


def _run_lines(ax, thin: pd.DataFrame, x: str, colors: dict, step: bool) -> None:
    """Every run as one thin line, all in one LineCollection (gid "runs"): 1,000 Line2D artists took seconds
    to draw and to lay out (constrained layout measures every artist). Each run's segment is a slice of one
    array of all points: a few numpy calls per run took seconds at 10,000 runs."""
    rid = thin["run_id"].to_numpy()
    first = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]])  # run_steps gives each run's points together, in x order
    end = np.r_[first[1:], len(rid)]
    xs, ys = thin[x].to_numpy(float), 100 * thin["acc"].to_numpy(float)
    if step:  # steps-post: hold each value until the next x; a run's rows [2 first, 2 end - 1) of these pairs
        xy = np.column_stack([np.repeat(xs, 2)[1:], np.repeat(ys, 2)[:-1]])
        segs = [xy[2 * a:2 * b - 1] for a, b in zip(first, end)]
    else:
        xy = np.column_stack([xs, ys])
        segs = [xy[a:b] for a, b in zip(first, end)]
    cfg = thin["configuration"].to_numpy()
    ax.add_collection(LineCollection(segs, colors=[colors[cfg[a]] for a in first], linewidths=0.8, alpha=0.45,
                                     gid="runs"))
    ax.autoscale_view()


def _accuracy_curves(ax, runs, epochs, x: str, colors: dict, step: bool) -> pd.DataFrame:
    """Thin per-run lines under each configuration's mean and 95 % band; returns the mean frame drawn
    (curves.mean_curve)."""
    thin = curves.run_steps(runs, epochs, x)
    mean = curves.mean_curve(runs, epochs, x)
    kw = {"drawstyle": "steps-post"} if step else {}
    if len(thin):
        _run_lines(ax, thin, x, colors, step)
    for cfg, g in mean.groupby("configuration", observed=True, sort=True):
        ax.plot(g[x], 100 * g["mean"], color=colors[cfg], lw=1.8, label=f"{cfg} (n={g['n'].iloc[0]})",
                gid=f"mean:{cfg}", **(kw or {"marker": "o", "ms": 3}))
        ax.fill_between(g[x], 100 * g["low"].clip(0, 1), 100 * g["high"].clip(0, 1), color=colors[cfg], alpha=0.18,
                        lw=0, step="post" if step else None)
    return mean


def acc_vs_epoch(runs, epochs, colors) -> Drawn:
    fig, ax = _figure(len(colors))
    _accuracy_curves(ax, runs, epochs, "epoch", colors, step=False)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)",
           title="Test accuracy per epoch (thin: runs; thick: mean of all n runs, 95 % t-interval)")
    _legend(fig, ax, len(colors))
    return Drawn("Test accuracy per epoch",
                 "Thin lines: runs; thick line and band: the mean of all n runs of a configuration with its 95 % "
                 "t-interval (none when n = 1), where every run has that epoch or has ended (then holding its final "
                 "accuracy).", fig)


def acc_vs_time(runs, epochs, colors, clock: Clock) -> Drawn:
    fig, ax = _figure(len(colors))
    mean = _accuracy_curves(ax, runs, curves.timed(runs, epochs, clock), "clock_s", colors, step=True)
    _log_x_if_spread(ax, mean.groupby("configuration", observed=True)["clock_s"].max())
    ax.set(xlabel=clock.axis + (", log scale" if ax.get_xscale() == "log" else ""),
           ylabel="test accuracy (%)",
           title=f"Test accuracy vs time on the {clock.label} (thin: runs; thick: mean of all n runs, "
                 "95 % t-interval)")
    _legend(fig, ax, len(colors))
    return Drawn(f"Test accuracy vs {clock.measures}",
                 f"The main figure, on the {clock.label} ({clock.axis}). Thin lines: each "
                 "run's last evaluated test accuracy, held until its next epoch ends, and its final accuracy once it "
                 "has finished. Thick line and band: the mean of all n runs of a configuration with its 95 % "
                 "t-interval, on that configuration's own epoch ends, drawn from the moment every one of its runs has "
                 "been evaluated to the end of its longest run (the set of runs behind a mean never changes along "
                 "it; other configurations do not move it).", fig)


def reached_target(runs, target, colors, clock: Clock) -> Drawn | None:
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
    ax.set(xlabel=clock.axis + (", log scale" if ax.get_xscale() == "log" else ""),
           ylabel=f"runs that reached {target:g} % (%)", ylim=(-2, 102),
           title=f"Runs that have reached {target:g} % test accuracy (Kaplan-Meier, 95 % interval; unreached runs "
                 "censored at their end)")
    if not _log_x_if_spread(ax, d.groupby("configuration", observed=True)["t"].max()):
        ax.set_xlim(left=0)
    _legend(fig, ax, len(colors))
    return Drawn("Runs that have reached the ranking target",
                 f"Kaplan-Meier estimate (the one behind the tables' medians) of the fraction of each configuration's "
                 f"timed runs that have reached {target:g} % by each second on the {clock.label}, with its "
                 "95 % interval; a run that never reached it is censored at its end (it counts as not yet there, "
                 "never as dropped).", fig)


def profiles(prof: pd.DataFrame | None, colors, clock: Clock) -> Drawn | None:
    """Performance profiles (Dolan & More): rho(tau), the fraction of workloads whose ERT is within a factor
    tau of the best configuration's; `prof` is profiles.performance_profile's frame (configuration, tau, rho)."""
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
    return Drawn("Performance profiles",
                 "Dolan & More: for each workload (model, dataset, target) a configuration's ratio r = its expected "
                 f"running time (ERT, {clock.label}) to the best configuration's ERT there; the line is "
                 "rho(tau), the share of workloads with r <= tau. High and to the left is better; its area over "
                 "[1, 4] / 3 is profile_score.", fig)


def epoch_time(runs, varying) -> Drawn:
    x = "batch_size" if "batch_size" in varying else (varying[0] if varying else "configuration")
    hue = "backbone" if "backbone" in varying and x != "backbone" else None
    col = "aux_weight" if "aux_weight" in varying and x != "aux_weight" else None
    levels = sorted(runs[col].unique()) if col else [None]
    fig, axes = plt.subplots(1, len(levels), figsize=(min(4 * len(levels), 12) + 1, 4), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, lv in zip(axes[0], levels):
        d = runs if lv is None else runs[runs[col] == lv]
        sns.barplot(data=d, x=x, y=schema.EPOCH_TIME, hue=hue, errorbar=_tci, capsize=0.1, ax=ax,
                    palette="deep" if hue else None, legend=ax is axes[0][-1])
        ax.set(title=f"{col}={lv}" if col else "", ylabel="seconds per epoch (epoch clock)")
        if x == "configuration":
            ax.tick_params(axis="x", rotation=80, labelsize=6)
    _title(fig, "Seconds per epoch" + (f" by {x}" if x != "configuration" else "")
           + (f" x {hue}" if hue else "") + (f" x {col}" if col else "") + " (mean, 95 % t-interval)")
    return Drawn("Seconds per epoch", "epoch_time_s (the epoch clock: training + evaluation, whatever the report's "
                 "clock): the mean over each run's epochs, then the mean and 95 % t-interval across runs.", fig)


def time_to_target(runs, targets, colors, clock: Clock) -> Drawn:
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
            m, lo, hi = robust.t_interval(v)
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
    ax.set(xlabel=f"time to reach the target test accuracy {fmt.seconds(clock)}",
           title="Time to target accuracy (mean over runs that reached it, 95 % t-interval; x: not reached)")
    ax.legend(title="target", loc="lower right", fontsize=7)
    return Drawn("Time to target accuracy", f"Seconds on the {clock.label}: the mean over the timed runs "
                 "that reached the target; runs that never reached it are counted on the right.", fig)


def factor_effects(runs, varying, main_target, clock: Clock) -> Drawn | None:
    factors = [f for f in stats.FACTORS if f in varying] or varying[:3]
    if not factors:
        return None
    ys = [(schema.BEST_ACC, "best test accuracy (%)", 100.0), (schema.TOTAL_TIME, "total time (s, epoch clock)", 1.0)]
    if main_target is not None:
        ys.append((schema.time_to_target(main_target),
                   f"time to {main_target:g} % (s, {clock.label}; runs that reached it)", 1.0))
    fig, axes = plt.subplots(len(ys), len(factors), figsize=(max(7.5, 3.4 * len(factors) + 1), 2.6 * len(ys)),
                             squeeze=False, layout="constrained")
    for j, f in enumerate(factors):
        for i, (m, label, scale) in enumerate(ys):
            d = runs[[f, m]].dropna().assign(v=lambda d: scale * d[m])
            sns.pointplot(data=d, x=f, y="v", errorbar=_tci, capsize=0.15, ax=axes[i][j], color="C0")
            axes[i][j].set(xlabel=f, ylabel=label if j == 0 else "")
    _title(fig, "Effect of each factor, averaged over the other factors and seeds (mean, 95 % t-interval)")
    return Drawn("Effect of each factor", "Marginal means over all runs at each level of a factor (other factors and "
                 "seeds pooled); total time on the epoch clock.", fig)


def pareto(summ, colors) -> Drawn:
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
    ax.set(xlabel="total time (s, epoch clock)", ylabel="best test accuracy (%)",
           title="Best accuracy vs total time per configuration (mean, 95 % t-interval)")
    _legend(fig, ax, len(colors) + 1)
    return Drawn("Best accuracy vs total time", "total_time_s on the epoch clock. Dashed: the Pareto front (no "
                 "configuration is both faster and more accurate than one on it).", fig)
