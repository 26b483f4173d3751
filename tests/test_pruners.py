"""The wall-clock pruner on hand-made trials of a real Optuna study (SQLite): trials report through the
sweep's own per-epoch hook, with the pruner the study file names."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from googlenet_study import tracking
from googlenet_study.config import UserError
from googlenet_study.sweep import pruners, study_file
from googlenet_study.sweep import setup, worker
from googlenet_study.sweep import trial as trial_mod

ACCS = [0.5, 0.6, 0.7, 0.8]  # test_acc per epoch, the same for every trial


def load_spec(tmp_path, pruner: str, **top) -> study_file.StudySpec:
    doc = {"name": "p", "base": {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16,
                                 "epochs": len(ACCS)},
           "space": {"seed": [0, 1, 2, 3, 4]}, "pruner": pruner, **top}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    return study_file.load(str(tmp_path / "p.yaml"))


def make_study(tmp_path, pruner: str, **top) -> optuna.Study:
    """A real SQLite study with the pruner of a real study file."""
    spec = load_spec(tmp_path, pruner, **top)
    return optuna.create_study(study_name="p", direction="maximize", pruner=worker.make_pruner(spec),
                               storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def train_by_hand(st: optuna.Study, epoch_s: float, by_clock: bool, accs=ACCS) -> int | None:
    """One trial whose epochs take epoch_s seconds each; the epoch it was pruned at, or None."""
    trial = st.ask()
    hook = trial_mod._pruning_hook(trial, 0, len(accs), by_clock=by_clock)
    for epoch, acc in enumerate(accs, 1):
        try:
            hook(epoch, {"test_acc": acc, "elapsed_time_s": epoch * epoch_s})
        except optuna.TrialPruned:
            st.tell(trial, state=TrialState.PRUNED)
            return epoch
    st.tell(trial, accs[-1])
    return None


@pytest.mark.parametrize("pruner", ["wallclock_median", "median"])
def test_slow_trial_with_equal_accuracy_per_epoch_is_pruned_by_wallclock_median_only(tmp_path, pruner):
    st = make_study(tmp_path, pruner)
    by_clock = pruner == "wallclock_median"
    assert [train_by_hand(st, 1.0, by_clock) for _ in range(3)] == [None] * 3  # 1 s epochs, finished
    slow = train_by_hand(st, 3.0, by_clock)
    if by_clock:
        # Epoch 1 ends at 3 s: the warm-up (one epoch). Epoch 2 ends at 6 s with 0.6, when the fast
        # trials had reached 0.8 (at 4 s, and still have it): pruned there.
        assert slow == 2
        assert st.trials[3].user_attrs[pruners.CURVE_ATTR] == [[1, 3.0, 0.5], [2, 6.0, 0.6]]
    else:
        assert slow is None  # at every epoch its accuracy equals the median's: never below it
    assert train_by_hand(st, 1.0, by_clock) is None  # as fast as the finished ones: never pruned
    assert [t.state for t in st.trials].count(TrialState.PRUNED) == (1 if by_clock else 0)


@pytest.mark.parametrize("warmup_s,pruned_at", [(None, 2), (7, 3), (0, 1), (100, None)])
def test_wallclock_warmup_is_one_epoch_unless_pruner_warmup_s_says(tmp_path, warmup_s, pruned_at):
    st = make_study(tmp_path, "wallclock_median", **({} if warmup_s is None else {"pruner_warmup_s": warmup_s}))
    for _ in range(3):
        train_by_hand(st, 1.0, True)
    # The slow trial's epochs end at 3, 6, 9, 12 s; the fast ones have 0.7 at 3 s and 0.8 from 4 s.
    assert train_by_hand(st, 3.0, True) == pruned_at


def test_wallclock_needs_three_finished_trials_with_a_value_at_that_second(tmp_path):
    st = make_study(tmp_path, "wallclock_median", pruner_warmup_s=0)
    for _ in range(3):
        train_by_hand(st, 10.0, True)  # first epochs end at 10 s
    # A trial at chance (0.1) whose epochs end at 1..4 s: no finished trial has a value before 10 s.
    assert train_by_hand(st, 1.0, True, accs=[0.1] * 4) is None
    assert train_by_hand(st, 3.0, True, accs=[0.1] * 4) == 4  # 12 s: the finished trials have 0.5 by then


def test_with_repeats_a_seeds_seconds_continue_from_the_seeds_before_it(tmp_path):
    st = make_study(tmp_path, "wallclock_median")
    trial = st.ask()
    for seed_index in (0, 1):  # 2 epochs per seed, 5 s each: the trial's clock runs 5, 10, then 15, 20
        hook = trial_mod._pruning_hook(trial, seed_index, 2, by_clock=True)
        for epoch in (1, 2):
            hook(epoch, {"test_acc": 0.1 * epoch, "elapsed_time_s": 5.0 * epoch})
    assert st.trials[0].user_attrs[pruners.CURVE_ATTR] == [[1, 5.0, 0.1], [2, 10.0, 0.2], [3, 15.0, 0.1],
                                                          [4, 20.0, 0.2]]
    assert st.trials[0].intermediate_values == {1: 0.1, 2: 0.2, 3: 0.1, 4: 0.2}
    # A trial stopped by a signal is queued again with its user attrs (worker._requeue); its run resumes
    # and reports the interrupted epoch again, which replaces that epoch in the carried curve.
    st.enqueue_trial({}, user_attrs=st.trials[0].user_attrs)
    again = st.ask()
    trial_mod._pruning_hook(again, 1, 2, by_clock=True)(2, {"test_acc": 0.25, "elapsed_time_s": 10.0})
    curve = st.trials[1].user_attrs[pruners.CURVE_ATTR]
    assert curve == [[1, 5.0, 0.1], [2, 10.0, 0.2], [3, 15.0, 0.1], [4, 20.0, 0.25]]
    assert [pruners.acc_at(curve, t) for t in (4.9, 5.0, 14.0, 99.0)] == [None, 0.1, 0.2, 0.25]


def test_the_parent_run_records_the_wall_clock_warm_up(tmp_path, tracking_uri):
    logged = {}
    for name, top in (("default", {}), ("set", {"pruner_warmup_s": 90})):
        spec = load_spec(tmp_path, "wallclock_median", **top)
        run_id = tracking.start_parent_run("googlenet-study", name, {}, tracking_uri)
        setup.log_parent_start(spec, run_id, "sqlite:///optuna.db", tracking_uri)
    for r in tracking.search_runs_all("googlenet-study", uri=tracking_uri):
        logged[r["run_name"]] = (r["params"]["pruner"], r["params"]["pruner_warmup_s"])
    assert logged == {"default": ("wallclock_median", "first_epoch"), "set": ("wallclock_median", "90.0")}
    # A changed warm-up is a changed study: resuming it under the same name is refused (setup._wait_ready).
    assert load_spec(tmp_path, "wallclock_median").digest() != spec.digest()


def test_every_pruner_a_study_file_may_name_has_one_constructor(tmp_path):
    # One table (pruners.PRUNERS) names them and makes them; the study file accepts exactly its names.
    for name in pruners.PRUNERS:
        assert load_spec(tmp_path, name).pruner == name
        made = pruners.make(name, steps=6, warmup_s=2.0)
        assert isinstance(made, optuna.pruners.BasePruner)
        assert pruners.prunes(name) == (not isinstance(made, optuna.pruners.NopPruner))
    assert isinstance(pruners.make("wallclock_median", 6, 2.0), pruners.WallclockMedianPruner)
    assert pruners.make("wallclock_median", 6, 2.0).warmup_s == 2.0 and pruners.by_clock("wallclock_median")
    assert pruners.make("hyperband", 6)._max_resource == 6  # epochs x repeats
    with pytest.raises(UserError, match=r"pruner: got 'asha'; allowed: " + " [|] ".join(pruners.PRUNERS) + "$"):
        load_spec(tmp_path, "asha")
