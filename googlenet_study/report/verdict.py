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
from ..statistics.clock import Clock
from ..statistics.ranking import MIN_RANKED_N, ert_column, ranking

FEW = 4  # names in a list before "and k more"
# Why a configuration is not ranked, from ranking's rank_by (its count of runs), in the verdict's words.
NOT_RANKED = (("not ranked: 0 accuracy runs", "no accuracy recorded"),
              ("accuracy run", f"fewer than {MIN_RANKED_N} runs with an accuracy"),
              ("timed run", f"fewer than {MIN_RANKED_N} timed runs"))


def _timed(runs: pd.DataFrame, cfg, p: float) -> tuple:
    """(times, reached) of a configuration's timed runs to target p (censored data)."""
    g = runs[(runs["configuration"] == cfg) & (runs["time_excluded"] == "")]
    k = schema.time_to_target(p)
    return survival.observed(g[k], g[f"reached_{p:g}"], g["clock_end_s"])


def _s(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.1f}"


def _names(cfgs, few: int = FEW) -> str:
    """a; a and b; a, b and c; past `few` + 1 names: the first `few`, then "and k more"."""
    c = [str(x) for x in cfgs]
    if len(c) > few + 1:
        return ", ".join(c[:few]) + f" and {len(c) - few} more"
    return c[0] if len(c) == 1 else ", ".join(c[:-1]) + " and " + c[-1]


def _seeds(rows: pd.DataFrame) -> str:
    n = sorted({int(x) for x in rows["n_timed"]})
    return f"{n[0]} seeds" if len(n) == 1 else f"their {n[0]} to {n[-1]} timed runs"


def _by_time(rank: pd.DataFrame, runs: pd.DataFrame, p: float, clock: Clock) -> list[str]:
    k = ert_column(p)
    first, reached = rank.iloc[0], rank[rank["rank_by"].str.startswith("ERT")]
    hi = first[f"{k}_ci_high"] if pd.notna(first[f"{k}_ci_high"]) else math.inf  # empty: unbounded
    out = [f"First by ERT to {p:g} % on the {clock.label}: {first['configuration']} "
           f"({_s(first[k])} s [{_s(first[f'{k}_ci_low'])}, {_s(hi)}], {first['n_timed']} timed runs)."]
    if len(reached) < 2:
        return out + _missed(rank, p)
    second = reached.iloc[1]
    ta, ha = _timed(runs, first["configuration"], p)
    tb, hb = _timed(runs, second["configuration"], p)
    ratio, lo, hi = robust.ert_ratio_interval(ta, ha, tb, hb)
    lr = significance.logrank(ta, ha, tb, hb)  # exact at small n (permutation); its method said when not
    shared = str(first["rank"]).startswith("=")  # rank 1's block (ranking._shared_ranks) has more than one
    how = (f"The next, {second['configuration']}, is expected to take {ratio:.2f}× as long"
           + (f" [{lo:.2f}, {_s(hi) if math.isinf(hi) else f'{hi:.2f}'}] (95 % bootstrap)" if not math.isnan(lo) else "")
           + (f"; log-rank p = {lr.p:.3f}{significance.how(lr)}." if not math.isnan(lr.p) else "."))
    out.append(how)
    if shared:
        tied = rank[rank["rank"] == first["rank"]]
        out.append(f"{first['configuration']} shares rank 1 with {_names(tied['configuration'].iloc[1:])}: their "
                   f"ERT intervals form a chain of overlaps, so {_seeds(tied)} do not separate them to {p:g} %.")
    else:
        out.append(f"{first['configuration']} ranks first alone: no other ranked configuration's ERT interval "
                   "overlaps its own.")
    return out + _higher(rank, p, clock) + _missed(rank, p)


def _higher(rank: pd.DataFrame, p: float, clock: Clock) -> list[str]:
    """When a higher target than p was reached by at least half the timed runs of two or more ranked
    configurations: who is first by ERT there, and how often the first at p reached it."""
    targets = sorted({float(schema.target_of(c[:-len("_ert")])) for c in rank.columns
                      if c.endswith("_ert") and schema.is_time_to_target(c)})
    ranked = rank[rank["rank"].astype(str) != ""]
    above = [q for q in targets if q > p and (ranked[f"{schema.time_to_target(q)}_reached"].astype(float)
                                             .fillna(0.0) >= 0.5).sum() >= 2]
    if not above:
        return []
    q, first = above[-1], rank.iloc[0]
    at_q, _ = ranking(ranked, tuple(targets), clock, target=q)
    best, k = at_q.iloc[0], ert_column(q)
    hi = best[f"{k}_ci_high"] if pd.notna(best[f"{k}_ci_high"]) else math.inf
    n = int(first["n_timed"])
    frac = float(first[f"{schema.time_to_target(q)}_reached"])
    got = 0 if math.isnan(frac) else int(round(frac * n))  # the reached fraction is of its timed runs
    return [f"{q:g} % is the highest target that at least half the timed runs of two or more ranked "
            f"configurations reached; first by ERT to {q:g} %: {best['configuration']} ({_s(best[k])} s "
            f"[{_s(best[f'{k}_ci_low'])}, {_s(hi)}]).",
            f"{first['configuration']}, first at {p:g} %, " + (f"never reached {q:g} % (0 of its {n} timed runs)."
                                                              if got == 0 else
                                                              f"reached {q:g} % in {got} of its {n} timed runs.")]


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
        out.append(f"It shares rank 1 with {_names(tied['configuration'])}: their accuracy intervals form a chain "
                   "of overlaps, so the runs do not separate them.")
    return out


def _not_ranked(unranked: pd.DataFrame) -> list[str]:
    """One sentence per reason (ranking's rank_by), each naming its configurations."""
    out, left = [], unranked
    for key, words in NOT_RANKED:
        hit = left["rank_by"].astype(str).str.contains(key, regex=False)
        if hit.any():
            out.append(f"Not ranked ({words}): {_names(left.loc[hit, 'configuration'])}.")
        left = left[~hit]
    return out


def verdict(rank: pd.DataFrame, runs: pd.DataFrame, main_p: float | None, clock: Clock) -> list[str]:
    """A few sentences from the ranking (ranking.ranking's frame, in rank order) and the runs (stats.per_run's
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
    return out + _not_ranked(unranked)
