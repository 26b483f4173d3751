"""Runs survive kills: atomic checkpoints, resume into the same MLflow run, an honest clock."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from googlenet_study import checkpoint
from googlenet_study.engine import Hooks
from googlenet_study.train import RunOptions, train

from helpers import cfg_args, cli, new_store, tiny_config, wait_for
from helpers.loop import LEARNED

def start(cfg, tmp_path: Path, *extra: str) -> subprocess.Popen:
    # The store is named explicitly: in-process MLflow calls may have changed MLFLOW_TRACKING_URI.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.Popen([sys.executable, "-m", "googlenet_study", "train", *cfg_args(cfg), *extra],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_epochs(uri: str, n: int, proc: subprocess.Popen) -> str:
    """The id of the run once MLflow has its epoch n (the training process is then past it)."""
    c = MlflowClient(uri)

    def logged() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        exps = [e.experiment_id for e in c.search_experiments()]
        runs = c.search_runs(exps) if exps else []
        if runs and len(c.get_metric_history(runs[0].info.run_id, "test_acc")) >= n:
            return runs[0].info.run_id
        return None
    return wait_for(logged, f"the run's epoch {n} in MLflow (test_acc at step {n})", every=0.2)


def histories(uri: str, run_id: str) -> dict[str, list]:
    c = MlflowClient(uri)
    return {k: sorted(c.get_metric_history(run_id, k), key=lambda m: m.step) for k in LEARNED + ("elapsed_time_s",
                                                                                              "epoch_time_s")}


def reference_run(cfg, tmp_path: Path) -> dict[str, list]:
    """The same config run once without interruption, in its own store."""
    uri = new_store(tmp_path / "reference.db")
    ref = cli("train", *cfg_args(cfg), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert ref.returncode == 0, ref.stderr
    return histories(uri, ref.stdout.split()[1])


def assert_each_epoch_once_and_identical(h: dict, reference: dict, epochs: int) -> None:
    for k in LEARNED:
        assert [m.step for m in h[k]] == list(range(1, epochs + 1)), k
        assert [m.value for m in h[k]] == [m.value for m in reference[k]], k


@pytest.fixture(scope="module")
def det_cfg():
    return dataclasses.replace(tiny_config(), deterministic=True, threads=2, epochs=3, train_size=240, test_size=60,
                               aux_weight=0.3)


@pytest.fixture(scope="module")
def reference(det_cfg, tmp_path_factory) -> dict[str, list]:
    """det_cfg run once, uninterrupted, in its own store: what each interrupted and resumed run must equal."""
    return reference_run(det_cfg, tmp_path_factory.mktemp("reference"))


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_is_bit_identical_to_an_uninterrupted_run(det_cfg, reference, tracking_uri,
                                                                                 tmp_path):
    p = start(det_cfg, tmp_path)
    run_id = wait_for_epochs(tracking_uri, 1, p)  # epoch 1 checkpointed, then logged: the process is in epoch 2
    p.send_signal(signal.SIGKILL)
    p.wait()
    c = MlflowClient(tracking_uri)
    assert c.get_run(run_id).info.status == "RUNNING"  # what MLflow alone leaves behind

    p2 = cli("train", *cfg_args(det_cfg), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking_uri})
    assert p2.returncode == 0, p2.stderr
    assert run_id in p2.stdout
    runs = c.search_runs([c.get_run(run_id).info.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the same run, continued
    assert runs[0].data.tags["resumed_at_epoch"] in ("2", "3")
    h = histories(tracking_uri, run_id)
    assert_each_epoch_once_and_identical(h, reference, 3)
    el, ep = [m.value for m in h["elapsed_time_s"]], [m.value for m in h["epoch_time_s"]]
    assert el == pytest.approx([ep[0], ep[0] + ep[1], ep[0] + ep[1] + ep[2]])  # downtime not counted
    assert not list((tmp_path / ".checkpoints").rglob("*.ckpt"))  # finished: checkpoint removed


@pytest.mark.slow
def test_sigterm_finishes_the_batch_checkpoints_it_ends_killed_exit_143_and_resumes_there(det_cfg, reference,
                                                                                         tracking_uri, tmp_path):
    p = start(det_cfg, tmp_path, "--keep-checkpoints")
    run_id = wait_for_epochs(tracking_uri, 1, p)
    p.send_signal(signal.SIGTERM)  # lands in epoch 2 (of 3; 8 batches of ~0.1 s)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    c = MlflowClient(tracking_uri)
    run = c.get_run(run_id)
    assert run.info.status == "KILLED" and "signal" in run.data.tags["end_reason"]
    ck = list((tmp_path / ".checkpoints").rglob("*.ckpt"))
    assert [x.name for x in ck] == [f"{run_id}.ckpt"]
    state = checkpoint.load(ck[0], det_cfg.resolve())
    part = state.partial  # the batch in flight finished and was checkpointed, mid-epoch
    assert part.epoch == state.epoch + 1 and 1 <= part.batch <= 8
    assert part.seen == min(part.batch * det_cfg.batch_size, det_cfg.train_size)

    p2 = cli("train", *cfg_args(det_cfg), "--keep-checkpoints", cwd=tmp_path)
    assert p2.returncode == 0, p2.stderr
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_at_batch"] == str(part.batch + 1)
    # the interrupted epoch, finished by another process, is the uninterrupted run's epoch to the bit
    assert_each_epoch_once_and_identical(histories(tracking_uri, run_id), reference, 3)
    assert checkpoint.load(ck[0], det_cfg.resolve()).epoch == 3  # kept when asked


# A real kill -9 at the one moment an epoch is in the checkpoint but not yet in MLflow.
_DIE_BEFORE_LOGGING_EPOCH_2 = """
import os, signal, sys
from googlenet_study import cli, tracking
log = tracking.MlflowRun.log_epoch
def log_or_die(self, epoch, metrics, timestamp_ms=None):
    if epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return log(self, epoch, metrics, timestamp_ms)
tracking.MlflowRun.log_epoch = log_or_die
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_killed_between_checkpoint_and_log_the_resume_logs_that_epoch_once(det_cfg, reference, tracking_uri,
                                                                          tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    p = subprocess.run([sys.executable, "-c", _DIE_BEFORE_LOGGING_EPOCH_2, "train", *cfg_args(det_cfg)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    c = MlflowClient(tracking_uri)
    (run,) = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert [m.step for m in c.get_metric_history(run.info.run_id, "test_acc")] == [1]
    (ck,) = (tmp_path / ".checkpoints").rglob("*.ckpt")
    state = checkpoint.load(ck, det_cfg.resolve())
    assert state.epoch == 2  # epoch 2 reached the checkpoint, not MLflow

    p2 = cli("train", *cfg_args(det_cfg), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking_uri})
    assert p2.returncode == 0, p2.stderr
    h = histories(tracking_uri, run.info.run_id)
    assert_each_epoch_once_and_identical(h, reference, 3)
    assert h["test_acc"][1].timestamp == state.epoch_ended_ms[1]  # logged late, stamped when it ended


@pytest.mark.slow  # a fresh process
def test_corrupt_checkpoint_is_one_line_exit_2_and_no_new_run(tiny_cfg, tracking_uri, tmp_path):
    bad = checkpoint.path_for(tmp_path / ".checkpoints", tiny_cfg.resolve(), "0123456789abcdef")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x80\x02truncated")
    p = cli("train", *cfg_args(tiny_cfg), cwd=tmp_path)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and str(bad) in p.stderr and "--resume never" in p.stderr
    c = MlflowClient(tracking_uri)
    assert not c.search_runs([e.experiment_id for e in c.search_experiments()])


def test_resume_never_starts_fresh_and_an_unknown_run_id_is_refused(tiny_cfg, tracking_uri, tmp_path, capsys):
    from googlenet_study.cli import main
    assert main(["train", *cfg_args(tiny_cfg), "--resume", "feedbeef" * 4]) == 2
    assert f"no checkpoint for run {'feedbeef' * 4}" in capsys.readouterr().err


# Format 1 on disk: a torch-saved plain dict with these keys (older checkpoints stay readable).
FORMAT_1_KEYS = {"format", "host", "pid", "epoch", "model", "optimizer", "scaler", "rng", "history", "epoch_ended_ms",
                 "elapsed_time_s", "partial", "config_hash", "run_id", "parent_run_id", "config", "filters_before"}


def test_checkpoint_writes_are_atomic_and_read_back_as_written(tiny_cfg, tmp_path):
    cfg = tiny_cfg.resolve()
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    run = checkpoint.RunIdentity.of(cfg, "r", "p", torch.ones(2, 3))
    path = checkpoint.path_for(tmp_path, cfg, "r")
    checkpoint.save(path, checkpoint.TrainingState.snapshot(run, net, opt, None, [], []))
    part = dataclasses.replace(checkpoint.PartialEpoch.fresh(2), batch=3, seen=96, train_time_s=0.5)
    checkpoint.save(path, checkpoint.TrainingState.snapshot(run, net, opt, None,
                                                            [{"elapsed_time_s": 1.5, "test_acc": 0.5}], [7], part))
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.ckpt"]  # no temp file left behind
    on_disk = torch.load(path, weights_only=True)  # plain data: no class of ours, no numpy array
    assert set(on_disk) == FORMAT_1_KEYS and on_disk["epoch"] == 1 and on_disk["elapsed_time_s"] == 1.5
    assert on_disk["partial"]["batch"] == 3 and on_disk["pid"] == os.getpid()
    back = checkpoint.load(path, cfg)
    assert (back.epoch, back.epoch_ended_ms, back.partial.batch, back.partial.seen) == (1, [7], 3, 96)
    assert (back.run.run_id, back.run.parent_run_id, back.run.config) == ("r", "p", cfg.to_dict())
    assert torch.equal(back.run.filters_before, torch.ones(2, 3)) and not back.writer.alive()  # we wrote it
    assert torch.equal(back.model["weight"], net.weight.detach())


@pytest.mark.slow  # trains (in this process)
def test_non_finite_loss_fails_the_run_with_the_epoch_and_batch(tiny_cfg, tracking_uri):
    r = train(dataclasses.replace(tiny_cfg, optimizer="sgd", lr=1e12, epochs=1))
    run = MlflowClient(tracking_uri).get_run(r.run_id)
    assert r.status == "FAILED" and run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("non-finite loss at epoch 1, batch ")
    assert int(run.data.tags["failure_batch"]) >= 1


@pytest.mark.slow
def test_any_exception_ends_the_run_failed_never_running(tiny_cfg, tracking_uri):
    def boom(epoch, metrics):
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        train(dataclasses.replace(tiny_cfg, epochs=1), options=RunOptions(hooks=Hooks(on_epoch=[boom])))
    c = MlflowClient(tracking_uri)
    (run,) = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert run.info.status == "FAILED" and "disk full" in run.data.tags["failure_reason"]


@pytest.mark.slow
def test_an_error_on_the_epoch_end_thread_fails_the_run_with_its_reason(tiny_cfg, tracking_uri, monkeypatch):
    # The checkpoint and the MLflow log of an epoch are written on a background thread; what goes
    # wrong there must reach the run like any other error, not vanish with the thread.
    from googlenet_study import tracking

    def log_epoch(self, epoch, metrics, timestamp_ms=None):
        raise OSError("No space left on device")
    monkeypatch.setattr(tracking.MlflowRun, "log_epoch", log_epoch)
    with pytest.raises(OSError, match="No space left"):
        train(dataclasses.replace(tiny_cfg, epochs=2))
    c = MlflowClient(tracking_uri)
    (run,) = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["failure_reason"]
