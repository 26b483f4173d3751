"""What a study does is decided once, by StudySpec (sweep/study_file.py); the runner's modules ask it."""

from __future__ import annotations

import yaml

from googlenet_study.sweep import study_file

BASE = {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16}


def spec(tmp_path, **top) -> study_file.StudySpec:
    doc = {"name": "m", "base": BASE, "space": {"lr": [0.01, 0.1]}, **top}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    return study_file.load(str(tmp_path / "m.yaml"))


def test_a_study_of_lists_is_a_grid_with_one_run_per_trial_no_race_and_no_pruning(tmp_path):
    s = spec(tmp_path)
    assert (s.is_grid, s.races, s.nests_seed_runs, s.prunes, s.prunes_by_clock) == (True, False, False, False, False)


def test_a_sampler_other_than_grid_is_not_a_grid(tmp_path):
    assert not spec(tmp_path, sampler="random", n_trials=2).is_grid
    assert not spec(tmp_path, space={"lr": {"low": 0.001, "high": 0.1}}, n_trials=2).is_grid  # tpe by default


def test_repeats_above_one_nest_a_run_per_seed(tmp_path):
    assert spec(tmp_path, repeats=2).nests_seed_runs
    assert not spec(tmp_path, repeats=1).nests_seed_runs


def test_a_racing_block_races_its_grid(tmp_path):
    s = spec(tmp_path, racing={"min_seeds": 2, "max_seeds": 3})
    assert s.races and s.is_grid and not s.nests_seed_runs


def test_each_pruner_says_whether_it_prunes_and_by_which_clock(tmp_path):
    got = {p: (spec(tmp_path, pruner=p).prunes, spec(tmp_path, pruner=p).prunes_by_clock)
           for p in study_file.PRUNERS}
    assert got == {"none": (False, False), "median": (True, False), "hyperband": (True, False),
                   "wallclock_median": (True, True)}
