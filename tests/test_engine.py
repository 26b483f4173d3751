"""The loop on its own: `train_one_epoch`, `evaluate` and `fit` against an in-memory tracker, no MLflow.

Tiny on purpose (40 training digits at 16 px, batches of 8, random-init GoogLeNet with its aux arms):
the whole file runs in seconds, so most changes to the engine can be checked without a store."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from googlenet_study import data as data_mod
from googlenet_study import engine, model, schema
from googlenet_study.checkpoint import PartialEpoch
from googlenet_study.config import RunConfig
from googlenet_study.data import DeviceBatches
from googlenet_study.device import place
from googlenet_study.engine import Hooks, Interrupted, Learner, NonFiniteLoss

from helpers.loop import LEARNED, ListCheckpoint, ListTracker, StopAfter

class Recorder:
    """A forward that records each input batch, then runs the model."""

    def __init__(self, forward) -> None:
        self.forward, self.inputs = forward, []

    def __call__(self, x):
        self.inputs.append(x.clone())
        return self.forward(x)


@pytest.fixture(scope="module")
def cfg() -> RunConfig:
    return RunConfig(model="googlenet", dataset="digits", weights="none", image_size=16, epochs=2, batch_size=8,
                     train_size=40, test_size=20, aux_weight=0.3, deterministic=True, threads=1, device="cpu",
                     system_metrics=False).resolve()


@pytest.fixture(scope="module")
def dataset(cfg):
    return data_mod.load(cfg)


@pytest.fixture(scope="module")
def quiet() -> Hooks:
    return Hooks(progress=False, should_stop=lambda: False)  # never the process's signal flag


@pytest.fixture(scope="module")
def reference(cfg, dataset, quiet) -> tuple[list[dict], dict]:
    """An uninterrupted fit: its history and final weights."""
    net = fresh_net(cfg)
    history, _ = fit(cfg, dataset, net, ListTracker(), quiet)
    return history, net.state_dict()


def fit(cfg: RunConfig, dataset, net, tracker, hooks: Hooks, **kw) -> tuple[list[dict], dict]:
    """engine.fit on the run's image batches, as train() calls it."""
    return engine.fit(cfg, net, *data_mod.batches(cfg, dataset, place(cfg, net)), tracker, hooks, **kw)


def fresh_net(cfg: RunConfig):
    """The model as train() makes it: every RNG seeded, then a random init."""
    engine.seed_everything(cfg)
    return model.build(cfg)[0]


def train_batches(cfg, dataset) -> DeviceBatches:
    return DeviceBatches(dataset.train, cfg.batch_size, cfg.image_size, torch.device("cpu"), True)


def test_data_order_is_a_function_of_seed_and_epoch(cfg, dataset):
    b = train_batches(cfg, dataset)
    assert torch.equal(b.order(0, 1), b.order(0, 1))
    assert sorted(b.order(0, 1).tolist()) == list(range(cfg.train_size))  # a permutation: every image once
    assert not torch.equal(b.order(0, 1), b.order(0, 2))  # another epoch, another order
    assert not torch.equal(b.order(0, 1), b.order(1, 1))  # another seed, another order


def test_an_epoch_trains_in_its_order_and_a_continued_epoch_continues_it(cfg, dataset, quiet):
    b = train_batches(cfg, dataset)
    expected = torch.cat([x for x, _ in b.iterate(b.order(cfg.seed, 2))])
    whole, split = (Learner.build(cfg, fresh_net(cfg)) for _ in range(2))
    whole.forward, split.forward = Recorder(whole.net), Recorder(split.net)
    engine.train_one_epoch(whole, b, quiet, PartialEpoch.fresh(2))
    with pytest.raises(Interrupted) as stop:
        engine.train_one_epoch(split, b, dataclasses.replace(quiet, should_stop=StopAfter(2)), PartialEpoch.fresh(2))
    assert (stop.value.partial.epoch, stop.value.partial.batch, stop.value.partial.seen) == (2, 2, 16)
    engine.train_one_epoch(split, b, quiet, stop.value.partial)
    assert torch.equal(torch.cat(whole.forward.inputs), expected)
    assert torch.equal(torch.cat(split.forward.inputs), expected)  # 2 batches, then the other 3, same order
    assert not torch.equal(torch.cat([x for x, _ in b.iterate(b.order(cfg.seed, 1))]), expected)


def test_train_one_epoch_returns_per_image_means_and_its_clocks(cfg, dataset, quiet):
    tr = engine.train_one_epoch(Learner.build(cfg, fresh_net(cfg)), train_batches(cfg, dataset), quiet,
                                PartialEpoch.fresh(1))
    assert set(tr) == set(schema.TRAIN_METRICS)
    assert tr["train_total_loss"] == pytest.approx(tr["train_loss"] + cfg.aux_weight * tr["train_aux_loss"])
    assert tr["train_aux_loss"] > 0 and 0 <= tr["train_acc"] <= 1  # the aux arms are trained and measured
    assert 0 < tr["data_time_s"] <= tr["train_time_s"]
    assert tr["throughput_img_s"] == cfg.train_size / tr["train_time_s"]


def test_evaluate_scores_the_main_head_in_eval_mode_over_the_whole_test_split(cfg, dataset, quiet):
    learner = Learner.build(cfg, fresh_net(cfg))
    test = DeviceBatches(dataset.test, cfg.eval_batch_size, cfg.image_size, torch.device("cpu"), False)
    ev = engine.evaluate(learner, test, quiet)
    assert set(ev) == set(schema.EVAL_METRICS) and ev["eval_time_s"] > 0
    assert not learner.net.training
    with torch.no_grad():
        main = torch.cat([learner.net(x)[0] for x, _ in test.iterate(test.order(cfg.seed, 0))])
    assert ev["test_acc"] == (main.argmax(1) == dataset.test.labels).sum().item() / cfg.test_size
    assert ev["test_loss"] == pytest.approx(F.cross_entropy(main, dataset.test.labels).item())


def test_fit_records_every_epoch_with_consistent_clocks(cfg, dataset, quiet):
    tracker, saved = ListTracker(), ListCheckpoint(cfg)
    net = fresh_net(cfg)
    history, summary = fit(cfg, dataset, net, tracker, quiet, checkpoint=saved)
    assert all(set(h) == set(schema.EPOCH_METRICS) for h in history)
    for h in history:
        assert h["epoch_time_s"] == h["train_time_s"] + h["eval_time_s"]
        assert h["throughput_img_s"] == cfg.train_size / h["train_time_s"]
        assert 0 < h["data_time_s"] <= h["train_time_s"]
    el = [h["elapsed_time_s"] for h in history]
    assert el[0] == history[0]["epoch_time_s"] and el[1] == el[0] + history[1]["epoch_time_s"] and el[1] > el[0]
    # Logged once per epoch, stamped when it ended; checkpointed first, each a CPU copy of its moment.
    assert [(e, m) for e, m, _ in tracker.logged] == [(1, history[0]), (2, history[1])]
    assert [s.epoch for s in saved.states] == [1, 2] and saved.states[1].epoch_ended_ms == [t for *_, t in
                                                                                          tracker.logged]
    first, last = (s.model for s in saved.states)
    assert not all(torch.equal(first[k], last[k]) for k in last)  # not the model as it is now
    assert all(torch.equal(last[k], v) for k, v in net.state_dict().items())
    assert summary["total_time_s"] == el[-1] and summary["final_test_acc"] == history[-1]["test_acc"]
    assert set(summary) - set(schema.SUMMARY_METRICS) == {schema.time_to_target(p) for p in cfg.target_accs
                                                          if summary["best_test_acc"] >= p / 100}


@pytest.mark.parametrize("stop_after", [2, 7], ids=["in epoch 1", "in epoch 2"])
def test_a_fit_stopped_mid_epoch_and_resumed_is_bit_identical_to_an_uninterrupted_one(cfg, dataset, quiet,
                                                                                     reference, stop_after):
    saved = ListCheckpoint(cfg)
    with pytest.raises(Interrupted) as stop:
        fit(cfg, dataset, fresh_net(cfg), ListTracker(), dataclasses.replace(quiet, should_stop=StopAfter(
            stop_after)), checkpoint=saved)
    state = saved.states[-1]  # 5 batches an epoch: stopped at epoch 1 + stop_after // 5, batch stop_after % 5
    got, sent = dataclasses.asdict(state.partial), dataclasses.asdict(stop.value.partial)
    assert torch.equal(got.pop("sums"), sent.pop("sums")) and got == sent  # the Interrupted epoch, checkpointed
    assert (state.epoch, state.partial.epoch, state.partial.batch) == (stop_after // 5, stop_after // 5 + 1,
                                                                      stop_after % 5)

    tracker, net = ListTracker(), fresh_net(cfg)  # another process: seeded and built anew, then restored
    history, _ = fit(cfg, dataset, net, tracker, quiet, resume=state)
    reference_history, reference_weights = reference
    assert [[h[k] for k in LEARNED] for h in history] == [[h[k] for k in LEARNED] for h in reference_history]
    assert [e for e, *_ in tracker.logged] == list(range(state.epoch + 1, cfg.epochs + 1))  # the rest, once
    assert all(torch.equal(v, reference_weights[k]) for k, v in net.state_dict().items())
    assert history[-1]["elapsed_time_s"] > history[0]["elapsed_time_s"]


def test_non_finite_loss_names_its_epoch_and_batch(cfg, dataset, quiet):
    net, batches = fresh_net(cfg), 0

    def poison_after_batch_3_of_epoch_2() -> bool:  # should_stop runs after every batch (5 an epoch)
        nonlocal batches
        batches += 1
        if batches == 5 + 3:
            with torch.no_grad():
                for p in net.parameters():
                    p.fill_(float("nan"))
        return False
    with pytest.raises(NonFiniteLoss) as e:
        fit(cfg, dataset, net, ListTracker(), dataclasses.replace(quiet,
                                                                        should_stop=poison_after_batch_3_of_epoch_2))
    assert (e.value.epoch, e.value.batch) == (2, 4) and str(e.value) == "non-finite loss at epoch 2, batch 4"


def test_a_huge_learning_rate_fails_in_its_first_epoch(cfg, dataset, quiet):
    with pytest.raises(NonFiniteLoss) as e:
        fit(dataclasses.replace(cfg, optimizer="sgd", lr=1e12), dataset, fresh_net(cfg), ListTracker(), quiet)
    assert e.value.epoch == 1 and 2 <= e.value.batch <= 5  # batch 1's loss is finite: nothing has diverged yet
