"""Every kind of sentence in the verdict, each on a study built by hand (issue 24, item 5): per-run frames as
stats.per_run makes them, through stats.summary, ranking and verdict — no MLflow store, milliseconds each.
Each sentence is checked against the numbers it claims."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from googlenet_study.report import stats, verdict
from helpers.runs import runs_frame
from googlenet_study.statistics import ranking
from googlenet_study.statistics.clock import EPOCH, TRAIN, Clock

TARGETS = (50.0, 80.0)




def words(spec: dict, clock: Clock = EPOCH) -> tuple[list[str], pd.DataFrame, float | None]:
    runs = runs_frame(spec)
    rank, p = ranking.ranking(stats.summary(runs, [], TARGETS), TARGETS, clock)
    return verdict.verdict(rank, runs, p, clock), rank, p


def at(t50s, t80=None, end=60.0, acc=0.9):
    return [(t, t80, end, acc) for t in t50s]


def test_first_alone_only_when_no_other_interval_overlaps_the_firsts():
    # a is tight at 20 s; b tight at 24 s, clear of a; c is wide (10 to 45 s) and covers a. Compared only with
    # the rank before it, c would share b's rank and a would rank "first alone".
    spec = {"a": at([20.0, 20.0, 20.0, 21.0]), "b": at([24.0, 24.0, 25.0, 24.0]), "c": at([10.0, 45.0, 30.0, 40.0])}
    w, rank, p = words(spec)
    r = rank.set_index("configuration")
    lo_c, hi_a = r.loc["c", "time_to_test_acc_50_ert_ci_low"], r.loc["a", "time_to_test_acc_50_ert_ci_high"]
    assert p == 50.0 and lo_c <= hi_a  # c's interval does overlap a's
    assert list(rank["configuration"]) == ["a", "b", "c"] and list(rank["rank"]) == ["=1", "=1", "=1"]
    assert not any("alone" in s for s in w)
    assert "a shares rank 1 with b and c: their ERT intervals form a chain of overlaps, so 4 seeds do not " \
           "separate them to 50 %." in w


def test_first_alone_says_no_other_interval_overlaps():
    w, rank, _ = words({"a": at([20.0, 20.0, 21.0]), "b": at([30.0, 31.0, 30.0])})
    r = rank.set_index("configuration")
    assert r.loc["a", "time_to_test_acc_50_ert_ci_high"] < r.loc["b", "time_to_test_acc_50_ert_ci_low"]
    assert list(rank["rank"]) == ["1", "2"]
    assert "a ranks first alone: no other ranked configuration's ERT interval overlaps its own." in w


def test_every_configuration_sharing_rank_1_is_named_then_and_k_more():
    wide = [10.0, 40.0, 25.0]
    four = {c: at([x + i for x in wide]) for i, c in enumerate("abcd")}
    w, rank, _ = words(four)
    assert list(rank["rank"]) == ["=1"] * 4
    assert any(s.startswith("a shares rank 1 with b, c and d: ") for s in w)
    seven = {c: at([x + i for x in wide]) for i, c in enumerate("abcdefg")}
    w, rank, _ = words(seven)
    assert list(rank["rank"]) == ["=1"] * 7
    assert any(s.startswith("a shares rank 1 with b, c, d, e and 2 more: ") for s in w)


def test_not_ranked_gives_the_real_reason():
    # No target reached by anyone: the ranking is by accuracy. "noacc" has 2 timed runs and no accuracy;
    # "once" one accuracy; "solo" one run.
    spec = {"a": at([None, None], acc=0.6), "b": at([None, None], acc=0.7),
            "noacc": at([None, None], acc=math.nan),
            "once": at([None], acc=0.5) + at([None], acc=math.nan), "solo": at([None], acc=0.9)}
    w, rank, p = words(spec)
    assert p is None and rank.set_index("configuration").loc["noacc", "n_timed"] == 2
    assert w[-2:] == ["Not ranked (no accuracy recorded): noacc.",
                      "Not ranked (fewer than 2 runs with an accuracy): solo and once."]
    assert not any("timed runs): noacc" in s for s in w)


def test_not_ranked_on_time_names_the_timed_runs():
    spec = {"a": at([20.0, 21.0]), "b": at([30.0, 31.0]), "one": at([5.0]),
            "moved": [(5.0, None, 60.0, 0.9, "resumed on other hardware")] * 2}
    w, rank, p = words(spec)
    assert p == 50.0 and w[-1] == "Not ranked (fewer than 2 timed runs): moved and one."


def test_a_target_below_one_others_reached_says_who_is_first_there():
    # weak is fastest to 50 % (5 s) and never reaches 80 %: undominated, it holds the target at 50 %, while
    # s1 and s2 reached 80 % in every run. The verdict says who is first at 80 % and that weak never got there.
    spec = {"weak": at([5.0, 5.0, 6.0], t80=None, acc=0.59),
            "s1": at([10.0, 11.0, 10.0], t80=30.0), "s2": at([12.0, 12.0, 13.0], t80=40.0)}
    w, rank, p = words(spec, TRAIN)
    assert p == 50.0 and rank["configuration"].iloc[0] == "weak"
    s1 = rank.set_index("configuration").loc["s1"]
    ci = (s1["time_to_test_acc_80_ert_ci_low"], s1["time_to_test_acc_80_ert_ci_high"])
    assert s1["time_to_test_acc_80_ert"] == pytest.approx(30.0) and ci == pytest.approx((30.0, 30.0))
    assert ("80 % is the highest target that at least half the timed runs of two or more ranked configurations "
            "reached; first by ERT to 80 %: s1 (30.0 s [30.0, 30.0]).") in w
    assert "weak, first at 50 %, never reached 80 % (0 of its 3 timed runs)." in w
    # Reaching it once in three: said as a count, not "never".
    spec["weak"] = at([5.0, 5.0], t80=None, acc=0.8) + at([6.0], t80=59.0, acc=0.8)
    w, _, p = words(spec)
    assert p == 50.0 and "weak, first at 50 %, reached 80 % in 1 of its 3 timed runs." in w


def test_no_higher_target_sentence_when_the_ranking_target_is_the_highest_reached():
    w, _, p = words({"s1": at([10.0, 11.0, 10.0], t80=30.0), "s2": at([12.0, 12.0, 13.0], t80=40.0)})
    assert p == 80.0 and not any("highest target" in s or "first at" in s for s in w)


def test_by_accuracy_every_configuration_sharing_rank_1_is_named():
    accs = {"a": (0.60, 0.62, 0.64), "b": (0.59, 0.61, 0.63), "c": (0.58, 0.60, 0.62), "far": (0.1, 0.11, 0.12)}
    w, rank, p = words({c: [(None, None, 60.0, x) for x in xs] for c, xs in accs.items()})
    assert p is None and list(rank["rank"]) == ["=1", "=1", "=1", "4"]
    assert w[0].startswith("No target was reached") and "First: a (IQM 62.0 %" in w[0]
    assert w[1] == ("It shares rank 1 with b and c: their accuracy intervals form a chain of overlaps, so the runs "
                    "do not separate them.")
