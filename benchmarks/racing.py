"""Racing vs the uniform design, on simulated studies (no training): runs saved and the same winner.

Each simulated study has K configurations; each configuration's runs are drawn once, max_seeds of them per
configuration, and both designs see the same draws: the uniform design uses all max_seeds runs of every
configuration, the race the first n runs of each configuration still live (racing.decide, the sweep's own
rule, round after round). The winner is the leader of a decision (smallest ERT at the report's ranking
target): for the uniform design over every configuration with all its runs, for the race over its survivors.

The simulator (fixed before the rule was run against it; not tuned to flatter it):
- a run's seconds to the target are log-normal: median m_c x exp(sigma Z), Z ~ N(0, 1), sigma = 0.25 (a
  seed-to-seed spread of about 25 %: the demo's runs reach 80 % one to three epochs apart);
- a run reaches the target at all with probability q_c; every run stops at the same clock end, 3x the
  fastest median (a fixed number of epochs), and is censored there when it has not reached the target;
- "close" configurations: m = 1.00, 1.10, 1.20, ... (10 % apart), q = 0.95;
- "clearly behind" ones alternate between twice as slow (m = 2.0-2.4, q = 0.95) and mostly failing
  (m = 1.2, q = 0.3): a tiny learning rate, or a frozen random backbone that stays near chance.

    .venv/bin/python benchmarks/racing.py                # 1-3 min on 2 cores (100 studies per scenario)
    .venv/bin/python benchmarks/racing.py --studies 200 --sigma 0.4   # docs/sweeps.md: 200 studies
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from googlenet_study import racing  # noqa: E402

TARGET = 80.0
SCENARIOS = {  # name: (close configurations, clearly behind ones)
    "half behind (4 close + 4 behind)": (4, 4),
    "half behind (2 close + 2 behind)": (2, 2),
    "all close (6 close)": (6, 0),
    "one clear loser (3 close + 1 behind)": (3, 1),
}


def configurations(n_close: int, n_behind: int) -> list[tuple[float, float]]:
    """(median seconds to the target, probability of reaching it) per configuration."""
    close = [(1.0 + 0.1 * i, 0.95) for i in range(n_close)]
    behind = [((2.0 + 0.2 * (i // 2), 0.95) if i % 2 == 0 else (1.2, 0.3)) for i in range(n_behind)]
    return close + behind


def draw(rng: np.random.Generator, cfgs: list[tuple[float, float]], n: int, sigma: float) -> pd.DataFrame:
    """n runs per configuration, in racing.decide's columns (one target)."""
    end = 3.0 * min(m for m, _ in cfgs)
    rows = []
    for c, (m, q) in enumerate(cfgs):
        t = m * np.exp(sigma * rng.standard_normal(n))
        hit = (rng.random(n) < q) & (t <= end)
        for s in range(n):
            rows.append({"configuration": f"c{c}", "seed": s, "clock_end_s": end,
                         "time_to_test_acc_80": t[s] if hit[s] else math.nan, "reached_80": bool(hit[s])})
    return pd.DataFrame(rows)


def race(runs: pd.DataFrame, names: list[str], rule: racing.Racing) -> tuple[str | None, int, str]:
    """(winner, runs spent, stopped by): rounds of racing.decide until it stops."""
    live, n = list(names), rule.min_seeds
    spent = {c: 0 for c in names}
    while True:
        for c in live:
            spent[c] = n
        seen = runs[runs["seed"] < n]
        spent_s = float(seen["time_to_test_acc_80"].fillna(seen["clock_end_s"]).sum())  # unused without budget_s
        r = racing.decide(seen, live, (TARGET,), rule, spent_s)
        live = r.survivors
        if r.stopped_by:
            return (r.leader if r.leader in live else live[0] if len(live) == 1 else None), sum(spent.values()), \
                r.stopped_by
        n += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=100, help="simulated studies per scenario")
    ap.add_argument("--sigma", type=float, default=0.25, help="log-normal spread of a run's time to target")
    ap.add_argument("--min-seeds", type=int, default=3)
    ap.add_argument("--max-seeds", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rule = racing.Racing(a.min_seeds, a.max_seeds, a.alpha)
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    print(f"racing vs uniform ({a.max_seeds} seeds per configuration): {a.studies} simulated studies per scenario, "
          f"sigma {a.sigma}, min_seeds {a.min_seeds}, alpha {a.alpha}, seed {a.seed}")
    print("| scenario | runs (race / uniform) | runs saved | same winner | truly fastest found (race / uniform) "
          "| stopped by (one left / max_seeds) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, (n_close, n_behind) in SCENARIOS.items():
        cfgs = configurations(n_close, n_behind)
        names = [f"c{c}" for c in range(len(cfgs))]
        spent = same = race_right = uniform_right = 0  # c0 has the smallest median: the truly fastest
        stops = {racing.ONE_LEFT: 0, racing.MAX_SEEDS_REACHED: 0}
        for _ in range(a.studies):
            runs = draw(rng, cfgs, a.max_seeds, a.sigma)
            uniform = racing.decide(runs, names, (TARGET,), racing.Racing(a.max_seeds, a.max_seeds, a.alpha)).leader
            winner, n, why = race(runs, names, rule)
            spent, same, stops[why] = spent + n, same + (winner == uniform), stops.get(why, 0) + 1
            race_right, uniform_right = race_right + (winner == "c0"), uniform_right + (uniform == "c0")
        total = a.studies * a.max_seeds * len(cfgs)
        print(f"| {name} | {spent / a.studies:.1f} / {total / a.studies:.0f} | {100 * (1 - spent / total):.1f} % "
              f"| {100 * same / a.studies:.1f} % | {100 * race_right / a.studies:.0f} % / "
              f"{100 * uniform_right / a.studies:.0f} % "
              f"| {stops[racing.ONE_LEFT]} / {stops[racing.MAX_SEEDS_REACHED]} |",
              flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
