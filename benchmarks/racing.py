"""Racing vs the uniform design on simulated studies (no training): runs saved, the truly fastest found, regret.

Each simulated study has K configurations whose runs are drawn once, max_seeds per configuration; the race and
the uniform designs see the same draws (paired). The race is race_decision.compare, the round decision's tests that
race_decision.decide runs (one target: the round's target is it whenever a live configuration reached it in at least
half its runs, as decide's ranking target then is), round after round, with decide's stopping rules; the
uniform design of n seeds picks the configuration with the smallest ERT over the first n runs of each (the
leader decide would name). The configurations' order is shuffled in every study (the leader's ties go to the
first). Criteria (issue 26):
- runs: the race's against K x max_seeds (saved, with its standard error over the studies);
- PCS: the pick is a configuration of the smallest TRUE ERT (computed exactly from the simulated distribution
  below; truly tied configurations are all correct); regret: true ERT of the pick / the best's (mean, 95th
  percentile); both for the race, the uniform design at max_seeds and at the race's own average budget
  (round(race runs / K) seeds each); differences race - uniform with their paired standard errors;
- false eliminations: the fraction of races that ever eliminated a configuration whose true ERT is at most
  that of the leader that eliminated it (truly tied with it or faster): the race-wide error, measured.

The simulator (fixed before the rule was chosen against it):
- a run's seconds to the target are log-normal, median m x exp(sigma Z), Z ~ N(0, 1); sigma is the
  seed-to-seed spread (0.25: the demo's runs reach 80 % one to three epochs apart);
- a run reaches the target at all with probability q; every run stops at the same end, 3 x the fastest
  median (a fixed number of epochs), and is censored there when it has not reached the target (also when
  its time would come later);
- so ERT = (q E[T; T <= end] + (1 - q P(T <= end)) end) / (q P(T <= end)), E[T; T <= end] = m exp(sigma^2/2)
  Phi((ln(end/m) - sigma^2) / sigma), P(T <= end) = Phi(ln(end/m) / sigma).

    .venv/bin/python benchmarks/racing.py --studies 1000 --workers 2   # the table in docs/sweeps.md (~5 min)
    .venv/bin/python benchmarks/racing.py --studies 100                 # a quick look (~1 min on 1 core)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from googlenet_study.sweep import race_decision  # noqa: E402

Q = 0.95  # a run's chance of reaching the target at all, when nothing else is said
BEHIND = [(2.0, Q), (1.2, 0.3), (2.2, Q), (1.2, 0.3)]  # twice as slow, or mostly failing (a tiny lr)


def ladder(n: int, step: float, q: float = Q) -> list[tuple[float, float]]:
    return [(1.0 + step * i, q) for i in range(n)]


SCENARIOS = {  # name: ([(median seconds to the target, probability of reaching it)], sigma)
    "half behind (4 close + 4 behind)": (ladder(4, 0.1) + BEHIND, 0.25),
    "half behind (2 close + 2 behind)": (ladder(2, 0.1) + BEHIND[:2], 0.25),
    "ladder 5 % (5 configurations)": (ladder(5, 0.05), 0.25),
    "ladder 10 % (5 configurations)": (ladder(5, 0.10), 0.25),
    "ladder 20 % (5 configurations)": (ladder(5, 0.20), 0.25),
    "two truly tied": ([(1.0, Q), (1.0, Q)], 0.25),
    "12 configurations, one clear winner": ([(1.0, Q)] + [(1.3 + 0.05 * i, Q) for i in range(11)], 0.25),
    "low reach (30-60 % of runs reach it)": ([(1.0, .6), (1.1, .55), (1.0, .5), (1.2, .45), (1.0, .4), (1.3, .3)],
                                             0.25),
    "half behind, spread 0.10": (ladder(4, 0.1) + BEHIND, 0.10),
    "half behind, spread 0.40": (ladder(4, 0.1) + BEHIND, 0.40),
}


def true_ert(cfgs: list[tuple[float, float]], sigma: float) -> np.ndarray:
    """Each configuration's exact ERT (seconds) under the simulator (module doc)."""
    end = 3.0 * min(m for m, _ in cfgs)
    out = []
    for m, q in cfgs:
        z = math.log(end / m) / sigma
        below = norm.cdf(z)
        mean_below = m * math.exp(sigma ** 2 / 2) * norm.cdf(z - sigma)
        out.append((q * mean_below + (1 - q * below) * end) / (q * below))
    return np.array(out)


def draw(rng: np.random.Generator, cfgs: list[tuple[float, float]], n: int, sigma: float):
    """(seconds until each run reached the target or ended, 1.0 where it reached it): arrays (K, n)."""
    end = 3.0 * min(m for m, _ in cfgs)
    m, q = (np.array(x)[:, None] for x in zip(*cfgs))
    t = m * np.exp(sigma * rng.standard_normal((len(cfgs), n)))
    hit = (rng.random((len(cfgs), n)) < q) & (t <= end)
    return np.where(hit, t, end), hit.astype(float)


def pick(t: np.ndarray, hit: np.ndarray, among: list[int], n: int) -> int:
    """The configuration of `among` with the smallest ERT over its first n runs (the first on ties)."""
    e = [t[c, :n].sum() / hit[c, :n].sum() if hit[c, :n].sum() else math.inf for c in among]
    return among[int(np.argmin(e))]


def race(t: np.ndarray, hit: np.ndarray, rule: race_decision.Racing) -> tuple[int, int, list[tuple[int, int]]]:
    """(pick, runs spent, [(eliminated, by leader)]): race_decision.compare round after round, decide's stops."""
    live, n, spent, out = list(range(len(t))), rule.min_seeds, 0, []
    while True:
        spent += len(live) * (rule.min_seeds if n == rule.min_seeds else 1)  # the round's runs
        if any(hit[c, :n].mean() >= 0.5 for c in live):  # decide's round target exists
            i, _, _, gone = race_decision.compare([(t[c, :n], hit[c, :n], t[c, :n]) for c in live],
                                           rule.alpha_at(n))
            out += [(live[j], live[i]) for j in np.flatnonzero(gone)]
            live = [c for j, c in enumerate(live) if not gone[j]]
        if len(live) <= 1 or n >= rule.max_seeds:
            return pick(t, hit, live, n), spent, out
        n += 1


def study(args) -> dict:
    """One simulated study: the race and the uniform designs on the same draws (configuration order shuffled)."""
    cfgs, sigma, rule, rng_seed = args
    rng = np.random.default_rng(rng_seed)
    order = rng.permutation(len(cfgs))
    cfgs = [cfgs[i] for i in order]
    ert = true_ert(cfgs, sigma)
    t, hit = draw(rng, cfgs, rule.max_seeds, sigma)
    chosen, runs, gone = race(t, hit, rule)
    tol = 1e-9 * ert.min()
    return {"t": t, "hit": hit, "ert": ert, "race": chosen, "runs": runs,
            "uniform": pick(t, hit, list(range(len(cfgs))), rule.max_seeds),
            "false": any(ert[c] <= ert[lead] + tol for c, lead in gone)}


def scenario(args) -> dict:
    """Every study of one scenario, summarised (module doc)."""
    name, (cfgs, sigma), rule, studies, seed, index = args
    res = [study((cfgs, sigma, rule, [seed, index, k])) for k in range(studies)]
    k = len(cfgs)
    n_b = max(1, round(np.mean([r["runs"] for r in res]) / k))  # the race's own average budget, uniformly

    def scores(key_or_pick):
        pcs, reg = [], []
        for r in res:
            c = key_or_pick(r)
            best = r["ert"].min()
            pcs.append(float(r["ert"][c] <= best * (1 + 1e-9)))
            reg.append(r["ert"][c] / best)
        return np.array(pcs), np.array(reg)

    race_pcs, race_reg = scores(lambda r: r["race"])
    uni_pcs, uni_reg = scores(lambda r: r["uniform"])
    bud_pcs, bud_reg = scores(lambda r: pick(r["t"], r["hit"], list(range(k)), n_b))
    saved = np.array([1 - r["runs"] / (k * rule.max_seeds) for r in res])
    se = lambda x: float(np.std(x, ddof=1) / math.sqrt(len(x)))  # noqa: E731
    d_pcs, d_reg = race_pcs - uni_pcs, race_reg - uni_reg
    return {"name": name, "k": k, "n_b": n_b, "runs": float(np.mean([r["runs"] for r in res])),
            "saved": float(saved.mean()), "saved_se": se(saved),
            "pcs": (race_pcs.mean(), uni_pcs.mean(), bud_pcs.mean()), "d_pcs": (d_pcs.mean(), se(d_pcs)),
            "regret": (race_reg.mean(), uni_reg.mean(), bud_reg.mean()), "d_regret": (d_reg.mean(), se(d_reg)),
            "p95": (np.quantile(race_reg, .95), np.quantile(uni_reg, .95), np.quantile(bud_reg, .95)),
            "false": float(np.mean([r["false"] for r in res])),
            "pcs_ok": bool(d_pcs.mean() >= -2 * se(d_pcs)), "regret_ok": bool(d_reg.mean() <= 2 * se(d_reg))}


def alpha_arg(text: str) -> float | tuple[tuple[int, float], ...]:
    """--alpha 0.1, or steps --alpha 3:0.1,5:0.2 (the racing: block's {3: 0.1, 5: 0.2})."""
    if ":" not in text:
        return float(text)
    return tuple((int(k), float(a)) for k, a in (step.split(":") for step in text.split(",")))


def shown(alpha) -> str:
    return f"{alpha:g}" if isinstance(alpha, float) else ", ".join(f"{a:g} from {s} seeds" for s, a in alpha)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=1000, help="simulated studies per scenario")
    ap.add_argument("--min-seeds", type=int, default=race_decision.Racing.min_seeds)
    ap.add_argument("--max-seeds", type=int, default=race_decision.Racing.max_seeds)
    ap.add_argument("--alpha", type=alpha_arg, default=race_decision.Racing.alpha,
                    help="per comparison, per round: a number, or steps SEEDS:ALPHA,... (default 3:0.1,5:0.15)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="processes, one scenario each at a time")
    ap.add_argument("--only", default="", help="run the scenarios whose name contains this")
    a = ap.parse_args()
    rule = race_decision.Racing(a.min_seeds, a.max_seeds, a.alpha)
    t0 = time.perf_counter()
    print(f"racing (min_seeds {a.min_seeds}, max_seeds {a.max_seeds}, alpha {shown(a.alpha)}) vs uniform designs: "
          f"{a.studies} simulated studies per scenario, seed {a.seed}")
    print("| scenario | runs: race / uniform | saved ± SE | PCS: race / uniform / uniform at the race's budget (seeds) "
          "| Δ PCS ± SE | regret: race / uniform / at budget (p95 race / uniform) | Δ regret ± SE | false elim. "
          "| goal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    jobs = [(name, sc, rule, a.studies, a.seed, i) for i, (name, sc) in enumerate(SCENARIOS.items())
            if a.only in name]
    with Pool(a.workers) as pool:
        results = pool.imap(scenario, jobs) if a.workers > 1 else map(scenario, jobs)
        rows = []
        for s in results:
            rows.append(s)
            ok = "yes" if s["pcs_ok"] and s["regret_ok"] else "NO: " + ", ".join(
                w for w, good in (("PCS", s["pcs_ok"]), ("regret", s["regret_ok"])) if not good)
            print(f"| {s['name']} | {s['runs']:.1f} / {s['k'] * a.max_seeds} | {100 * s['saved']:.1f} ± "
                  f"{100 * s['saved_se']:.1f} % | {100 * s['pcs'][0]:.1f} / {100 * s['pcs'][1]:.1f} / "
                  f"{100 * s['pcs'][2]:.1f} % ({s['n_b']}) | {100 * s['d_pcs'][0]:+.1f} ± {100 * s['d_pcs'][1]:.1f} "
                  f"| {s['regret'][0]:.3f} / {s['regret'][1]:.3f} / {s['regret'][2]:.3f} ({s['p95'][0]:.2f} / "
                  f"{s['p95'][1]:.2f}) | {s['d_regret'][0]:+.3f} ± {s['d_regret'][1]:.3f} | "
                  f"{100 * s['false']:.1f} % | {ok} |", flush=True)
    print(f"mean runs saved over the scenarios: {100 * np.mean([s['saved'] for s in rows]):.1f} %; race-wide "
          f"false-elimination rate (a truly tied or faster configuration eliminated in a race): "
          f"{100 * min(s['false'] for s in rows):.1f}-{100 * max(s['false'] for s in rows):.1f} % by scenario at "
          f"alpha {shown(a.alpha)}, per comparison and round ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
