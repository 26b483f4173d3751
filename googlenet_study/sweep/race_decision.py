"""Racing seeds: spend seeds only on the configurations whose verdict is still open.

F-Race (Birattari et al. 2002), irace (Lopez-Ibanez et al. 2016) and Hoeffding races (Maron & Moore 1994)
evaluate every candidate on a few instances, eliminate those significantly worse and give more instances
only to the survivors. Here a candidate is a configuration (a grid point of the study's space) and an
instance is a seed. This module is the round decision as a pure function (plain data in, decision out;
no MLflow, no Optuna), with the report's own statistics on the report's clock:

- the round's target is the report's ranking target (statistics/ranking.py's ranking_target) over the live configurations
  that reached the lowest target in at least half their runs; a live configuration that did not is still
  compared at that target, its runs censored (that is "reaching no target where the leader does");
- the leader is the live configuration with the smallest ERT to it (survival.ert, COCO's expected running
  time), ties by the configurations' order;
- every other live configuration is tested against the leader with a one-sided exact permutation test of
  the ERT ratio (statistics/ert_test.py): is its ERT larger? Runs that did not reach the target count only
  if they ran at least as long, in epochs, as the leader's longest run to it (evidence(): a loaded machine
  changes seconds, not epochs; a shorter run says nothing). A configuration that reaches nothing in such
  runs has ERT inf against the leader's finite one: 3 runs against 3 give p = 1/20;
- eliminated: p <= alpha, the round's (Racing.alpha_at its seeds; default 0.1 at 3-4 seeds, 0.15 from 5).
  alpha is a per-comparison, per-round knob, not a promise over the race: there is no correction over the
  round's tests, every round looks again, and the leader is chosen by the same data. What it gives over a
  race is measured by benchmarks/racing.py: with the default, a configuration truly tied with or faster than
  the leader that eliminated it was eliminated in 5.4-59.9 % of simulated races by scenario (59.9 %: two
  truly tied configurations, where it is harmless; docs/sweeps.md, Racing).

The race stops when one configuration is left (`one left`), every survivor has max_seeds (`max_seeds`) or
the runs have used budget_s seconds (`budget_s`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..schema import ACCURACY, CLOCK
from ..schema import time_to_target as _ttt
from ..statistics.target import at_target
from .study_file import Racing

if TYPE_CHECKING:  # pandas and the report load in the functions: sweep/study_file.py validates a racing: block without them
    import pandas as pd

ELIMINATE, KEEP, LEADER = "eliminate", "keep", "leader"
ONE_LEFT, MAX_SEEDS_REACHED, BUDGET = "one left", "max_seeds", "budget_s"  # tag racing_stopped_by


@dataclass(frozen=True)
class Round:
    """One round's decision."""
    target: float | None          # percent: the round's ranking target (None: no live configuration reached one)
    leader: str | None
    table: pd.DataFrame           # configuration, seeds, reached, ert, p_value, decision (live ones)
    stopped_by: str | None        # ONE_LEFT | MAX_SEEDS_REACHED | BUDGET, None: the race goes on

    @property
    def survivors(self) -> list[str]:
        return list(self.table.loc[self.table["decision"] != ELIMINATE, "configuration"])


EPOCHS_END = "epochs_end"  # runs_from_curves' columns: the epochs a run ran, and those it took to reach P %


def epochs_to(p: float) -> str:
    """runs_from_curves' column: the epoch at which a run first reached test accuracy p % (NaN: never)."""
    return f"epochs_to_test_acc_{p:g}"


def _censored(g: pd.DataFrame, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seconds until each timed run reached target p or ended, 1.0 where it reached it: the report's; and each
    run's length to there in epochs, or those seconds where the runs carry no epochs)."""
    from ..statistics import survival
    from ..statistics.target import reached

    t, hit = survival.observed(g[_ttt(p)], g[reached(p)], g["clock_end_s"])
    if EPOCHS_END not in g:
        return t, hit, t
    ok = np.isfinite(g["clock_end_s"].to_numpy(dtype=float))  # the runs survival.observed kept
    to_target, end = (g[c].to_numpy(dtype=float)[ok] for c in (epochs_to(p), EPOCHS_END))
    return t, hit, np.where(hit > 0, to_target, end)


def _by_target(runs: pd.DataFrame, live: list[str], targets: Sequence[float]) -> dict:
    """{configuration: {target: (t, hit, length)}} for the live configurations (one pass over the runs)."""
    groups = dict(tuple(runs.groupby("configuration", observed=True, sort=False)))
    empty = runs.iloc[:0]
    return {c: {p: _censored(groups.get(c, empty), p) for p in targets} for c in live}


def round_target(runs: pd.DataFrame, live: list[str], targets: Sequence[float],
                 _data: dict | None = None) -> float | None:
    """The report's ranking target (ranking.ranking_target on summary-like rows: runs, reached fraction and ERT
    per target) over the live configurations that reached the lowest target in at least half their timed runs;
    the others are compared at it, censored."""
    import pandas as pd

    from ..statistics import ranking, survival

    data = _data if _data is not None else _by_target(runs, live, targets)
    lowest = min(targets)
    rows = []
    for c, d in data.items():
        n = len(d[lowest][0])
        row = {"configuration": c, "n_runs": n, "n_timed": n}
        for p in targets:
            row[f"{_ttt(p)}_reached"] = float(d[p][1].mean()) if n else 0.0
            row[f"{_ttt(p)}_ert"] = survival.ert(*d[p][:2]) if n else math.nan
        rows.append(row)
    reaching = [r for r in rows if r[f"{_ttt(lowest)}_reached"] >= 0.5]
    return ranking.ranking_target(pd.DataFrame(reaching), tuple(targets)) if reaching else None


def evidence(obs: tuple, bar: float) -> tuple[np.ndarray, np.ndarray]:
    """(t, hit) of the runs that say something at the leader's pace: every run that reached the target, and those
    that ended without it after at least `bar` (epochs, or s without epochs) — shorter ones are left out."""
    t, hit, length = obs
    keep = (hit > 0) | (length >= bar - 1e-9)
    return t[keep], hit[keep]


def compare(obs: list[tuple], alpha: float) -> tuple[int, list[float], np.ndarray, np.ndarray]:
    """The round's tests, on arrays: obs[j] = (seconds until each run of configuration j reached the target or
    ended, 1.0 where it reached it, its length: epochs to the target or to its end, or those seconds without
    epochs). (leader index, ERTs, p, eliminated): the leader has the smallest ERT (first on ties); each other is
    tested against it with the one-sided exact permutation test of the ERT ratio (statistics/ert_test.py) on its
    and the leader's runs that reached the target or ran at least as long as the leader's longest run to it;
    p <= alpha eliminates it (no correction over the round's tests: alpha is per comparison, module doc)."""
    from ..statistics import ert_test, survival

    erts = [survival.ert(t, h) for t, h, _ in obs]
    i = int(np.argmin(np.nan_to_num(np.asarray(erts, dtype=float), nan=math.inf)))
    t_lead, hit_lead, len_lead = obs[i]
    bar = float(len_lead[hit_lead > 0].max()) if hit_lead.sum() else math.inf
    lead = evidence(obs[i], bar)
    p = np.array([math.nan if j == i else ert_test.ert_ratio_p(*evidence(o, bar), *lead)
                  for j, o in enumerate(obs)])
    return i, erts, p, p <= alpha  # NaN (no test) compares False: kept


def decide(runs: pd.DataFrame, live: list[str], targets: Sequence[float], racing: Racing,
           spent_s: float = 0.0) -> Round:
    """The round's decision. `runs`: one row per finished run with configuration, clock_end_s (s on the report's
    clock), time_to_test_acc_P (NaN: not reached) and reached_P for each target (stats.per_run's columns, or
    runs_from_curves, whose epoch columns let a run's length count in epochs); `live`: the configurations
    still racing, in order; spent_s: s the study's runs used."""
    import pandas as pd

    data = _by_target(runs, live, targets)
    p_target = round_target(runs, live, targets, data)
    seeds = [len(data[c][min(targets)][0]) for c in live]
    table = pd.DataFrame({"configuration": live, "seeds": seeds, "reached": math.nan, "ert": math.nan,
                          "p_value": math.nan, "decision": KEEP})
    leader = None
    if p_target is not None:
        obs = [data[c][p_target] for c in live]
        i, erts, p, out = compare(obs, racing.alpha_at(max(seeds)))
        table["reached"] = [float(h.mean()) if len(h) else math.nan for _, h, _ in obs]
        table["ert"], table["p_value"] = erts, p
        table.loc[out, "decision"] = ELIMINATE
        table.at[i, "decision"] = LEADER
        leader = live[i]
    survivors = table[table["decision"] != ELIMINATE]
    if len(survivors) <= 1:
        stopped = ONE_LEFT
    elif (survivors["seeds"] >= racing.max_seeds).all():
        stopped = MAX_SEEDS_REACHED
    elif racing.budget_s is not None and spent_s >= racing.budget_s:
        stopped = BUDGET
    else:
        stopped = None
    return Round(p_target, leader, table, stopped)


def runs_from_curves(curves: dict[str, list[list[float]]], configuration: dict[str, str],
                     targets: Sequence[float]) -> pd.DataFrame:
    """decide()'s `runs` from each run's curve [[epoch, elapsed_time_s, test_acc], ...] on the report's default
    clock (statistics.clock.EPOCH): a run's time to P is the clock at its first epoch with test_acc >= P %
    (as stats.per_run), its end the clock at its last epoch; epochs_to(P) and EPOCHS_END the same in epochs.
    `configuration`: run -> configuration."""
    import pandas as pd

    from ..statistics.clock import EPOCH, on_clock
    from ..statistics.target import reached

    rows = []
    for run, curve in curves.items():
        e = pd.DataFrame(curve, columns=["epoch", CLOCK, ACCURACY]).assign(run_id=run)
        e = on_clock(e, EPOCH)
        row = {"run_id": run, "configuration": configuration[run], "clock_end_s": float(e["clock_s"].max()),
               EPOCHS_END: float(e["epoch"].max())}
        for p in targets:
            hit = e[at_target(e[ACCURACY], p)]  # the engine's and the report's rule
            row[_ttt(p)] = float(hit["clock_s"].iloc[0]) if len(hit) else math.nan
            row[epochs_to(p)] = float(hit["epoch"].iloc[0]) if len(hit) else math.nan
            row[reached(p)] = bool(len(hit))
        rows.append(row)
    cols = ["run_id", "configuration", "clock_end_s", EPOCHS_END] + [
        c for p in targets for c in (_ttt(p), epochs_to(p), reached(p))]
    return pd.DataFrame(rows, columns=cols)
