"""The report's curves, checked on the data each figure draws (report/curves.py's frames and the figures'
Line2D data), from runs built by hand with known answers: no training, no MLflow (test_report.py covers
the whole report through a real store)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from googlenet_study.report import curves, figures, stats
from googlenet_study.statistics.clock import EPOCH, TRAIN

# Configuration "fast": first epochs end at 10, 20 and 30 s with accuracies 0.9, 0.3, 0.3 (the example,
# where the old "half the runs have started" rule made the mean fall from 0.6 to 0.5 although no run got worse).
FAST = {"a": [(10.0, 0.9), (40.0, 0.9)], "b": [(20.0, 0.3), (40.0, 0.5)], "c": [(30.0, 0.3), (45.0, 0.6)]}
SLOW = {"s1": [(1000.0, 0.2), (2000.0, 0.4)], "s2": [(1100.0, 0.1), (2300.0, 0.5)]}  # 1,000 s epochs


def frames(histories: dict[str, dict[str, list]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, epochs) as stats.per_run and fetch give them: configuration a category, elapsed_time_s the clock,
    train_time_s 80 % of each epoch."""
    runs, epochs = [], []
    for cfg, hs in histories.items():
        for rid, points in hs.items():
            runs.append({"run_id": rid, "configuration": cfg, "time_excluded": ""})
            prev = 0.0
            for e, (t, acc) in enumerate(points, start=1):
                epochs.append({"run_id": rid, "epoch": e, "elapsed_time_s": t, "train_time_s": 0.8 * (t - prev),
                               "test_acc": acc})
                prev = t
    runs = pd.DataFrame(runs)
    runs["configuration"] = pd.Categorical(runs["configuration"], categories=list(histories), ordered=True)
    return runs, pd.DataFrame(epochs)


def mean_line(fig, cfg: str) -> np.ndarray:
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == f"mean:{cfg}"]
    return line.get_xydata()


def test_a_configurations_mean_uses_all_its_runs_on_its_own_epoch_ends():
    runs, epochs = frames({"fast": FAST})
    m = curves.mean_curve(runs, curves.timed(runs, epochs, EPOCH)).set_index("clock_s")
    # Nothing before 30 s (run c has no accuracy yet), then every step is a mean over all three runs.
    assert list(m.index) == [30.0, 40.0, 45.0] and set(m["n"]) == {3}
    assert m["mean"].tolist() == pytest.approx([(0.9 + 0.3 + 0.3) / 3, (0.9 + 0.5 + 0.3) / 3, (0.9 + 0.5 + 0.6) / 3])
    v = np.array([0.9, 0.5, 0.6])
    half = 4.302652729911275 * v.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert (m.loc[45.0, "low"], m.loc[45.0, "high"]) == pytest.approx((v.mean() - half, v.mean() + half))
    # Thin lines: run a ended at 40 s and holds its final accuracy to the configuration's end (45 s).
    a = curves.run_steps(runs, curves.timed(runs, epochs, EPOCH)).query("run_id == 'a'")
    assert a["clock_s"].tolist() == [10.0, 40.0, 45.0] and a["acc"].tolist() == [0.9, 0.9, 0.9]


def test_a_configurations_curve_is_unaffected_by_a_much_slower_configuration():
    alone, both = frames({"fast": FAST}), frames({"fast": FAST, "slow": SLOW})
    for x in ("clock_s", "epoch"):
        f1 = curves.mean_curve(alone[0], curves.timed(*alone, EPOCH), x).query("configuration == 'fast'")
        f2 = curves.mean_curve(both[0], curves.timed(*both, EPOCH), x).query("configuration == 'fast'")
        pd.testing.assert_frame_equal(f1.reset_index(drop=True).astype({"configuration": str}),
                                      f2.reset_index(drop=True).astype({"configuration": str}))
    with plt.rc_context(figures.style()):
        colors = figures.palette(["fast", "slow"])
        one = figures.acc_vs_time(*alone, colors, EPOCH).fig
        two = figures.acc_vs_time(*both, colors, EPOCH).fig
        ep1, ep2 = figures.acc_vs_epoch(*alone, colors).fig, figures.acc_vs_epoch(*both, colors).fig
    try:
        np.testing.assert_array_equal(mean_line(one, "fast"), mean_line(two, "fast"))
        np.testing.assert_array_equal(mean_line(ep1, "fast"), mean_line(ep2, "fast"))
        assert mean_line(two, "fast")[:, 1].tolist() == pytest.approx([50.0, 170 / 3, 200 / 3])
        assert two.axes[0].get_xscale() == "log"  # 45 s beside 2,300 s: the fast curve is not squashed
        # One thin line per run under the means, in one collection: 3 + 2 runs, each a step line holding its
        # accuracy until its next epoch ends (run "a": 0.9 from 10 s, its final 0.9 held to its configuration's 45 s).
        (thin,) = [c for c in two.axes[0].collections if c.get_gid() == "runs"]
        assert len(thin.get_segments()) == 5
        assert thin.get_segments()[0][:, 0].tolist() == [10.0, 40.0, 40.0, 45.0, 45.0]
        assert set(thin.get_segments()[0][:, 1]) == {90.0}
    finally:
        for f in (one, two, ep1, ep2):
            plt.close(f)


def test_train_clock_curves_count_training_seconds_and_leave_out_runs_resumed_on_other_hardware():
    runs, epochs = frames({"fast": FAST})
    t = curves.timed(runs, epochs, TRAIN)
    assert t.query("run_id == 'c'")["clock_s"].tolist() == pytest.approx([24.0, 36.0])  # 0.8 x (30, 15) cumulative
    runs.loc[runs["run_id"] == "c", "time_excluded"] = "resumed on other hardware: T4, H100"
    m = curves.mean_curve(runs, curves.timed(runs, epochs, EPOCH))
    assert set(m["n"]) == {2} and m["clock_s"].min() == 20.0  # c is out of every time statistic


def test_reached_target_curve_keeps_unreached_runs_as_censored():
    # Three runs: 60 % reached at 10 s and 20 s; the third never reached it and ran 30 s.
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "configuration": pd.Categorical(["x"] * 3),
                         "time_to_test_acc_60": [10.0, 20.0, np.nan], stats.reached(60): [True, True, False],
                         "clock_end_s": [40.0, 40.0, 30.0]})
    d = curves.reached_curve(runs, 60).set_index("t")
    assert d.loc[10.0, "reached"] == pytest.approx(1 / 3) and d.loc[20.0, "reached"] == pytest.approx(2 / 3)
    assert d["reached"].max() == pytest.approx(2 / 3) and set(d["n"]) == {3}  # never 1: c is not dropped
    with plt.rc_context(figures.style()):
        drawn = figures.reached_target(runs, 60, figures.palette(["x"]), EPOCH)
        fig = drawn.fig
    # The caption is written with the figure and says what it draws: the target and the clock.
    assert drawn.title == "Runs that have reached the ranking target"
    assert "reached 60 % by each second on the epoch clock" in drawn.caption
    try:
        (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "reached:x"]
        assert line.get_ydata().max() == pytest.approx(200 / 3)
    finally:
        plt.close(fig)
    assert figures.reached_target(runs, None, {}, EPOCH) is None  # no ranking target: no figure


def test_the_pdfs_copy_of_a_long_table_is_bounded_and_says_so():
    from googlenet_study.report import render

    t = render.Table("excluded", "Runs excluded", "why", pd.DataFrame({"run": [f"r{i}" for i in range(5)],
                                                                        "epochs": ["1", "2", "3", "4", "5"]}))
    doc = render.Document("t", [("experiment", "x")], ["method"], appendix=[t])
    full, short = render.to_html(doc), render.to_html(doc, max_rows=2)
    assert full.count("<td class=l>r") == 5 and "The first" not in full  # text left, numbers right
    assert short.count("<td class=l>r") == 2 and "The first 2 of 5 rows; report.html and the CSV files" in short
