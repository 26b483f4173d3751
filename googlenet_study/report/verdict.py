"""The verdict: the ranking in a few sentences, for the top of the report.

Which configuration is first, on which criterion and clock; by how much (the ratio of ERTs with its
bootstrap interval, seed fixed, so the same runs give the same words); how sure (a shared rank or not, the
log-rank p); and what the runs cannot tell (rankings the seeds do not separate, configurations not ranked,
configurations that never reached the target). Plain DataFrames in, strings out."""

from __future__ import annotations

import math

import pandas as pd

from .. import schema
from ..statistics import robust, significance, survival
from ..statistics.ranking import MIN_RANKED_N, ert_column


def _timed(runs: pd.DataFrame, cfg, p: float) -> tuple:
    """(times, reached) of a configuration's timed runs to target p (censored data)."""
    g = runs[(runs["configuration"] == cfg) & (runs["time_excluded"] == "")]
    k = schema.time_to_target(p)
    return survival.observed(g[k], g[f"reached_{p:g}"], g["clock_end_s"])


def _s(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.1f}"


def _names(cfgs) -> str:
    c = [str(x) for x in cfgs]
    return c[0] if len(c) == 1 else ", ".join(c[:-1]) + " and " + c[-1]


def _by_time(rank: pd.DataFrame, runs: pd.DataFrame, p: float, clock: str) -> list[str]:
    k = ert_column(p)
    first, reached = rank.iloc[0], rank[rank["rank_by"].str.startswith("ERT")]
    hi = first[f"{k}_ci_high"] if pd.notna(first[f"{k}_ci_high"]) else math.inf  # empty: unbounded
    out = [f"First by ERT to {p:g} % on the {clock} clock: {first['configuration']} "
           f"({_s(first[k])} s [{_s(first[f'{k}_ci_low'])}, {_s(hi)}], {first['n_timed']} timed runs)."]
    if len(reached) < 2:
        return out + _missed(rank, p)
    second = reached.iloc[1]
    ta, ha = _timed(runs, first["configuration"], p)
    tb, hb = _timed(runs, second["configuration"], p)
    ratio, lo, hi = robust.ert_ratio_interval(ta, ha, tb, hb)
    lr = significance.logrank(ta, ha, tb, hb)  # exact at small n (permutation); its method said when not
    shared = str(second["rank"]).startswith("=") and second["rank"] == first["rank"]
    how = (f"The next, {second['configuration']}, is expected to take {ratio:.2f}× as long"
           + (f" [{lo:.2f}, {_s(hi) if math.isinf(hi) else f'{hi:.2f}'}] (95 % bootstrap)" if not math.isnan(lo) else "")
           + (f"; log-rank p = {lr.p:.3f}" + ("" if lr.method == significance.EXACT else f" ({lr.method})") + "."
              if not math.isnan(lr.p) else "."))
    out.append(how)
    if shared:
        n = {int(first["n_timed"]), int(second["n_timed"])}
        seeds = f"{n.pop()} seeds" if len(n) == 1 else f"{first['n_timed']} and {second['n_timed']} timed runs"
        out.append(f"They share rank {first['rank'].lstrip('=')}: their ERT intervals overlap, so {seeds} do not "
                   f"separate {first['configuration']} and {second['configuration']} to {p:g} %.")
    else:
        out.append(f"{first['configuration']} ranks first alone: its ERT interval is clear of the next one's.")
    return out + _missed(rank, p)


def _missed(rank: pd.DataFrame, p: float) -> list[str]:
    missed = rank[rank["rank_by"].str.startswith("accuracy: did not reach")]
    out = []
    if len(missed):
        out.append(f"{_names(missed['configuration'])} did not reach {p:g} % "
                   f"(ERT ∞; ranked after, by accuracy).")
    return out


def _by_accuracy(rank: pd.DataFrame) -> list[str]:
    first = rank.iloc[0]
    col = "best_test_acc_iqm"
    out = [f"No target was reached by at least half the timed runs of every undominated configuration: the ranking "
           f"is by best test accuracy. First: {first['configuration']} (IQM {100 * first[col]:.1f} %"
           + (f" [{100 * first[col + '_ci_low']:.1f}, {100 * first[col + '_ci_high']:.1f}]"
              if pd.notna(first[col + "_ci_low"]) else "") + ")."]
    tied = rank[(rank["rank"] == first["rank"]) & (rank.index != rank.index[0])]
    if str(first["rank"]).startswith("=") and len(tied):
        out.append(f"Its interval overlaps {_names(tied['configuration'])}'s: the runs do not separate them.")
    return out


def verdict(rank: pd.DataFrame, runs: pd.DataFrame, main_p: float | None, clock: str = "epoch") -> list[str]:
    """A few sentences from the ranking (stats.ranking's frame, in rank order) and the runs (stats.per_run's
    frame, for the ERT ratio's bootstrap and the log-rank test); main_p: the ranking target (None: by accuracy)."""
    ranked = rank[rank["rank"].astype(str) != ""]
    unranked = rank[rank["rank"].astype(str) == ""]
    if ranked.empty:
        out = [f"No configuration has {MIN_RANKED_N} or more timed runs with a value: nothing is ranked, every "
               "configuration is listed with its numbers."]
    elif main_p is not None and str(ranked.iloc[0]["rank_by"]).startswith("ERT"):
        out = _by_time(ranked, runs, main_p, clock)
    else:
        out = _by_accuracy(ranked)
    if len(unranked):
        out.append(f"Not ranked (fewer than {MIN_RANKED_N} timed runs): {_names(unranked['configuration'])}.")
    return out
