"""Frozen runs on cached features: the same results as without, shared by runs and processes, never a
corrupt file trusted, and the build's seconds charged to every run that uses it.

The networks get kaiming-initialised convolutions from a weights file (`weights: <file>`): with torchvision's
random init a frozen trunk's features are almost zero and every run would score chance alike, cached or not."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from googlenet_study import cli, engine, feature_cache, model, schema
from googlenet_study import data as data_mod
from googlenet_study.config import RunConfig
from googlenet_study.device import place
from googlenet_study.engine import Hooks, Interrupted

from helpers import ROOT
from helpers.loop import LEARNED, ListCheckpoint, ListTracker, StopAfter

QUIET = Hooks(progress=False, should_stop=lambda: False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, str]:
    """A state-dict file per model whose trunk gives features far from zero."""
    out = {}
    for arch in ("googlenet", "inception_v3"):
        torch.manual_seed(0)
        net, _ = model.build(RunConfig(model=arch, weights="none").resolve())
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        out[arch] = str(tmp_path_factory.mktemp("w") / f"{arch}.pth")
        torch.save(net.net.state_dict(), out[arch])
    return out


def frozen(weights, arch="googlenet", **over) -> RunConfig:
    """A tiny frozen run: googlenet 16 px on 40 digits, or Inception-v3 as small as its arm allows."""
    kw = dict(model=arch, dataset="digits", weights=weights[arch], backbone="frozen", image_size=16, epochs=2,
              batch_size=8, train_size=40, test_size=20, lr=1e-3, threads=1, device="cpu", system_metrics=False)
    return RunConfig(**{**kw, **over}).resolve()


def fit(cfg: RunConfig, root, **kw) -> tuple[list[dict], feature_cache.Cache | None, dict]:
    """engine.fit as train() runs it: seeded, model built, the cache obtained under `root`."""
    engine.seed_everything(cfg)
    data = data_mod.load(cfg)
    net, _ = model.build(cfg)
    cache, tags = feature_cache.obtain(cfg, net, data, root)
    batches = (cache.batches if cache else data_mod.batches)(cfg, data, place(cfg, net))
    history, _ = engine.fit(cfg, net, *batches, ListTracker(), kw.pop("hooks", QUIET), **kw)
    return history, cache, tags


def assert_same_results(a: list[dict], b: list[dict], cfg: RunConfig) -> None:
    """Equal to float rounding: losses within 1e-3 relative, accuracies within one image. Bit-identical on this
    CPU with 2 threads; with 1, oneDNN rounds the trunk's convolutions differently for a batch of 8 (training)
    and of 16 (the cache is built in evaluation-sized batches): features differ by ~1e-5 relative, the losses
    after two epochs by up to 4.3e-5 (the arms' loss). A GPU's cuDNN picks its kernels per batch shape too."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in LEARNED:
            n = cfg.test_size if k.startswith("test") else cfg.train_size
            tol = dict(abs=1 / n + 1e-9) if k.endswith("_acc") else dict(rel=1e-3, abs=1e-6)
            assert y[k] == pytest.approx(x[k], **tol), k


@pytest.mark.parametrize("arch, over", [
    ("googlenet", {}),
    ("inception_v3", {"image_size": 75, "aux_weight": 0.0, "train_size": 20, "test_size": 10, "batch_size": 5}),
    pytest.param("inception_v3", {"image_size": 299, "train_size": 10, "test_size": 10, "batch_size": 5,
                                  "epochs": 1}, marks=pytest.mark.slow),  # 299 px: ~10 s on 2 cores
], ids=["googlenet-2-arms", "inception_v3-no-arm-75px", "inception_v3-arm-299px"])
def test_a_cached_frozen_run_has_the_per_epoch_losses_and_accuracies_of_an_uncached_one(weights, tmp_path, arch,
                                                                                        over):
    cfg = frozen(weights, arch, **over)
    off, none, off_tags = fit(dataclasses.replace(cfg, feature_cache="off"), tmp_path)
    on, cache, tags = fit(cfg, tmp_path)
    assert none is None and off_tags == {schema.FEATURE_CACHE_TAG: "off"}
    assert tags[schema.FEATURE_CACHE_TAG] == "built" and cache.path.is_file()
    n, m = cfg.train_size, cfg.test_size
    want = {"googlenet": [(n, 1024), (n, 512, 4, 4), (n, 528, 4, 4)],
            "inception_v3": [(n, 2048)] + [(n, 768)] * cfg.has_aux}[arch]
    assert [tuple(t.shape) for t in (cache.train.pooled, *cache.train.taps)] == want
    assert feature_cache.nbytes(cfg, data_mod.load(cfg)) == sum(  # what the memory check uses
        t.numel() * t.element_size() for t in (cache.train.pooled, *cache.train.taps, cache.test.pooled))
    assert tuple(cache.test.pooled.shape) == (m, want[0][1]) and cache.test.taps == ()
    assert_same_results(off, on, cfg)
    assert off[-1]["train_loss"] != off[0]["train_loss"] or cfg.epochs == 1  # it learns: the check is not vacuous


def test_the_network_split_into_features_and_heads_is_torchvisions_forward():
    for arch, size in (("googlenet", 32), ("inception_v3", 299)):
        torch.manual_seed(0)
        net, _ = model.build(RunConfig(model=arch, weights="none", image_size=size).resolve())
        net.train()
        x = torch.randn(2, 3, size, size)
        torch.manual_seed(1)
        main, aux = net(x)
        torch.manual_seed(1)  # the same dropout masks: heads() runs the arms first, as torchvision does
        ref = net.net(x)
        refs = [ref.aux_logits1, ref.aux_logits2] if arch == "googlenet" else [ref.aux_logits]
        assert torch.equal(main, ref.logits) and all(torch.equal(a, r) for a, r in zip(aux, refs, strict=True))


@pytest.mark.slow  # two runs through train()
def test_a_second_run_through_the_cli_reuses_the_cache_and_is_charged_its_build_time(weights, tracking_uri,
                                                                                    tmp_path):
    cfg = frozen(weights, epochs=2)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.to_params().items()]
    for run_name in ("first", "second"):
        assert cli.main(["train", *flags, "--run-name", run_name, "--resume", "never", "--experiment", "fc"]) == 0
    c = MlflowClient(tracking_uri)
    runs = {r.info.run_name: r for r in c.search_runs([c.get_experiment_by_name("fc").experiment_id])}
    first, second = runs["first"], runs["second"]
    assert first.data.tags[schema.FEATURE_CACHE_TAG] == "built"
    assert second.data.tags[schema.FEATURE_CACHE_TAG] == "reused"
    path = first.data.tags[schema.FEATURE_CACHE_FILE_TAG]
    assert second.data.tags[schema.FEATURE_CACHE_FILE_TAG] == path
    assert path.startswith(str(tmp_path / ".checkpoints" / "feature-cache"))  # beside the checkpoints
    (built,) = c.get_metric_history(first.info.run_id, schema.FEATURE_CACHE_BUILD_S)
    (reused,) = c.get_metric_history(second.info.run_id, schema.FEATURE_CACHE_BUILD_S)
    assert built.step == 0 and built.value > 0 and reused.value == built.value  # stored with the features
    for r in (first, second):
        train = {m.step: m.value for m in c.get_metric_history(r.info.run_id, "train_time_s")}
        epoch = {m.step: m.value for m in c.get_metric_history(r.info.run_id, "epoch_time_s")}
        assert train[1] > built.value  # charged to epoch 1 ...
        assert r.data.metrics["elapsed_time_s"] == pytest.approx(epoch[1] + epoch[2])  # ... and so to the clock
    assert second.data.metrics["test_loss"] == first.data.metrics["test_loss"]  # the same features, the same run


def test_a_corrupt_cache_file_is_rebuilt_never_trusted(weights, tmp_path):
    cfg = frozen(weights, epochs=1)
    _, cache, _ = fit(cfg, tmp_path)
    good = cache.path.read_bytes()
    damage = {"CRC-32": good[:-1] + bytes([good[-1] ^ 1]),  # one bit of the last tensor flipped
              "its header says": good[:-100],                  # truncated
              "not a feature cache": b"\0" * len(good)}
    for why, data in damage.items():
        cache.path.write_bytes(data)
        history, again, tags = fit(cfg, tmp_path)
        assert tags[schema.FEATURE_CACHE_TAG] == "built", why
        assert why in tags[schema.FEATURE_CACHE_WARNING_TAG] and "rebuilt" in tags[schema.FEATURE_CACHE_WARNING_TAG]
        assert cache.path.read_bytes()[-1000:] == good[-1000:]  # replaced by a whole file
        assert torch.equal(again.train.pooled, cache.train.pooled)
    assert fit(cfg, tmp_path)[2][schema.FEATURE_CACHE_TAG] == "reused"
    assert sorted(p.name for p in cache.path.parent.iterdir()) == [cache.path.name, cache.path.name + ".lock"]


RACER = """
import pathlib, sys, time
from googlenet_study import data, engine, feature_cache, model
from googlenet_study.config import RunConfig
cfg = RunConfig.from_dict(dict(a.split("=", 1) for a in sys.argv[3:])).resolve()
engine.seed_everything(cfg)
ds, (net, _) = data.load(cfg), model.build(cfg)
me, other = pathlib.Path(sys.argv[2] + "." + sys.argv[1]), pathlib.Path(sys.argv[2] + "." + str(1 - int(sys.argv[1])))
me.touch()
while not other.exists():  # both start obtaining within milliseconds
    time.sleep(0.01)
cache, tags = feature_cache.obtain(cfg, net, ds, sys.argv[2])
print(tags["feature_cache"], cache.build_s)
"""


@pytest.mark.slow  # two processes
def test_two_racing_processes_build_the_cache_once_and_share_its_build_time(weights, tmp_path):
    cfg = frozen(weights, image_size=32, train_size=100, test_size=50)
    args = [f"{k}={v}" for k, v in cfg.to_params().items()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(i), str(tmp_path / "root"), *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = sorted(o.split()[-2:] for o, _ in outs)
    assert [status for status, _ in lines] == ["built", "reused"], outs
    assert lines[0][1] == lines[1][1]  # the reuser is charged the builder's seconds
    (f,) = (tmp_path / "root" / "feature-cache").glob("*.feat")  # one file, no temp file left
    assert len(list(f.parent.iterdir())) == 2


def test_features_that_do_not_fit_leave_the_run_uncached_with_a_warning(weights, tmp_path):
    cfg = frozen(weights)
    engine.seed_everything(cfg)
    data, (net, _) = data_mod.load(cfg), model.build(cfg)
    need = feature_cache.nbytes(cfg, data)
    assert need == 40 * 4 * (1024 + 2 * 8192 + 256) + 20 * 4 * 1024  # fp32: pooled and both arms' 4x4 maps
    cache, tags = feature_cache.obtain(cfg, net, data, tmp_path, available=1 << 20)
    assert cache is None and tags[schema.FEATURE_CACHE_TAG] == "off"
    assert "ran without them" in tags[schema.FEATURE_CACHE_WARNING_TAG]
    assert not (tmp_path / "feature-cache").exists()
    assert feature_cache.obtain(dataclasses.replace(cfg, backbone="full"), net, data, tmp_path)[0] is None


def test_a_resumed_cached_run_is_charged_the_build_once_and_rebuilds_a_missing_cache(weights, tmp_path):
    """A large build time makes the charge visible: epoch 1 carries it, across a stop mid-epoch; epoch 2 does not."""
    cfg = frozen(weights)
    reference, cache, _ = fit(cfg, tmp_path)
    charge = 1000.0  # s

    def run(resume=None, stop=None):
        engine.seed_everything(cfg)
        data, (net, _) = data_mod.load(cfg), model.build(cfg)
        c, _ = feature_cache.obtain(cfg, net, data, tmp_path)
        saver = ListCheckpoint(cfg)
        hooks = dataclasses.replace(QUIET, should_stop=stop or QUIET.should_stop)
        try:
            batches = dataclasses.replace(c, build_s=charge).batches(cfg, data, place(cfg, net))
            return engine.fit(cfg, net, *batches, ListTracker(), hooks, resume=resume, checkpoint=saver)[0], c
        except Interrupted:
            return saver.states[-1], c
    state, _ = run(stop=StopAfter(2))  # stopped after batch 2 of epoch 1
    assert state.partial.epoch == 1 and state.partial.train_time_s > charge
    cache.path.unlink()  # the resumed process finds no cache: it builds one, and is not charged again
    history, again = run(resume=state)
    assert again.status == "built"
    assert charge < history[0]["train_time_s"] < 2 * charge and history[1]["train_time_s"] < charge
    assert_same_results(reference, history, cfg)


def test_a_cache_folder_that_cannot_be_written_leaves_the_features_unsaved_with_a_warning(weights, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    history, cache, tags = fit(frozen(weights, epochs=1), blocked)
    assert tags[schema.FEATURE_CACHE_TAG] == "built" and "used unsaved" in tags[schema.FEATURE_CACHE_WARNING_TAG]
    assert len(history) == 1 and blocked.read_text() == "not a folder"
