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
- every other live configuration is tested against the leader with the log-rank test on time to target
  as censored data (scipy.stats.logrank, as the report's comparisons), one-sided: the alternative is
  that it reaches the target later than the leader;
- the p-values are Holm-corrected (Holm 1979) at alpha: the family-wise error of eliminating a
  configuration that is not slower stays <= alpha within a round (not across rounds; docs/sweeps.md);
- eliminated: Holm-adjusted p <= alpha. The race stops when one configuration is left (`one left`),
  every survivor has max_seeds (`max_seeds`) or the runs have used budget_s seconds (`budget_s`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .schema import ACCURACY, CLOCK
from .schema import time_to_target as _ttt
from .statistics.significance import holm  # the report's correction too
from .statistics.target import at_target
from .study import RACING_KEYS as KEYS  # noqa: F401 - the block's type and parser live with the study file's
from .study import Racing
from .study import parse_racing as parse  # noqa: F401

if TYPE_CHECKING:  # pandas and the report load in the functions: study.py validates a racing: block without them
    import pandas as pd

ELIMINATE, KEEP, LEADER = "eliminate", "keep", "leader"
ONE_LEFT, MAX_SEEDS_REACHED, BUDGET = "one left", "max_seeds", "budget_s"  # tag racing_stopped_by


@dataclass(frozen=True)
class Round:
    """One round's decision."""
    target: float | None          # percent: the round's ranking target (None: no live configuration reached one)
    leader: str | None
    table: pd.DataFrame           # configuration, seeds, reached, ert, p_value, p_holm, decision (live ones)
    stopped_by: str | None        # ONE_LEFT | MAX_SEEDS_REACHED | BUDGET, None: the race goes on

    @property
    def survivors(self) -> list[str]:
        return list(self.table.loc[self.table["decision"] != ELIMINATE, "configuration"])


def _censored(g: pd.DataFrame, p: float) -> tuple[np.ndarray, np.ndarray]:
    """(seconds until each timed run reached target p or ended, 1.0 where it reached it): the report's."""
    from .report import stats
    from .statistics import survival

    return survival.observed(g[_ttt(p)], g[stats.reached(p)], g["clock_end_s"])


def _by_target(runs: pd.DataFrame, live: list[str], targets: Sequence[float]) -> dict:
    """{configuration: {target: (t, hit)}} for the live configurations (one pass over the runs)."""
    groups = dict(tuple(runs.groupby("configuration", observed=True, sort=False)))
    empty = runs.iloc[:0]
    return {c: {p: _censored(groups.get(c, empty), p) for p in targets} for c in live}


def round_target(runs: pd.DataFrame, live: list[str], targets: Sequence[float],
                 _data: dict | None = None) -> float | None:
    """The report's ranking target (ranking.ranking_target on summary-like rows: runs, reached fraction and ERT
    per target) over the live configurations that reached the lowest target in at least half their timed runs;
    the others are compared at it, censored."""
    import pandas as pd

    from .statistics import ranking, survival

    data = _data if _data is not None else _by_target(runs, live, targets)
    lowest = min(targets)
    rows = []
    for c, d in data.items():
        n = len(d[lowest][0])
        row = {"configuration": c, "n_runs": n, "n_timed": n}
        for p in targets:
            row[f"{_ttt(p)}_reached"] = float(d[p][1].mean()) if n else 0.0
            row[f"{_ttt(p)}_ert"] = survival.ert(*d[p]) if n else math.nan
        rows.append(row)
    reaching = [r for r in rows if r[f"{_ttt(lowest)}_reached"] >= 0.5]
    return ranking.ranking_target(pd.DataFrame(reaching), tuple(targets)) if reaching else None


def logrank_slower(t: np.ndarray, hit: np.ndarray, t_lead: np.ndarray, hit_lead: np.ndarray) -> float:
    """One-sided log-rank p-value for "reaches the target later than the leader" (scipy's alternative
    'less': the first group's rate of reaching it is lower); NaN when no run of either reached it."""
    import warnings

    from scipy import stats

    if len(t) == 0 or len(t_lead) == 0 or hit.sum() + hit_lead.sum() == 0:
        return math.nan
    x = stats.CensoredData(uncensored=t[hit > 0], right=t[hit == 0])
    y = stats.CensoredData(uncensored=t_lead[hit_lead > 0], right=t_lead[hit_lead == 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.logrank(x, y, alternative="less").pvalue
    return float(p) if np.isfinite(p) else math.nan


def decide(runs: pd.DataFrame, live: list[str], targets: Sequence[float], racing: Racing,
           spent_s: float = 0.0) -> Round:
    """The round's decision. `runs`: one row per finished run with configuration, clock_end_s (s on the report's
    clock), time_to_test_acc_P (NaN: not reached) and reached_P for each target (stats.per_run's columns, or
    runs_from_curves); `live`: the configurations still racing, in order; spent_s: s the study's runs used."""
    import pandas as pd

    from .statistics import survival

    data = _by_target(runs, live, targets)
    p_target = round_target(runs, live, targets, data)
    seeds = [len(data[c][min(targets)][0]) for c in live]
    table = pd.DataFrame({"configuration": live, "seeds": seeds, "reached": math.nan, "ert": math.nan,
                          "p_value": math.nan, "p_holm": math.nan, "decision": KEEP})
    leader = None
    if p_target is not None:
        obs = [data[c][p_target] for c in live]
        table["reached"] = [float(h.mean()) if len(h) else math.nan for _, h in obs]
        table["ert"] = [survival.ert(t, h) for t, h in obs]
        i = int(np.argmin(np.nan_to_num(table["ert"].to_numpy(dtype=float), nan=math.inf)))
        leader = live[i]
        table["p_value"] = [math.nan if j == i else logrank_slower(*obs[j], *obs[i]) for j in range(len(live))]
        table["p_holm"] = adjusted = holm(table["p_value"])
        table.loc[adjusted <= racing.alpha, "decision"] = ELIMINATE
        table.at[i, "decision"] = LEADER
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
    clock (stats.on_clock 'epoch'): a run's time to P is the clock at its first epoch with test_acc >= P %
    (as stats.per_run), its end the clock at its last epoch. `configuration`: run -> configuration."""
    import pandas as pd

    from .report import stats

    rows = []
    for run, curve in curves.items():
        e = pd.DataFrame(curve, columns=["epoch", CLOCK, ACCURACY]).assign(run_id=run)
        e = stats.on_clock(e, "epoch")
        row = {"run_id": run, "configuration": configuration[run], "clock_end_s": float(e["clock_s"].max())}
        for p in targets:
            hit = e[at_target(e[ACCURACY], p)]  # the engine's and the report's rule
            row[_ttt(p)] = float(hit["clock_s"].iloc[0]) if len(hit) else math.nan
            row[stats.reached(p)] = bool(len(hit))
        rows.append(row)
    cols = ["run_id", "configuration", "clock_end_s"] + [c for p in targets for c in (_ttt(p), stats.reached(p))]
    return pd.DataFrame(rows, columns=cols)
