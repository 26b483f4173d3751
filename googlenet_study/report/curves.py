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


def _points(runs: pd.DataFrame, epochs: pd.DataFrame, x: str):
    """Every evaluated epoch of the runs as arrays, run by run in the order of `runs` (stats.per_run's canonical
    order: never the store's, nor the run ids', which differ by store), in x order within a run: (pos, xs,
    accs, starts): the run's row in `runs` per point, and where each run's points start. Arrays, not a loop
    over runs: per-run numpy calls took seconds at 10,000 runs."""
    e = epochs[["run_id", x, schema.ACCURACY]].dropna()
    code, ids = pd.factorize(e["run_id"])  # 10,000 distinct ids looked up, not 300,000 strings
    p = pd.Index(runs["run_id"]).get_indexer(ids)[code]  # -1: not one of these runs
    xs, acc = e[x].to_numpy(float), e[schema.ACCURACY].to_numpy(float)
    order = np.lexsort((xs, p))  # stable: equal x keep the epochs' order
    order = order[p[order] >= 0]
    p, xs, acc = p[order], xs[order], acc[order]
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]]) if len(p) else np.array([], dtype=int)
    return p, xs, acc, starts


def _by_config(runs: pd.DataFrame, p: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(configuration of each run that has points, its code: 0, 1, ... in order of first appearance)."""
    cfg = np.asarray(runs["configuration"], dtype=object)[p[starts]]
    return cfg, pd.factorize(cfg)[0]


def run_steps(runs: pd.DataFrame, epochs: pd.DataFrame, x: str = "clock_s") -> pd.DataFrame:
    """configuration, run_id, x, acc: each run's step points (one per epoch end) and, where a run ended
    before its configuration's longest run, one more point at that end holding its final accuracy."""
    p, xs, acc, starts = _points(runs, epochs, x)
    if not len(p):
        return pd.DataFrame(columns=["configuration", "run_id", x, "acc"])
    last = np.r_[starts[1:], len(p)] - 1  # each run's last point
    _, code = _by_config(runs, p, starts)
    end = np.full(code.max() + 1, -math.inf)
    np.maximum.at(end, code, xs[last])  # each configuration's longest run's end
    short = xs[last] < end[code]
    at = last[short] + 1  # the held final accuracy goes after the run's last point
    p, xs = np.insert(p, at, p[last[short]]), np.insert(xs, at, end[code][short])
    acc = np.insert(acc, at, acc[last[short]])
    return pd.DataFrame({"configuration": _at(runs["configuration"], p), "run_id": _at(runs["run_id"], p),
                         x: xs, "acc": acc})


def _at(col: pd.Series, p: np.ndarray):
    """A column of `runs` at each point, typed as pandas infers it from the values: one value per run inferred
    and then taken, not 300,000 strings parsed."""
    return pd.Series(np.asarray(col, dtype=object)).array.take(p)


def mean_curve(runs: pd.DataFrame, epochs: pd.DataFrame, x: str = "clock_s") -> pd.DataFrame:
    """configuration, x, n, mean, low, high: the mean of a configuration's step functions with a 95 %
    Student-t band (NaN for n = 1), on the configuration's own grid, where all its n runs are present."""
    p, xs, acc, starts = _points(runs, epochs, x)
    cfgs, code = _by_config(runs, p, starts)
    run_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(p)]))  # each point's run (0, 1, ...)
    last = np.r_[starts[1:], len(p)] - 1
    out = []
    for k in range(code.max(initial=-1) + 1):
        mine = np.flatnonzero(code == k)  # its runs, in run order
        c, pts = cfgs[mine[0]], code[run_of] == k
        start, end = xs[starts[mine]].max(), xs[last[mine]].max()  # all evaluated .. longest run ends
        grid = np.unique(xs[pts])
        grid = grid[(grid >= start) & (grid <= end)]
        if len(grid) > MAX_GRID:
            grid = np.union1d(np.linspace(start, end, MAX_GRID), [start, end])
        # Row i: run i's value at each grid point (last epoch end <= t; its final accuracy after it ends): the
        # number of its points at or before each grid point, counted for all runs at once.
        n, g = len(mine), len(grid)
        local = np.searchsorted(mine, run_of[pts])
        first_at = np.searchsorted(grid, xs[pts], side="left")  # a point counts from this grid index on
        seen = np.bincount(local * (g + 1) + first_at, minlength=n * (g + 1)).reshape(n, g + 1).cumsum(axis=1)
        v = acc[starts[mine][:, None] + seen[:, :g] - 1]
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
