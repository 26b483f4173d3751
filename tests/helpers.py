"""Helpers shared by test files (a test file never imports another test file)."""

from __future__ import annotations

import math

import pandas as pd


def runs_frame(spec: dict) -> pd.DataFrame:
    """stats.per_run's columns from {configuration: [(time to 50 %, time to 80 %, end s, best acc)]}, a time
    None: never reached; a 5th item: why the run's times are left out."""
    rows = []
    for cfg, runs in spec.items():
        for t50, t80, end, acc, *why in runs:
            why = why[0] if why else ""
            rows.append({"configuration": cfg, "hardware": "H100", "model": "googlenet", "dataset": "digits",
                         "time_excluded": why, "best_test_acc": acc, "final_test_acc": acc,
                         "epoch_time_s": math.nan if why else end / 4, "total_time_s": math.nan if why else end,
                         "clock_end_s": math.nan if why else end,
                         "time_to_test_acc_50": math.nan if why or t50 is None else t50, "reached_50": t50 is not None,
                         "time_to_test_acc_80": math.nan if why or t80 is None else t80, "reached_80": t80 is not None})
    d = pd.DataFrame(rows)
    d["configuration"] = pd.Categorical(d["configuration"], categories=list(spec), ordered=True)
    return d
