"""How sure the report is, measured: the coverage of every interval it prints and the size of every test, on
simulated studies like real ones, at n = 3, 5 and 10 seeds per configuration (issue 24, item 3).

Each simulated study has two configurations, A and B, of n runs each, drawn from this model (fixed before
looking at the results):
- a run's epochs take EPOCH_S x exp(0.03 Z) seconds each (seed-to-seed jitter of the clock), for EPOCHS epochs;
- its time to the target, had it run forever, is log-normal: median MEDIAN_S x exp(SPREAD Z) (A), B_SLOWER x
  that (B); it reaches the target at the end of the first epoch past that time (times are epoch ends, as in
  the report), or never: with probability NEVER the run diverges (best accuracy ~ N(0.50, 0.05) instead of
  N(0.82, 0.02) for A, N(0.80, 0.02) for B), and a run whose time would come after its last epoch is censored
  at its clock end (EPOCHS epochs);
- true values (the estimands) come from 2,000,000 runs of each configuration: the median time to target
  (unreached = infinite), the ERT (all seconds / runs that reached it), their ratio, the mean and the
  interquartile mean (the 25 %-trimmed mean) of best accuracy and of total time, and P(A better) (a run of A
  reaches the target before a run of B, ties half; on best accuracy: higher).
Coverage: the share of studies whose printed 95 % interval holds the true value (an unbounded upper edge,
printed as an empty cell, holds everything above its lower one); "printed" is the share of studies where the
report prints that interval at all (a Kaplan-Meier median needs half the runs at the target). Size: the share
of studies under the null hypothesis (B drawn like A) whose p <= 0.05, with its Monte Carlo standard error;
the log-rank tests are run once more with B's clock ending at UNEQUAL_EPOCHS (unequal censoring: the same
times to target, B stopped earlier), where label permutation is no longer exact.

    .venv/bin/python benchmarks/coverage.py --studies 1000 --workers 2   # the table in docs/reports.md
    .venv/bin/python benchmarks/coverage.py --studies 100                # a quick look
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from multiprocessing import Pool

import numpy as np
import scipy
from scipy import stats as sps

from googlenet_study.statistics import robust, significance, survival

EPOCHS, UNEQUAL_EPOCHS = 20, 12   # epochs per run; B's under unequal censoring
EPOCH_S, CLOCK_JITTER = 10.0, 0.03  # s per epoch; log-sd of a run's epoch time around it
MEDIAN_S, SPREAD = 100.0, 0.4     # A's median time to target (s) and its seed-to-seed log-sd
B_SLOWER = 1.3                    # B's times to target are 1.3x A's (the intervals' study; tests use B = A)
NEVER = 0.1                       # probability that a run diverges and never reaches the target
ALPHA = 0.05
MC = significance.monte_carlo(significance.MONTE_CARLO_N)


def draw(rng: np.random.Generator, n: int, slower: float = 1.0, acc: float = 0.82, epochs: int = EPOCHS):
    """n runs: (time to target or its clock end, reached 0/1, best accuracy, total time)."""
    epoch_s = EPOCH_S * np.exp(CLOCK_JITTER * rng.standard_normal(n))
    t_cont = slower * MEDIAN_S * np.exp(SPREAD * rng.standard_normal(n))
    never = rng.random(n) < NEVER
    k = np.ceil(t_cont / epoch_s)
    end = epochs * epoch_s
    hit = (~never) & (k <= epochs)
    t = np.where(hit, k * epoch_s, end)
    best = np.where(never, 0.50 + 0.05 * rng.standard_normal(n), acc + 0.02 * rng.standard_normal(n))
    return t, hit.astype(float), best, end


def truth(slower: float, acc: float, seed: int, n: int = 2_000_000) -> dict:
    """The estimands of one configuration, from n runs drawn with `seed`."""
    t, hit, best, end = draw(np.random.default_rng(seed), n, slower, acc)
    reached_t = np.where(hit > 0, t, np.inf)
    return {"median": float(np.median(reached_t)), "ert": float(t.sum() / hit.sum()),
            "acc_mean": float(best.mean()), "acc_iqm": float(sps.trim_mean(best, 0.25)),
            "total_mean": float(end.mean()), "total_iqm": float(sps.trim_mean(end, 0.25)), "_t": reached_t,
            "_acc": best}


def true_values() -> dict:
    a, b = truth(1.0, 0.82, 1), truth(B_SLOWER, 0.80, 2)  # independent draws: P(A better) pairs them
    ta, tb = a.pop("_t"), b.pop("_t")
    return {"A": a, "B": b, "ratio": b["ert"] / a["ert"],
            "pab_time": float(np.mean(ta < tb) + 0.5 * np.mean(ta == tb)),  # both never: a tie
            "pab_acc": float(np.mean(a.pop("_acc") > b.pop("_acc")))}


def covers(lo: float, hi: float, x: float, unbounded_hi: bool = False) -> float:
    """1.0 if [lo, hi] holds x, NaN when no interval is printed (lo NaN)."""
    if math.isnan(lo):
        return math.nan
    if math.isnan(hi) and unbounded_hi:
        hi = math.inf
    return float(lo <= x <= hi)


def one_study(args) -> dict:
    """Coverage indicators and p-values of one simulated study of n runs a configuration."""
    n, i, seed, tv = args
    rng = np.random.default_rng([seed, n, i])
    ta, ha, acc_a, end_a = draw(rng, n)
    tb, hb, acc_b, end_b = draw(rng, n, B_SLOWER, 0.80)
    out = {}
    _, lo, hi = survival.km_median(ta, ha)
    out["KM median (log-log)"] = covers(lo, hi, tv["A"]["median"], unbounded_hi=True)
    lo, hi = robust.ratio_interval(ta, ha)
    out["ERT (bootstrap)"] = covers(lo, hi, tv["A"]["ert"], unbounded_hi=True)
    _, lo, hi = robust.ert_ratio_interval(ta, ha, tb, hb)
    out["ERT ratio B/A (bootstrap)"] = covers(lo, hi, tv["ratio"], unbounded_hi=True)
    _, lo, hi = robust.iqm_interval(acc_a)
    out["IQM best accuracy (bootstrap)"] = covers(lo, hi, tv["A"]["acc_iqm"])
    _, lo, hi = robust.iqm_interval(end_a)
    out["IQM total time (bootstrap)"] = covers(lo, hi, tv["A"]["total_iqm"])
    _, lo, hi = robust.t_interval(acc_a)
    out["mean best accuracy (t)"] = covers(lo, hi, tv["A"]["acc_mean"])
    _, lo, hi = robust.t_interval(end_a)
    out["mean total time (t)"] = covers(lo, hi, tv["A"]["total_mean"])
    _, lo, hi = robust.prob_better_interval(np.where(ha > 0, ta, np.nan), np.where(hb > 0, tb, np.nan), False)
    out["P(A better), time to target (bootstrap)"] = covers(lo, hi, tv["pab_time"])
    _, lo, hi = robust.prob_better_interval(acc_a, acc_b, True)
    out["P(A better), best accuracy (bootstrap)"] = covers(lo, hi, tv["pab_acc"])
    # the null hypothesis: B drawn like A
    tb0, hb0, acc_b0, _ = draw(rng, n)
    tb1, hb1, _, _ = draw(rng, n, epochs=UNEQUAL_EPOCHS)
    for method in (significance.EXACT, MC, significance.ASYMPTOTIC):
        if method == significance.EXACT and math.comb(2 * n, n) > significance.EXACT_MAX:
            continue
        out[f"p log-rank {method}"] = significance.logrank(ta, ha, tb0, hb0, method=method).p
        if method != MC:
            out[f"p log-rank {method}, unequal censoring"] = significance.logrank(ta, ha, tb1, hb1, method=method).p
    out["p Welch, best accuracy"] = significance.welch_p(acc_a, acc_b0)
    return out


def run(ns, studies: int, seed: int, workers: int) -> dict:
    tv = true_values()
    res = {}
    with Pool(workers) as pool:
        for n in ns:
            rows = pool.map(one_study, [(n, i, seed, tv) for i in range(studies)], chunksize=max(1, studies // 20))
            res[n] = {k: np.array([r.get(k, math.nan) for r in rows], dtype=float) for k in rows[0]}
    return res, tv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=1000, help="simulated studies per n (default 1000)")
    ap.add_argument("--n", default="3,5,10", help="runs per configuration, comma-separated (default 3,5,10)")
    ap.add_argument("--seed", type=int, default=0, help="the studies' seed (default 0)")
    ap.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    ap.add_argument("--never", type=float, default=NEVER, help=f"probability that a run diverges (default {NEVER})")
    a = ap.parse_args(argv)
    try:
        ns = [int(x) for x in a.n.split(",")]
        if a.studies < 1 or a.workers < 1 or min(ns) < 2 or not 0 <= a.never < 1:
            raise ValueError
    except ValueError:
        print("coverage: --studies and --workers must be >= 1, --n integers >= 2 (e.g. 3,5,10), --never in [0, 1)",
              file=sys.stderr)
        return 2
    globals()["NEVER"] = a.never  # draw() reads it; the workers are forked after this
    t0 = time.perf_counter()
    res, tv = run(ns, a.studies, a.seed, a.workers)
    took = time.perf_counter() - t0
    print(f"# {' '.join(['benchmarks/coverage.py', *sys.argv[1:]])}: {a.studies} studies per n, "
          f"{took:.0f} s on {a.workers} worker(s), {platform.machine()} {platform.processor() or ''} "
          f"(numpy {np.__version__}, scipy {scipy.__version__})")
    print(f"# true: KM median {tv['A']['median']:.1f} s, ERT {tv['A']['ert']:.1f} s, ERT ratio {tv['ratio']:.3f}, "
          f"P(A better) time {tv['pab_time']:.3f}, accuracy {tv['pab_acc']:.3f}")
    head = " | ".join(f"n = {n}" for n in ns)
    print(f"\n| 95 % interval | {head} |\n|---|" + "---:|" * len(ns))
    for k in res[ns[0]]:
        if k.startswith("p "):
            continue
        cells = []
        for n in ns:
            x = res[n][k]
            shown = np.isfinite(x)
            cov = x[shown].mean() if shown.any() else math.nan
            cells.append(f"{100 * cov:.1f} %" + ("" if shown.all() else f" ({100 * shown.mean():.0f} % printed)"))
        print(f"| {k} | " + " | ".join(cells) + " |")
    print(f"\n| test: size at alpha = {ALPHA} (± its Monte Carlo standard error) | {head} |\n|---|" + "---:|" * len(ns))
    keys = list(dict.fromkeys(k for n in ns for k in res[n] if k.startswith("p ")))
    for k in keys:
        cells = []
        for n in ns:
            x = res[n].get(k)
            if x is None or not np.isfinite(x).any():
                cells.append("-")
                continue
            rej = np.nan_to_num(x, nan=1.0) <= ALPHA  # an undefined p rejects nothing
            s = rej.mean()
            cells.append(f"{s:.3f} ± {math.sqrt(max(s * (1 - s), 1e-12) / len(x)):.3f}")
        print(f"| {k[2:]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
