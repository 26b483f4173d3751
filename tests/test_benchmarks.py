"""Speed work that must not change the math, and every benchmark script runnable on CPU.

Timings are never asserted: the benchmarks print them; these tests check that the scripts run
at their smallest setting and print their ratio line, and that the frozen-backbone shortcuts
(no autograd graph through the trunk, BatchNorm folded into the frozen convs) are exact."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from googlenet_study import model

ROOT = Path(__file__).resolve().parent.parent


def _graph_ops(t: torch.Tensor) -> list[str]:
    """Names of every autograd node reachable from t."""
    seen, stack, names = set(), [t.grad_fn], []
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        names.append(type(n).__name__)
        stack.extend(f for f, _ in n.next_functions)
    return names


def _randomise_bn(net: model.Network, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, as ImageNet weights would have."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _pair(tiny_cfg, **over):
    cfg = dataclasses.replace(tiny_cfg, backbone="frozen", **over).resolve()
    torch.manual_seed(0)
    plain, _ = model.build(cfg, fold_bn=False)
    folded, _ = model.build(cfg)
    _randomise_bn(plain)
    folded.load_state_dict(plain.state_dict())  # same keys: the folded conv is not in the state dict
    return plain, folded


@pytest.mark.parametrize("arch", ["googlenet", pytest.param("inception_v3", marks=pytest.mark.slow)])  # 8 s CPU
def test_folded_frozen_model_gives_the_unfolded_outputs(tiny_cfg, arch):
    over = {"model": arch} if arch == "googlenet" else {"model": arch, "image_size": 75, "aux_weight": 0.0}
    plain, folded = _pair(tiny_cfg, **over)
    assert len(folded.folded) > 50 and plain.folded == []
    assert plain.state_dict().keys() == folded.state_dict().keys()
    size = over.get("image_size", tiny_cfg.image_size)
    x = torch.randn(4, 3, size, size)
    for mode in (True, False):  # train mode (frozen BN stays in eval) and eval mode
        plain.train(mode), folded.train(mode)
        torch.manual_seed(1)
        a, aux_a = plain(x)
        torch.manual_seed(1)
        b, aux_b = folded(x)
        # Random-init Inception-v3 at 75 px gives logits of ~1e10 (no trained BN statistics): folding changes
        # the float32 rounding of every conv, so agreement is relative to the outputs' scale, 1e-3.
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
        for u, v in zip(aux_a, aux_b, strict=True):
            torch.testing.assert_close(v, u, rtol=1e-3, atol=1e-4)


def test_folding_follows_weights_loaded_later(tiny_cfg):
    """A resumed run loads its checkpoint after build: the folded conv must follow."""
    plain, folded = _pair(tiny_cfg)
    _randomise_bn(plain, seed=5)
    folded.load_state_dict(plain.state_dict())
    plain.eval(), folded.eval()  # eval()/train() refresh the fold, as every epoch does
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(folded(x)[0], plain(x)[0], rtol=1e-4, atol=1e-4)


def test_frozen_builds_no_autograd_graph_through_the_trunk(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, backbone="frozen").resolve()
    net, _ = model.build(cfg)
    net.train()
    trunk_out = {}
    net.net.inception4a.register_forward_hook(lambda m, i, o: trunk_out.setdefault("4a", o))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    main, aux = net(x)
    assert trunk_out["4a"].grad_fn is None and not trunk_out["4a"].requires_grad
    loss = F.cross_entropy(main, y) + sum(F.cross_entropy(a, y) for a in aux)
    ops = _graph_ops(loss)
    # Only GoogLeNet's two (untrained, so trainable) arms hold a conv; the trunk's 57 do not appear.
    assert ops.count("ConvolutionBackward0") == 2
    loss.backward()
    for name, p in net.net.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    assert not any(p.requires_grad for p in net.net.inception5b.parameters())


@pytest.mark.parametrize("size", [299, 64, 5])  # upscale (CIFAR -> 299), and an antialiased downscale
def test_normalising_before_the_resize_is_the_same_transform(size):
    """DeviceBatches normalises at the native size, then resizes: the same map as resize-then-normalise."""
    from googlenet_study.data import IMAGENET_MEAN, IMAGENET_STD, DeviceBatches, Split

    u8 = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    b = DeviceBatches(Split(u8, torch.zeros(4, dtype=torch.long)), 4, size, torch.device("cpu"), shuffle=False)
    x = F.interpolate(u8.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=size < 32)
    want = (x / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(b.transform(u8), want, rtol=0, atol=1e-5)


# Each benchmark at its smallest setting: it must run on a CPU and print its table and ratio line.
SMOKE = {
    "harness_vs_bare.py": ["--repeats", "1", "--epochs", "2", "--train-size", "16", "--test-size", "10",
                           "--image-size", "16", "--batch-size", "8"],
    "input_pipeline.py": ["--images", "48", "--repeats", "1", "--batch-size", "16", "--workers", "1",
                          "--real-image-size", "16", "--real-train-size", "16"],
    "frozen_vs_full.py": ["--repeats", "1", "--epochs", "1", "--train-size", "16", "--test-size", "10",
                          "--image-size", "16", "--batch-size", "8"],
    "feature_cache.py": ["--repeats", "1", "--epochs", "2", "--train-size", "16", "--test-size", "10",
                         "--image-size", "16", "--batch-size", "8"],
    "aux_cost.py": ["--repeats", "1", "--steps", "1", "--image-size", "16", "--batch-size", "4",
                    "--inception-steps", "0"],
    "filter_grid.py": ["--repeats", "1", "--filters", "8", "--kernel", "3"],
    "tracking_overhead.py": ["--calls", "2", "--epochs", "1", "--train-size", "16", "--test-size", "10",
                             "--image-size", "16", "--batch-size", "8"],
    "gpu_epoch.py": ["--steps", "1", "--warmup", "0", "--batch-sizes", "2", "--amps", "none", "--channels-last", "off",
                     "--model", "googlenet", "--image-size", "16", "--factorial", "--factorial-batch-sizes", "2",
                     "--factorial-set", "model=googlenet", "--factorial-set", "image_size=16"],
}
# One fresh process runs them all as `__main__`, one after another (torch and mlflow import once).
RUNNER = """
import runpy, sys, traceback
sys.path.insert(0, {bench!r})
for script, argv in {smoke!r}.items():
    print("=== " + script, flush=True)
    sys.argv = [script, *argv]
    try:
        runpy.run_path({bench!r} + "/" + script, run_name="__main__")
    except BaseException:
        print("=== FAILED " + script, flush=True)
        traceback.print_exc()
    sys.stdout.flush()
"""


@pytest.fixture(scope="module")
def smoke_output(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bench")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/unused.db"}
    code = RUNNER.format(bench=str(ROOT / "benchmarks"), smoke=SMOKE)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    sections = re.split(r"^=== (\S+)\n", p.stdout, flags=re.M)[1:]
    out = dict(zip(sections[::2], sections[1::2]))
    return {k: v + (p.stderr[-3000:] if "=== FAILED" in v else "") for k, v in out.items()}


@pytest.mark.slow  # each benchmark script in a fresh process
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_on_cpu_and_prints_its_ratio(script, smoke_output):
    out = smoke_output.get(script, "")
    assert "=== FAILED" not in out, out
    assert re.search(r"^-{3,}  -{3,}", out, re.M), out  # a table
    assert re.search(r"^ratio [^\n]*?\d+(\.\d+)?", out, re.M), out


@pytest.fixture(scope="module")
def gpu_check_tiny(tmp_path_factory) -> dict:
    """benchmarks/gpu_check.sh --tiny, as CI runs it: every part at toy sizes on the CPU."""
    tmp = tmp_path_factory.mktemp("gpu-check")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "PYTHON": sys.executable, "GPU_CHECK_TINY": "1",
           "GPU_CHECK_WHEELS": str(tmp / "no-wheels")}
    p = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp / "out")], capture_output=True,
                       text=True, cwd=tmp, env=env, timeout=400)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    return {"out": tmp / "out", "stdout": p.stdout}


@pytest.mark.slow  # benchmarks/gpu_check.sh
def test_gpu_check_runs_every_part_on_cpu_and_writes_one_table(gpu_check_tiny):
    out, stdout = gpu_check_tiny["out"], gpu_check_tiny["stdout"]
    text = (out / "gpu_check.txt").read_text()
    assert text in stdout  # the table printed is the table written
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("part "))
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[start + 2:]]
    assert {r[0] for r in rows} == set("abcdef"), text
    assert not [r for r in rows if "failed" in r[1:3] or r[1] == "skipped"], text
    # (a) gpu_epoch's grid at the tiny sizes: channels_last off and on at batch 2.
    assert sum(r[0] == "a" for r in rows) == 2
    # (f) the factorial study, its batch sizes shrunk to [2]: 3 seeds x 3 aux weights x 2 backbones, at 466 s an epoch.
    lecture = next(r for r in rows if r[0] == "f" and "lecture" in r[1])
    assert "18 runs x 10 epochs" in lecture[1] and lecture[2] == f"{18 * 10 * 466 / 3600:,.1f} h"
    assert re.search(r"^ratio googlenet-study / lecture's way \(training img/s\): \d", stdout, re.M)
    assert not (out / "checkpoints").exists()  # run checkpoints and feature caches are removed


@pytest.mark.slow
def test_gpu_check_records_real_runs_on_fake_data_in_its_own_mlflow_store(gpu_check_tiny):
    from mlflow import MlflowClient

    from googlenet_study.config import field_names

    c = MlflowClient(f"sqlite:///{gpu_check_tiny['out'] / 'mlflow.db'}")
    names = ["b"] + (["d-off", "d-auto"] if "feature_cache" in field_names() else [])
    for name in names:
        (run,) = c.search_runs([c.get_experiment_by_name(f"gpu-check-{name}").experiment_id])
        p = run.data.params
        assert run.info.status == "FINISHED" and (p["dataset"], p["device"], p["weights"]) == ("fake", "cpu", "none")
        assert p["epochs"] == ("1" if name == "b" else "2") and p["backbone"] == ("full" if name == "b" else "frozen")
        if name != "b":
            assert run.data.tags["feature_cache"] == {"d-off": "off", "d-auto": "built"}[name]
