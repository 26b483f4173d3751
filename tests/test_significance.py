"""statistics/significance.py and statistics/target.py (issue 24, items 1-2): the log-rank p by permutation at
the sample sizes studies have, its method columns in comparisons.csv, Holm, and the one "reached P" rule shared
by the training loop, the report and the race. Arrays and DataFrames in, numbers out: milliseconds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from googlenet_study import engine, schema
from googlenet_study.sweep import race_decision
from googlenet_study.report import fetch, stats
from googlenet_study.statistics import significance as sg
from googlenet_study.statistics import survival, target
from googlenet_study.statistics.clock import EPOCH


def brute_force_p(ta, ha, tb, hb, alternative="two-sided") -> float:
    """The permutation p by hand: O_A - E_A (observed minus expected runs of A at the target, summed over the
    times a run reached it, A's expected share = its share of the runs at risk) for every relabelling."""
    t, h = np.r_[ta, tb].astype(float), np.r_[ha, hb] > 0

    def u(a):
        o = e = 0.0
        for tau in sorted(set(t[h])):
            at_risk, at_risk_a = np.sum(t >= tau), np.sum(t[a] >= tau)
            o += np.sum(h[a] & (t[a] == tau))
            e += np.sum(h & (t == tau)) * at_risk_a / at_risk
        return o - e

    obs = u(np.arange(len(ta)))
    us = np.array([u(np.array(c)) for c in itertools.combinations(range(len(t)), len(ta))])
    tol = 1e-9 * (1 + abs(obs))
    if alternative == "less":
        return float(np.mean(us <= obs + tol))
    return float(np.mean(np.abs(us) >= abs(obs) - tol))


def test_three_against_three_with_every_run_of_a_first_is_p_0_1_exact_not_0_0246():
    a, b, one = np.array([10.0, 11, 12]), np.array([20.0, 21, 22]), np.ones(3)
    r = sg.logrank(a, one, b, one)
    assert (r.p, r.method, r.se) == (pytest.approx(0.1), "exact", 0.0)  # 2 of the 20 relabellings
    assert survival.logrank_p(a, one, b, one) == pytest.approx(0.0246, abs=5e-5)  # the asymptotic p: 4x smaller
    assert sg.logrank(b, one, a, one, "less").p == pytest.approx(0.05)    # B later: 1 of 20
    assert sg.logrank(a, one, b, one, "less").p == pytest.approx(1.0)     # A later: every relabelling is as low
    assert sg.logrank(a, one, b, one, "greater").p == pytest.approx(0.05)


def test_exact_p_with_ties_and_censoring_equals_brute_force_enumeration():
    ta, ha = np.array([10.0, 12, 20, 20, 40]), np.array([1.0, 1, 1, 0, 0])  # a tie of a hit and a censored run
    tb, hb = np.array([20.0, 30, 30, 40]), np.array([1.0, 1, 1, 0])       # ... and of runs across the groups
    for alt in ("two-sided", "less"):
        r = sg.logrank(ta, ha, tb, hb, alt)
        assert r.method == "exact" and r.p == pytest.approx(brute_force_p(ta, ha, tb, hb, alt), abs=1e-12)
    assert 0 < sg.logrank(ta, ha, tb, hb).p < 1


def test_the_permutation_p_equals_brute_force_on_random_tied_censored_samples():
    rng = np.random.default_rng(3)
    for _ in range(20):
        na, nb = rng.integers(1, 6, 2)
        ta, tb = rng.integers(1, 5, na).astype(float), rng.integers(1, 5, nb).astype(float)
        ha, hb = (rng.random(na) < 0.7) * 1.0, (rng.random(nb) < 0.7) * 1.0
        r = sg.logrank(ta, ha, tb, hb)
        if not math.isnan(r.p):
            assert r.p == pytest.approx(brute_force_p(ta, ha, tb, hb), abs=1e-12)


def test_the_observed_statistic_is_scipys_and_undefined_where_scipys_is():
    rng = np.random.default_rng(4)
    for _ in range(50):
        na, nb = rng.integers(1, 6, 2)
        ta, tb = rng.integers(1, 5, na).astype(float), rng.integers(1, 5, nb).astype(float)
        ha, hb = (rng.random(na) < 0.6) * 1.0, (rng.random(nb) < 0.6) * 1.0
        if ha.sum() + hb.sum() == 0:
            continue
        with np.errstate(all="ignore"):
            want = sps.logrank(sps.CensoredData(uncensored=ta[ha > 0], right=ta[ha == 0]),
                               sps.CensoredData(uncensored=tb[hb > 0], right=tb[hb == 0])).statistic
        got = sg._z(np.r_[ta, tb], np.r_[ha, hb] > 0, np.arange(na + nb) < na)
        assert (math.isnan(got) and not np.isfinite(want)) or got == pytest.approx(want, rel=1e-9)
        assert math.isnan(got) == math.isnan(sg.logrank(ta, ha, tb, hb).p)


def test_the_method_switches_at_its_limits():
    assert sg.method_for(10, 10) == "exact"                         # C(20, 10) = 184,756 <= EXACT_MAX
    assert sg.method_for(10, 11) == sg.monte_carlo(sg.MONTE_CARLO_N) == "monte carlo (10000)"  # 352,716
    assert sg.method_for(3, 60) == "exact"                          # C(63, 3) = 39,711
    assert sg.method_for(29, 100) == "monte carlo (10000)" and sg.method_for(30, 30) == "asymptotic"
    rng = np.random.default_rng(0)
    big_a, big_b = rng.lognormal(0, 0.3, 30), rng.lognormal(0.3, 0.3, 30)
    r = sg.logrank(big_a, np.ones(30), big_b, np.ones(30))
    assert r.method == "asymptotic" and r.p == survival.logrank_p(big_a, np.ones(30), big_b, np.ones(30))


def test_the_monte_carlo_p_is_reproducible_states_its_error_and_agrees_with_the_exact_p(monkeypatch):
    rng = np.random.default_rng(1)
    ta, tb = rng.lognormal(0, 0.3, 6), rng.lognormal(0.4, 0.3, 6)
    ha, hb = (rng.random(6) < 0.8) * 1.0, (rng.random(6) < 0.8) * 1.0
    exact = sg.logrank(ta, ha, tb, hb)
    monkeypatch.setattr(sg, "EXACT_MAX", 100)  # C(12, 6) = 924 relabellings: now beyond the limit
    r = sg.logrank(ta, ha, tb, hb)
    assert exact.method == "exact" and r.method == "monte carlo (10000)" and sg.logrank(ta, ha, tb, hb) == r
    assert r.se == pytest.approx(math.sqrt(r.p * (1 - r.p) / 10_000)) and 0 < r.p < 1
    assert abs(r.p - exact.p) < 4 * r.se + 1e-4 and r.p != exact.p
    assert sg.logrank(ta, ha, tb, hb + 0).p == r.p  # a fresh generator per test, seeded PERMUTATION_SEED


def test_ten_against_ten_is_exact_and_quick():
    import time

    rng = np.random.default_rng(2)
    a, b = rng.lognormal(0, 0.3, 10), rng.lognormal(0.2, 0.3, 10)
    sg._bits.cache_clear()
    t0 = time.perf_counter()
    r = sg.logrank(a, np.ones(10), b, np.ones(10))
    assert r.method == "exact" and time.perf_counter() - t0 < 0.5  # 184,756 relabellings: ~1 ms on a quiet core


def test_meeting_in_the_middle_counts_what_enumerating_every_pick_counts(monkeypatch):
    ta, ha = np.array([10.0, 12, 20, 20, 40]), np.array([1.0, 1, 1, 0, 0])
    tb, hb = np.array([20.0, 30, 30, 40]), np.array([1.0, 1, 1, 0])
    halves = {alt: sg.logrank(ta, ha, tb, hb, alt).p for alt in sg.ALTERNATIVES}
    monkeypatch.setattr(sg, "HALF_MAX", 2)  # 9 runs > 2 x 2: every one of the C(9, 5) = 126 picks
    assert {alt: sg.logrank(ta, ha, tb, hb, alt).p for alt in sg.ALTERNATIVES} == pytest.approx(halves, abs=1e-12)
    assert 0 < halves["less"] < 1 and 0 < halves["greater"] < 1


def test_the_words_after_a_p_say_how_it_was_computed():
    assert sg.how(sg.LogRank(0.1, "exact")) == ""
    assert sg.how(sg.LogRank(0.02, "asymptotic")) == " (asymptotic)"
    assert sg.how(sg.LogRank(0.0314, "monte carlo (10000)", 0.00174)) == " (Monte Carlo, 10,000 relabellings, ± 0.002)"


def test_logrank_is_undefined_without_runs_or_hits_and_refuses_an_unknown_alternative():
    assert math.isnan(sg.logrank([], [], [1.0], [1.0]).p)
    assert math.isnan(sg.logrank([1.0, 2.0], [0, 0], [1.0], [0]).p)
    with pytest.raises(ValueError, match="alternative"):
        sg.logrank([1.0], [1], [2.0], [1], "both")


def test_holm_by_hand():
    np.testing.assert_allclose(sg.holm([0.01, 0.04, 0.03, math.nan]), [0.03, 0.06, 0.06, math.nan])
    np.testing.assert_allclose(sg.holm([0.6, 0.5]), [1.0, 1.0])  # capped at 1, then monotone
    assert sg.holm([]).size == 0


def test_welch_and_cohens_d_by_hand():
    a, b = np.array([1.0, 2, 3]), np.array([2.0, 4, 6])
    assert sg.cohens_d(a, b) == pytest.approx((2 - 4) / math.sqrt((2 * 1 + 2 * 4) / 4))
    assert sg.welch_p(a, b) == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert math.isnan(sg.welch_p([1.0], b)) and math.isnan(sg.cohens_d([1.0, 1.0], [1.0, 1.0]))


def test_the_coverage_the_report_prints_is_the_table_in_the_docs():
    from pathlib import Path

    from googlenet_study.report import text
    from googlenet_study.statistics import robust

    docs = (Path(__file__).resolve().parent.parent / "docs" / "reports.md").read_text()
    rows = [line for line in docs.splitlines() if line.startswith("| ") and " % |" in line]
    for v in robust.MEASURED_COVERAGE.values():  # each triple is one row of the docs' table, in order
        assert any(all(f"{c:.1f} %" in r for c in v) and r.index(f"{v[0]:.1f} %") < r.index(f"{v[2]:.1f} %")
                   for r in rows), v
    assert "ERT 65 / 69 / 79 %" in text.coverage_paragraph()  # rounded half up, as the docs' words


# ---- comparisons.csv ----------------------------------------------------------------------------------
def _runs(spec: dict) -> pd.DataFrame:
    """stats.per_run-like rows: {batch_size: [(time to 50 % or None, end s, best acc)]}."""
    rows = [{"configuration": f"batch_size={k}", "batch_size": k, "time_excluded": "", "best_test_acc": acc,
             "total_time_s": end, "clock_end_s": end, "time_to_test_acc_50": math.nan if t is None else t,
             "reached_50": t is not None} for k, runs in spec.items() for t, end, acc in runs]
    d = pd.DataFrame(rows)
    d["configuration"] = pd.Categorical(d["configuration"], categories=list(dict.fromkeys(d["configuration"])),
                                        ordered=True)
    return d


def test_comparisons_carry_the_exact_p_its_method_and_holm_over_the_pairs_at_one_target():
    runs = _runs({32: [(10.0, 40, 0.9), (11.0, 40, 0.9), (12.0, 40, 0.9)],
                  64: [(20.0, 40, 0.8), (21.0, 40, 0.8), (22.0, 40, 0.8)],
                  128: [(30.0, 40, 0.7), (None, 40, 0.7), (None, 40, 0.7)]})
    comp = stats.comparisons(runs, ["batch_size"], (50.0,))
    assert list(comp.columns[comp.columns.get_loc("logrank_p"):][:3]) == ["logrank_p", "logrank_method",
                                                                          "logrank_p_holm"]
    t = comp[comp["metric"] == "time_to_test_acc_50"].set_index(["A", "B"])
    assert t.loc[("batch_size=32", "batch_size=64"), "logrank_p"] == pytest.approx(0.1)  # was 0.0246
    assert set(t["logrank_method"]) == {"exact"}
    np.testing.assert_allclose(t["logrank_p_holm"], sg.holm(t["logrank_p"]))  # one family: the three pairs
    assert t["logrank_p_holm"].min() == pytest.approx(0.3)  # 3 x 0.1: the smallest of three
    acc = comp[comp["metric"] == "best_test_acc"]
    assert acc["logrank_p"].isna().all() and acc["logrank_p_holm"].isna().all()


# ---- the one "reached P" rule -----------------------------------------------------------------------
CURVE = [0.5, math.nan, 0.8, 0.9]  # epoch 2 not evaluated (NaN), epoch 3 exactly at 80 %
CLOCK_S = [10.0, 20.0, 30.0, 40.0]


def test_the_rule_nan_never_reaches_and_exactly_the_target_does():
    assert target.at_target(CURVE, 80).tolist() == [False, False, True, True]
    assert target.first_at_target(CURVE, 80) == 2 and target.first_at_target(CURVE, 95) is None
    assert target.first_at_target([0.7000000000000001 - 2e-16], 70) == 0  # last-bit rounding still counts


def test_the_engine_the_report_and_the_race_read_one_curve_alike():
    history = [{schema.ACCURACY: a, schema.CLOCK: c} for a, c in zip(CURVE, CLOCK_S)]
    from_engine = engine.summarize(history, (50, 80, 95))
    from_race = race_decision.runs_from_curves({"r": [[i + 1, c, a] for i, (a, c) in enumerate(zip(CURVE, CLOCK_S))]},
                                        {"r": "x"}, (50.0, 80.0, 95.0)).iloc[0]
    epochs = pd.DataFrame({"run_id": "r", "epoch": range(1, 5), schema.ACCURACY: CURVE, schema.CLOCK: CLOCK_S,
                           **{m: 1.0 for m in schema.EPOCH_METRICS if m not in (schema.ACCURACY, schema.CLOCK)}})
    f = fetch.Fetched(
        runs=pd.DataFrame({"run_id": ["r"], "run_name": ["r"], "start_time": [0], "seed": ["0"], "study": [""],
                           "trial": [""], schema.DEVICE_NAME_TAG: ["cpu"], schema.HOST_TAG: ["h"],
                           schema.HARDWARE_CHANGED_TAG: [None]}),
        epochs=epochs, excluded=pd.DataFrame(), incomplete=pd.DataFrame(), params=[],
        logged_summary=pd.DataFrame({"run_id": ["r"], **{m: [math.nan] for m in schema.SUMMARY_METRICS}}))
    from_report = stats.per_run(f, (50.0, 80.0, 95.0), EPOCH)[0].iloc[0]
    for p, want in ((50, 10.0), (80, 30.0)):
        k = schema.time_to_target(p)
        assert from_engine[k] == from_race[k] == from_report[k] == want
        assert from_race[stats.reached(p)] and from_report[stats.reached(p)]
    k = schema.time_to_target(95)
    assert k not in from_engine and math.isnan(from_race[k]) and math.isnan(from_report[k])
    assert not from_race[stats.reached(95)] and not from_report[stats.reached(95)]
