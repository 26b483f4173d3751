"""The report's Racing section: what a racing study's rounds decided (docs/sweeps.md, Racing), read from its
parent run's racing.csv (written by sweep/race_rounds.py, one row per configuration per round).

Per configuration: the seeds it got, the round it was eliminated in with its p-value against that round's
leader (one-sided exact permutation test of the ERT ratio), or how it ended; and the runs the race spent
against the uniform design of max_seeds per configuration. A racing.csv written before issue 26 has p_holm
(Holm over the round's log-rank tests) and no alpha: its p_holm is shown beside p."""

from __future__ import annotations

import math
import tempfile

import pandas as pd

from .. import schema, tracking
from . import render


def summarize(rounds: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(one row per configuration: seeds, eliminated in round, p-values, outcome; totals: runs, uniform, saved,
    stopped_by) from racing.csv's rows."""
    rounds = rounds.sort_values(["round"], kind="stable")
    last = rounds.groupby("configuration", sort=False).tail(1).set_index("configuration")
    final = int(rounds["round"].max())
    rows = []
    for c, r in last.iterrows():
        out = {"configuration": c, "seeds": int(r["seeds"])}
        if r["decision"] == "eliminate":
            out.update(outcome="eliminated", round=int(r["round"]), p_value=r["p_value"])
        else:
            out.update(outcome="leader" if r["decision"] == "leader" and int(r["round"]) == final else "survived",
                       round=math.nan, p_value=r["p_value"])
        if "p_holm" in r:  # an old racing.csv (log-rank, Holm)
            out["p_holm"] = r["p_holm"]
        rows.append(out)
    table = pd.DataFrame(rows)
    n, k = int(table["seeds"].sum()), len(table)
    max_seeds = int(rounds["max_seeds"].iloc[-1])
    stopped = rounds["stopped_by"].fillna("").astype(str)
    totals = {"runs": n, "uniform": k * max_seeds, "saved": 1 - n / (k * max_seeds), "rounds": final,
              "stopped_by": stopped.iloc[-1] if stopped.iloc[-1] else "not yet (the race is still on)",
              "alpha": _alphas(rounds) if "alpha" in rounds else ""}
    return table, totals


def _alphas(rounds: pd.DataFrame) -> str:
    """Each round's alpha, as runs of equal values: "0.1 (rounds 1-2), 0.2 (rounds 3-5)"."""
    per = rounds.groupby("round", sort=True)["alpha"].first()
    runs: list[list] = []
    for k, a in per.items():
        if runs and runs[-1][0] == a:
            runs[-1][2] = k
        else:
            runs.append([a, k, k])
    return ", ".join(f"{a:g} (round {lo})" if lo == hi else f"{a:g} (rounds {lo}-{hi})" for a, lo, hi in runs)


def _p(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.3g}"


def tables(f, uri: str | None) -> list[render.Table]:
    """The Racing section as a table, when the report's study raced (its one parent run has racing.csv)."""
    if len(f.source.get("roots", [])) != 1:
        return []
    with tempfile.TemporaryDirectory() as d:
        path = tracking.download_artifact(f.source["roots"][0], schema.RACING_CSV, d, uri)
        if path is None:
            return []
        table, t = summarize(pd.read_csv(path, keep_default_na=False, na_values=[""]))
    shown = pd.DataFrame({
        "configuration": table["configuration"], "seeds": table["seeds"].astype(str), "outcome": table["outcome"],
        "eliminated in round": table["round"].map(lambda r: "-" if math.isnan(r) else str(int(r))),
        "p (vs leader)": table["p_value"].map(_p)})
    if "p_holm" in table:
        shown["p (Holm)"] = table["p_holm"].map(_p)
        test = ("the one-sided log-rank test; Holm-adjusted p <= alpha eliminated it (a race recorded before the "
                "exact permutation test of the ERT ratio replaced it)")
    else:
        test = (f"the one-sided exact permutation test of the ERT ratio; p <= alpha ({t['alpha']}; per "
                "comparison and per round: no promise over the race, see docs/sweeps.md for its measured "
                "race-wide rate of eliminating a configuration as fast as the leader) eliminated it")
    note = (f"A racing study (docs/sweeps.md, Racing): {t['runs']} runs in {t['rounds']} rounds against "
            f"{t['uniform']} for the uniform design of max_seeds per configuration ({100 * t['saved']:.0f} % saved); "
            f"stopped by: {t['stopped_by']}. Each round tested every live configuration against the leader (smallest "
            f"ERT to the round's ranking target) with {test}. p is that of the round it was eliminated in, else of "
            f"the last round it raced. Every round's numbers: the parent run's {schema.RACING_CSV}.")
    return [render.Table("racing", "Racing", note, shown.astype(str))]
