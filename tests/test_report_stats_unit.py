"""The report's statistics where they live (issue 17, item 8): survival.py, robust.py, profiles.py, ranking.py
and verdict.py on plain DataFrames and arrays, no MLflow store, milliseconds each.

Reference values from lifelines 0.30.3 (pandas 2.3.3, scipy 1.17.1, numpy 2.4.6, in a separate venv: lifelines
needs pandas < 3) and scipy, computed once and written here; the code under test uses scipy only."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from helpers.runs import runs_frame
from googlenet_study.report import stats, verdict
from googlenet_study.statistics import profiles, ranking, robust, significance, survival
from googlenet_study.statistics.clock import EPOCH, TRAIN

TARGETS = (50.0, 80.0)
# Two groups of six runs: time to target (s) and whether it was reached (0: censored at that time).
TA, HA = np.array([12.0, 18.0, 20.0, 25.0, 31.0, 40.0]), np.array([1.0, 1, 0, 1, 1, 0])
TB, HB = np.array([15.0, 22.0, 30.0, 35.0, 40.0, 40.0]), np.array([1.0, 0, 1, 1, 0, 0])


# ---- survival.py --------------------------------------------------------------------------------------
def test_kaplan_meier_median_and_its_log_log_interval_match_lifelines():
    # lifelines KaplanMeierFitter(alpha=0.05).fit(TA, HA): median_survival_time_ 25.0,
    # median_survival_times(confidence_interval_) [[12.0, inf]]; our unbounded upper edge is NaN.
    m, lo, hi = survival.km_median(TA, HA)
    assert (m, lo) == (25.0, 12.0) and math.isnan(hi)
    t = np.array([5.0, 8, 9, 12, 14, 15, 17, 20, 24, 30])
    h = np.array([1.0, 1, 1, 1, 0, 1, 1, 1, 0, 1])
    assert survival.km_median(t, h) == (15.0, 5.0, 30.0)  # lifelines: 15.0, [[5.0, 30.0]]


def test_kaplan_meier_band_matches_lifelines_pointwise():
    # lifelines confidence_interval_ at t = 12 (S = 5/6): [0.27312284992835606, 0.9747124266908934].
    k = survival.km_reached(TA, HA).set_index("t")
    assert k.loc[12.0, "reached"] == pytest.approx(1 / 6)
    assert (k.loc[12.0, "low"], k.loc[12.0, "high"]) == pytest.approx((1 - 0.9747124266908934, 1 - 0.27312284992835606))


def test_logrank_p_matches_lifelines():
    # lifelines.statistics.logrank_test(TA, TB, HA, HB): p_value 0.3764451273525036, statistic 0.78228
    assert survival.logrank_p(TA, HA, TB, HB) == pytest.approx(0.3764451273525036, rel=1e-9)
    assert math.isnan(survival.logrank_p(TA, HA, np.array([]), np.array([])))  # a group without timed runs
    assert math.isnan(survival.logrank_p(TA, 0 * HA, TB, 0 * HB))             # nobody reached it


def test_ert_is_all_seconds_over_the_runs_that_reached_it():
    assert survival.ert(TA, HA) == pytest.approx((12 + 18 + 20 + 25 + 31 + 40) / 4)
    assert survival.ert(TA, 0 * HA) == math.inf and math.isnan(survival.ert(np.array([]), np.array([])))


def test_observed_drops_runs_without_an_end_and_censors_the_rest_at_their_end():
    t, h = survival.observed([10.0, math.nan, math.nan], [True, False, True], [30.0, 40.0, math.nan])
    assert t.tolist() == [10.0, 40.0] and h.tolist() == [1.0, 0.0]


def test_km_median_is_empty_when_fewer_than_half_reached_and_has_no_interval_for_one_run():
    assert math.isnan(survival.km_median(TB[:3], np.array([1.0, 0, 0]))[0])
    m, lo, hi = survival.km_median(np.array([7.0]), np.array([1.0]))
    assert m == 7.0 and math.isnan(lo) and math.isnan(hi)


# ---- robust.py ----------------------------------------------------------------------------------------
def test_one_student_t_interval_for_the_whole_report():
    m, lo, hi = robust.t_interval([1.0, 2.0, 3.0, 4.0, math.nan])  # NaN is not a value
    h = 2.0542602567605206  # scipy.stats.t.ppf(0.975, 3) * std(ddof=1) / sqrt(4)
    assert (m, lo, hi) == pytest.approx((2.5, 2.5 - h, 2.5 + h))
    assert robust.CONFIDENCE == survival.CONFIDENCE == 0.95  # one confidence level for the whole report
    assert robust.t_half_width([1.2909944487358056, 1.0], [4, 1])[0] == pytest.approx(h)
    assert math.isnan(robust.t_half_width([1.0], [1])[0])


def test_iqm_cuts_a_quarter_from_each_end_as_scipy_trim_mean():
    assert robust.iqm_interval(np.arange(1.0, 9.0))[0] == 4.5  # scipy.stats.trim_mean(1..8, 0.25)
    m, lo, hi = robust.iqm_interval([1.0, 2.0, 3.0, 4.0, 100.0, math.inf, math.nan])  # inf, NaN: not values
    assert m == sps.trim_mean([1.0, 2.0, 3.0, 4.0, 100.0], 0.25) == 3.0 and lo <= m <= hi
    assert robust.iqm_interval([1.0])[1:] == pytest.approx((math.nan, math.nan), nan_ok=True)


def test_p_a_better_is_the_mann_whitney_probability_and_missing_loses():
    a, b = [0.1, 0.5, 0.9, 0.7], [0.5, 0.6, 0.2]
    assert robust.prob_better(a, b, True) == pytest.approx(0.625)  # scipy.stats.mannwhitneyu(a, b).statistic / 12
    assert robust.prob_better([math.nan], [0.0], True) == 0.0 and robust.prob_better([math.nan], [0.0], False) == 0.0
    p, lo, hi = robust.prob_better_interval(a, b, True)
    assert p == 0.625 and 0 <= lo <= p <= hi <= 1


def _mann_whitney(x, y, axis=-1):
    """P(A better) of resampled values counted pair by pair (2 x wins + ties over 2 n_A n_B): the plain
    definition the fast count in robust.py must equal bit for bit."""
    x, y = np.moveaxis(x, axis, -1)[..., :, None], np.moveaxis(y, axis, -1)[..., None, :]
    return (2 * (x > y).sum((-2, -1)) + (x == y).sum((-2, -1))) / (2 * x.shape[-2] * y.shape[-1])


@pytest.mark.parametrize("seed", range(6))
def test_p_a_better_and_its_interval_are_the_pairwise_count_on_scipys_resamples(seed, monkeypatch):
    """prob_better_interval counts each resample from how often each run is drawn in it (robust._draw_counts),
    not from the resampled runs: on values with ties, missing values and ±inf, small and uneven comparisons,
    in int32 and in int64 (past INT32_PAIRS), it must give scipy.stats.bootstrap's interval of the pairwise
    count exactly."""
    rng = np.random.default_rng(seed)
    n_a, n_b = [(2, 2), (7, 4), (3, 30), (25, 9), (40, 40), (5, 1)][seed]
    a, b = rng.integers(0, 6, n_a).astype(float), rng.integers(0, 6, n_b).astype(float)  # many ties
    a[rng.random(n_a) < 0.2], b[rng.random(n_b) < 0.2] = math.nan, math.inf
    for higher in (True, False):
        x, y = robust.lose_missing(a, higher), robust.lose_missing(b, higher)
        x, y = (x, y) if higher else (-x, -y)
        p = _mann_whitney(x, y)
        assert robust.prob_better(a, b, higher) == p
        if n_b < 2:
            assert robust.prob_better_interval(a, b, higher)[1:] == pytest.approx((math.nan,) * 2, nan_ok=True)
            continue
        ref = sps.bootstrap((x, y), _mann_whitney, n_resamples=robust.BOOTSTRAP_RESAMPLES, vectorized=True,
                            confidence_level=robust.CONFIDENCE, method="percentile",
                            rng=np.random.default_rng(robust.BOOTSTRAP_SEED)).confidence_interval
        assert robust.prob_better_interval(a, b, higher) == (p, ref.low, ref.high)
        with monkeypatch.context() as m:
            m.setattr(robust, "INT32_PAIRS", 0)
            assert robust.prob_better_interval(a, b, higher) == (p, ref.low, ref.high)
        (ia, ib), (wa, wb) = robust._indices((n_a, n_b)), robust._draw_counts((n_a, n_b))
        assert (wa == np.apply_along_axis(np.bincount, 1, ia, minlength=n_a).T).all()
        assert (wb == np.apply_along_axis(np.bincount, 1, ib, minlength=n_b).T).all()


def test_the_ert_ratio_and_its_interval_are_reproducible_and_infinite_when_b_never_reached():
    r, lo, hi = robust.ert_ratio_interval(TA, HA, TB, HB)
    assert r == pytest.approx((sum(TB) / 3) / (sum(TA) / 4)) and lo <= r <= hi
    assert robust.ert_ratio_interval(TA, HA, TB, HB) == (r, lo, hi)  # seeded: the same words every time
    assert robust.ert_ratio_interval(TA, HA, TB, 0 * HB)[0] == math.inf


# ---- per-run frames -> summary, profiles, ranking -------------------------------------------------------


def summarize(spec: dict) -> pd.DataFrame:
    return stats.summary(runs_frame(spec), [], TARGETS)


FAST = [(10.0, 20.0, 40.0, 0.90, ""), (12.0, 22.0, 40.0, 0.91, ""), (11.0, 21.0, 40.0, 0.92, "")]
SLOW = [(30.0, 60.0, 80.0, 0.85, ""), (32.0, 62.0, 80.0, 0.86, ""), (31.0, 61.0, 80.0, 0.84, "")]
LOSER = [(None, None, 40.0, 0.30, ""), (None, None, 40.0, 0.35, ""), (None, None, 40.0, 0.32, "")]


def test_a_configuration_that_reaches_nothing_ranks_last_by_accuracy_and_leaves_the_time_ranking_alone():
    r, p = ranking.ranking(summarize({"fast": FAST, "slow": SLOW, "loser": LOSER}), TARGETS, EPOCH)
    assert p == 80.0  # was: no target reached by every ranked configuration -> everyone by accuracy
    assert list(r["configuration"]) == ["fast", "slow", "loser"] and list(r["rank"]) == ["1", "2", "3"]
    assert list(r["rank_by"]) == ["ERT to 80 % (epoch clock)"] * 2 + ["accuracy: did not reach 80 %"]


def test_fewer_than_two_timed_runs_are_listed_not_ranked_and_no_timed_run_has_no_profile_score():
    one_timed = [FAST[0], (9.0, 15.0, 30.0, 0.95, "resumed on other hardware")]
    none_timed = [(9.0, 15.0, 30.0, 0.95, "resumed on other hardware")] * 2
    s = summarize({"fast": FAST, "slow": SLOW, "one": one_timed, "none": none_timed}).set_index("configuration")
    assert (s.loc["one", "n_runs"], s.loc["one", "n_timed"], s.loc["none", "n_timed"]) == (2, 1, 0)
    assert math.isnan(s.loc["none", "profile_score"]) and s.loc["one", "profile_score"] > 0
    assert s.loc["none", "best_test_acc_n"] == 2  # its accuracy counts
    r, _ = ranking.ranking(s.reset_index(), TARGETS, EPOCH)
    r = r.set_index("configuration")
    assert r.loc["one", "rank"] == "" and r.loc["one", "rank_by"] == "not ranked: 1 timed run (< 2)"
    assert r.loc["none", "rank_by"] == "not ranked: 0 timed runs (< 2)" and list(r.index)[:2] == ["fast", "slow"]
    prof = profiles.performance_profile(s.reset_index(), TARGETS)
    assert set(prof["configuration"]) == {"fast", "slow", "one"}


def test_the_ranking_target_comes_from_undominated_configurations_only():
    # "rare" reaches 80 % in 1 of 3 runs but is dominated by "fast": it cannot pull the target down to 50 %.
    rare = [(15.0, 39.0, 40.0, 0.81, ""), (15.0, None, 40.0, 0.7, ""), (16.0, None, 40.0, 0.7, "")]
    s = summarize({"fast": FAST, "rare": rare})
    assert ranking.undominated(ranking.erts(s, TARGETS)).tolist() == [True, False]
    assert ranking.ranking_target(s, TARGETS) == 80.0
    # Undominated, it does: 1 of 3 at 80 % is not half.
    s2 = summarize({"slow": SLOW, "rare": rare})
    assert ranking.ranking_target(s2, TARGETS) == 50.0


def test_without_any_target_everyone_with_two_accuracies_is_ranked_by_accuracy():
    r, p = ranking.ranking(summarize({"a": LOSER, "b": [(None, None, 40.0, 0.6, "")] * 2,
                                      "c": [(None, None, 40.0, 0.9, "")]}), TARGETS, EPOCH)
    assert p is None and list(r["configuration"]) == ["b", "a", "c"]
    assert list(r["rank_by"]) == ["accuracy: no target reached"] * 2 + ["not ranked: 1 accuracy run (< 2)"]


def test_overlapping_ert_intervals_share_a_rank():
    close = [(10.0, 21.0, 40.0, 0.90, ""), (12.0, 20.0, 40.0, 0.91, ""), (11.0, 23.0, 40.0, 0.92, "")]
    r, _ = ranking.ranking(summarize({"fast": FAST, "close": close, "slow": SLOW}), TARGETS, EPOCH)
    assert list(r["rank"]) == ["=1", "=1", "3"]


# ---- verdict.py ---------------------------------------------------------------------------------------
def test_the_verdict_names_the_winner_the_ratio_and_what_the_seeds_cannot_tell():
    spec = {"fast": FAST, "close": [(10.0, 21.0, 40.0, 0.9, ""), (12.0, 20.0, 40.0, 0.91, ""),
                                    (11.0, 23.0, 40.0, 0.92, "")], "loser": LOSER,
            "one": [FAST[0]]}
    runs = runs_frame(spec)
    rank, p = ranking.ranking(stats.summary(runs, [], TARGETS), TARGETS, TRAIN)
    words = verdict.verdict(rank, runs, p, TRAIN)
    assert words[0].startswith(f"First by ERT to 80 % on the train clock: {rank['configuration'].iloc[0]} (")
    ratio = robust.ert_ratio_interval(*survival.observed([20, 22, 21], [1, 1, 1], [40] * 3),
                                      *survival.observed([21, 20, 23], [1, 1, 1], [40] * 3))
    assert "is expected to take" in words[1] and "log-rank p = " in words[1]
    # 3 runs against 3: the exact permutation p (scipy's asymptotic one would say 0.0xx), no method named
    exact = significance.logrank(*survival.observed([20, 22, 21], [1, 1, 1], [40] * 3),
                                 *survival.observed([21, 20, 23], [1, 1, 1], [40] * 3))
    assert exact.method == "exact" and words[1].endswith(f"; log-rank p = {exact.p:.3f}.")
    assert any("3 seeds do not separate" in w for w in words)
    assert any(w.startswith("loser did not reach 80 %") for w in words)
    assert words[-1] == "Not ranked (fewer than 2 timed runs): one."
    assert verdict.verdict(rank, runs, p, TRAIN) == words and ratio[1] <= ratio[0] <= ratio[2]


def test_the_verdict_of_a_study_without_a_target_or_a_ranked_configuration_is_still_a_sentence():
    runs = runs_frame({"a": LOSER, "b": [(None, None, 40.0, 0.6, "")] * 2})
    rank, p = ranking.ranking(stats.summary(runs, [], TARGETS), TARGETS, EPOCH)
    assert verdict.verdict(rank, runs, p, EPOCH)[0].startswith("No target was reached") and "First: b" in \
        verdict.verdict(rank, runs, p, EPOCH)[0]
    one = runs_frame({"a": [LOSER[0]]})
    rank, p = ranking.ranking(stats.summary(one, [], TARGETS), TARGETS, EPOCH)
    assert verdict.verdict(rank, one, p, EPOCH)[0].startswith("No configuration has 2 or more")


def test_the_bootstrap_is_scipys_percentile_bootstrap_number_for_number():
    """robust._bootstrap reuses scipy.stats.bootstrap's resample indices (a fresh seed-0 generator per interval)
    without its per-call set-up; if scipy ever draws them differently, this says so."""
    a, b = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]), np.array([6.0, 5.0, 3.0, 5.0])
    for samples, statistic, paired in (((a,), robust.iqm, False),
                                       ((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), False),
                                       ((a, (a > 2).astype(float)), lambda t, h, axis=-1: t.sum(axis) / (1 + h.sum(axis)),
                                        True)):
        ref = sps.bootstrap(samples, statistic, n_resamples=robust.BOOTSTRAP_RESAMPLES, vectorized=True,
                            paired=paired, confidence_level=robust.CONFIDENCE, method="percentile",
                            rng=np.random.default_rng(robust.BOOTSTRAP_SEED)).confidence_interval
        assert robust._bootstrap(samples, statistic, paired) == (ref.low, ref.high)
