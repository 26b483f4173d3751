"""Report stage 2b: the data the curve figures draw, one frame per figure, so tests can read what is drawn.

Accuracy curves (issue 11, item 5): each run is a step function of x (seconds on the report's clock, or the
epoch): from the end of an epoch it holds that epoch's test accuracy until the next epoch ends, and after its
last epoch its final accuracy. A configuration's mean is taken on its own grid (the x of its runs' epoch
ends), only where every one of its runs has been evaluated at least once, and only up to its own longest
run's end: the set of runs behind a mean never changes along the curve, and other configurations in the
report (a much slower one, say) cannot move a configuration's points.

Reached-target curves (item 2): the Kaplan-Meier estimate (survival.py) of the fraction of runs that have
reached P by time t; a run that never reached P is censored at the end of its clock, not dropped."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import schema
from ..statistics import robust, survival
from ..statistics.clock import Clock, on_clock
from . import stats

MAX_GRID = 600  # points per configuration's mean curve: beyond this, an even grid (1,000-run reports)


def timed(runs: pd.DataFrame, epochs: pd.DataFrame, clock: Clock) -> pd.DataFrame:
    """The per-epoch rows of the runs whose times count (not resumed on other hardware), with clock_s: the
    seconds on the report's clock at the end of each epoch."""
    keep = runs.loc[runs["time_excluded"] == "", "run_id"] if "time_excluded" in runs else runs["run_id"]
    return on_clock(epochs[epochs["run_id"].isin(keep)], clock)


def _histories(runs: pd.DataFrame, epochs: pd.DataFrame, x: str):
    """(configuration, run_id, xs, accs) per run with at least one evaluated epoch, in x order; runs in the
    order of `runs` (stats.per_run's canonical order: never the store's, nor the run ids', which differ by store)."""
    cfg = dict(zip(runs["run_id"], runs["configuration"]))
    pos = pd.Series(np.arange(len(runs)), index=runs["run_id"].to_numpy())
    e = epochs[["run_id", x, schema.ACCURACY]].dropna()
    e = e[e["run_id"].isin(list(cfg))]
    e = e.assign(_pos=pos.reindex(e["run_id"]).to_numpy()).sort_values(["_pos", x], kind="stable")
    if not len(e):
        return
    rid, xs, acc = e["_pos"].to_numpy(), e[x].to_numpy(float), e[schema.ACCURACY].to_numpy(float)
    cut = np.flatnonzero(rid[1:] != rid[:-1]) + 1  # one slice per run: numpy, not 1,000 pandas groups
    rid = e["run_id"].to_numpy()
    for r, xx, aa in zip(rid[np.r_[0, cut]], np.split(xs, cut), np.split(acc, cut)):
        yield cfg[r], r, xx, aa


def run_steps(runs: pd.DataFrame, epochs: pd.DataFrame, x: str = "clock_s") -> pd.DataFrame:
    """configuration, run_id, x, acc: each run's step points (one per epoch end) and, where a run ended
    before its configuration's longest run, one more point at that end holding its final accuracy."""
    hist = list(_histories(runs, epochs, x))
    end: dict = {}
    for c, _, xs, _ in hist:
        end[c] = max(end.get(c, -math.inf), xs[-1])
    cs, rids, xss, accs = [], [], [], []
    for c, rid, xs, acc in hist:
        if xs[-1] < end[c]:
            xs, acc = np.append(xs, end[c]), np.append(acc, acc[-1])
        cs.append(np.repeat(np.array([c], dtype=object), len(xs)))
        rids.append(np.repeat(np.array([rid], dtype=object), len(xs)))
        xss.append(xs)
        accs.append(acc)
    if not hist:
        return pd.DataFrame(columns=["configuration", "run_id", x, "acc"])
    return pd.DataFrame({"configuration": np.concatenate(cs), "run_id": np.concatenate(rids),
                         x: np.concatenate(xss), "acc": np.concatenate(accs)})


def mean_curve(runs: pd.DataFrame, epochs: pd.DataFrame, x: str = "clock_s") -> pd.DataFrame:
    """configuration, x, n, mean, low, high: the mean of a configuration's step functions with a 95 %
    Student-t band (NaN for n = 1), on the configuration's own grid, where all its n runs are present."""
    by_cfg: dict = {}
    for c, _, xs, acc in _histories(runs, epochs, x):
        by_cfg.setdefault(c, []).append((xs, acc))
    out = []
    for c, hs in by_cfg.items():
        start, end = max(h[0][0] for h in hs), max(h[0][-1] for h in hs)  # all evaluated .. longest run ends
        grid = np.unique(np.concatenate([h[0] for h in hs]))
        grid = grid[(grid >= start) & (grid <= end)]
        if len(grid) > MAX_GRID:
            grid = np.union1d(np.linspace(start, end, MAX_GRID), [start, end])
        # Row i: run i's value at each grid point (last epoch end <= t; its final accuracy after it ends).
        v = np.stack([acc[np.searchsorted(xs, grid, side="right") - 1] for xs, acc in hs])
        n = len(hs)
        m = v.mean(axis=0)
        h = robust.t_half_width(v.std(axis=0, ddof=1) if n > 1 else np.nan, np.full(len(grid), n))
        out.append(pd.DataFrame({"configuration": c, x: grid, "n": n, "mean": m, "low": m - h, "high": m + h}))
    cols = ["configuration", x, "n", "mean", "low", "high"]
    d = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)
    if len(d) and isinstance(runs["configuration"].dtype, pd.CategoricalDtype):
        d["configuration"] = pd.Categorical(d["configuration"], categories=runs["configuration"].cat.categories)
    return d


def reached_curve(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """configuration, n, t, reached, low, high: the Kaplan-Meier fraction of a configuration's n timed runs
    that have reached `target` % by t seconds on the report's clock, with its 95 % interval
    (survival.km_reached, the estimate behind the tables' medians); unreached runs are censored at their end."""
    k = schema.time_to_target(target)
    out = []
    for c, g in runs.groupby("configuration", observed=True, sort=True):
        t, hit = survival.observed(g[k], g[stats.reached(target)], g["clock_end_s"])
        if len(t):
            out.append(survival.km_reached(t, hit).assign(configuration=c, n=len(t)))
    cols = ["configuration", "n", "t", "reached", "low", "high"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)
