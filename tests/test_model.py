"""The networks: the lecture's parameter count, 10-class heads, arms, frozen trunks (BatchNorm folded, no graph
through them, exactly the unfolded outputs), weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torchvision import models

from googlenet_study import model
from googlenet_study.config import RunConfig, UserError


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def build(**kw) -> model.Network:
    cfg = RunConfig(**{"weights": "none", **kw}).resolve()
    return model.build(cfg)[0]


def test_inception_v3_with_imagenet_heads_has_the_lectures_27161264_parameters():
    assert n_params(models.inception_v3(weights=None, aux_logits=True, init_weights=False)) == 27_161_264


@pytest.mark.parametrize("arch", ["inception_v3", "googlenet"])
@pytest.mark.parametrize("aux", [True, False])
def test_ten_class_heads_match_torchvisions_own_num_classes_10(arch, aux):
    ref = getattr(models, arch)(weights=None, aux_logits=aux, num_classes=10, init_weights=False)
    net = build(model=arch, aux_weight=1.0 if aux else 0.0, image_size=299 if aux else 224)
    assert model.count_params(net)[0] == n_params(ref)
    assert net.net.fc.out_features == 10
    if arch == "inception_v3" and aux:
        assert (net.net.AuxLogits.fc.in_features, net.net.AuxLogits.fc.out_features) == (768, 10)
        assert net.net.fc.in_features == 2048
    if arch == "googlenet" and aux:
        assert net.net.aux1.fc2.out_features == net.net.aux2.fc2.out_features == 10


def test_aux_weight_zero_removes_the_arms_from_the_model_and_the_forward_pass():
    net = build(model="googlenet", aux_weight=0.0, image_size=32)
    assert net.net.aux1 is None and net.net.aux2 is None and net.arms == []
    net.train()
    main, aux = net(torch.randn(2, 3, 32, 32))
    assert main.shape == (2, 10) and aux == []
    with_arms = build(model="googlenet", aux_weight=0.3, image_size=32).train()
    assert len(with_arms(torch.randn(2, 3, 32, 32))[1]) == 2


def trainable_names(net: model.Network) -> set[str]:
    return {n for n, p in net.net.named_parameters() if p.requires_grad}


def test_frozen_inception_trains_only_the_new_heads():
    net = build(model="inception_v3", backbone="frozen")
    assert trainable_names(net) == {"fc.weight", "fc.bias", "AuxLogits.fc.weight", "AuxLogits.fc.bias"}


def test_frozen_googlenet_also_trains_its_untrained_aux_arms():
    net = build(model="googlenet", backbone="frozen", image_size=32)
    names = trainable_names(net)
    assert {"fc.weight", "aux1.fc2.weight", "aux2.fc1.weight", "aux1.conv.conv.weight"} <= names
    assert not any(n.startswith(("conv1", "inception", "conv2", "conv3")) for n in names)


def test_frozen_trunk_gets_no_gradient_no_graph_and_keeps_its_batchnorm_statistics():
    net = build(model="googlenet", backbone="frozen", image_size=32).train()
    bn = net.net.conv1.bn
    before = bn.running_mean.clone()
    main, aux = net(torch.randn(4, 3, 32, 32) * 3 + 1)
    (main.sum() + sum(a.sum() for a in aux)).backward()
    assert torch.equal(bn.running_mean, before) and not bn.training
    assert all(p.grad is None for n, p in net.net.named_parameters() if n.startswith(("conv1", "inception")))
    assert net.net.fc.weight.grad is not None and net.net.aux1.fc2.weight.grad is not None
    # No autograd graph through the trunk: its output carries no grad_fn.
    trunk_out = []
    h = net.net.inception5b.register_forward_hook(lambda m, i, o: trunk_out.append(o))
    net(torch.randn(2, 3, 32, 32))
    h.remove()
    assert trunk_out[0].grad_fn is None and not trunk_out[0].requires_grad


def test_full_backbone_trains_everything_and_updates_batchnorm():
    net = build(model="googlenet", image_size=32).train()
    assert model.count_params(net)[0] == model.count_params(net)[1]
    before = net.net.conv1.bn.running_mean.clone()
    net(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not torch.equal(net.net.conv1.bn.running_mean, before)


def write_fake_imagenet(arch: str) -> dict:
    """Random-init weights in ImageNet's shape, written where torch.hub looks: stands in for the download."""
    ref = getattr(models, arch)(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    state = ref.state_dict()
    torch.save(state, model.imagenet_cache_path(arch))
    return state


def test_imagenet_weights_come_from_the_torch_hub_cache(torch_home):
    state = write_fake_imagenet("googlenet")
    net, info = model.build(RunConfig(model="googlenet", image_size=32).resolve())
    assert torch.equal(net.net.conv1.conv.weight, state["conv1.conv.weight"])
    assert net.net.transform_input is True  # torchvision's builders do this with pretrained weights
    assert info.url == models.GoogLeNet_Weights.IMAGENET1K_V1.url and len(info.sha256) == 64
    assert info.file == str(torch_home / "hub" / "checkpoints" / "googlenet-1378be20.pth")


def test_imagenet_weights_missing_offline_names_url_and_exact_cache_path(torch_home):
    with pytest.raises(UserError) as e:
        model.build(RunConfig(model="googlenet", image_size=32).resolve())
    msg = str(e.value)
    assert "https://download.pytorch.org/models/googlenet-1378be20.pth" in msg
    assert str(torch_home / "hub" / "checkpoints" / "googlenet-1378be20.pth") in msg


def test_weights_file_imagenet_shaped_or_ten_class(tmp_path):
    ref = models.googlenet(weights=None, aux_logits=True, init_weights=False)
    f = tmp_path / "imagenet_like.pth"
    torch.save(ref.state_dict(), f)
    net = build(model="googlenet", image_size=32, weights=str(f))
    assert torch.equal(net.net.inception3a.branch1.conv.weight, ref.inception3a.branch1.conv.weight)
    # A 10-class state dict (e.g. a finished run's model) fits too.
    f10 = tmp_path / "ten.pth"
    torch.save(net.net.state_dict(), f10)
    again = build(model="googlenet", image_size=32, weights=str(f10))
    assert torch.equal(again.net.fc.weight, net.net.fc.weight)


def test_weights_file_that_does_not_fit_is_refused(tmp_path):
    f = tmp_path / "wrong.pth"
    torch.save(models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict(), f)
    with pytest.raises(UserError, match="does not fit"):
        build(model="inception_v3", weights=str(f))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        build(model="googlenet", image_size=32, weights=str(junk))


def test_filter_sheet_puts_filter_i_at_row_i_div_8_column_i_mod_8_on_one_scale():
    """The first-conv pictures: 10 filters of 4 x 4 -> 2 rows of 8 tiles with 1 px of white between them;
    every tile on one scale (filter 9 is all 2.0, the largest: white; filter 0 all -2.0: black); a difference
    is drawn around grey."""
    from googlenet_study.artifacts import filter_sheet

    w = torch.zeros(10, 3, 4, 4)
    w[0], w[9] = -2.0, 2.0
    sheet, lim = filter_sheet(w)
    assert sheet.shape == (2 * 5 - 1, 8 * 5 - 1, 3) and lim == 2.0
    assert torch.all(sheet[0:4, 0:4] == 0.0) and torch.all(sheet[5:9, 5:9] == 1.0)  # filter 0; filter 9 (1, 1)
    assert torch.all(sheet[0:4, 5:9] == 0.5)  # filter 1 (0, 1): 0.0 on the shared scale -2..2
    assert torch.all(sheet[4, :] == 1.0) and torch.all(sheet[:, 4] == 1.0)  # the white gaps
    assert torch.all(sheet[5:9, 10:14] == 1.0)  # (1, 2): no filter 10, left white
    diff, _ = filter_sheet(w, symmetric=True)
    assert torch.all(diff[0:4, 5:9] == 0.5) and torch.all(diff[0:4, 0:4] == 0.0)  # 0 is grey, -max black


# ---- the frozen backbone's speed work must not change the math (benchmarks/frozen_vs_full.py times it) ----
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


@pytest.mark.slow  # a fresh process: this one imported torchvision long ago
def test_torchvision_loads_without_torch_dynamo_which_still_loads_whole_for_torch_compile():
    """vision.py: stand-ins for torch._dynamo while torchvision imports (1.8 s of 3.8 s per process); roi_align's
    one use of it gives the real answer, and torch.compile afterwards gets the real package."""
    import subprocess
    import sys

    script = '''
import sys
import googlenet_study.model
print("dynamo after import:", "torch._dynamo" in sys.modules)
ra = sys.modules["torchvision.ops.roi_align"]
ours = [ra.is_compile_supported(d) for d in ("cpu", "cuda", "meta")]
import torch, torch._dynamo.utils
print("same answer:", ours == [torch._dynamo.utils.is_compile_supported(d) for d in ("cpu", "cuda", "meta")])
print("stand-ins left:", [n for n, m in list(sys.modules.items()) if getattr(m, "__dict__", {}).get("_stand_in") is True])
net = torch.compile(torch.nn.Linear(3, 2), backend="eager")
x = torch.ones(1, 3)
print("compiled:", torch.equal(net(x), net._orig_mod(x)), type(net).__name__)
'''
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split("\n")[:4] == ["dynamo after import: False", "same answer: True", "stand-ins left: []",
                                        "compiled: True OptimizedModule"], p.stdout + p.stderr[-2000:]
