"""Stage 3: the network. torchvision's Inception-v3 / GoogLeNet with 10-class heads, split into
trunk segments and auxiliary taps so a frozen backbone runs without autograd at all."""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from . import schema
from .config import RunConfig, UserError
from .safe_files import NotRegular, open_regular
from .vision import models

NUM_CLASSES = 10

# The forward pass as torchvision writes it (Inception3._forward, GoogLeNet._forward), cut at
# the points where an auxiliary arm taps the trunk: segment i runs, then arm i (if any) reads it.
# The final segment ends at the pooled, flattened feature vector; `dropout` + `fc` are the head.
SEGMENTS = {
    "inception_v3": (
        ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
         "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
         "Mixed_6e"),                                        # -> N x 768 x 17 x 17 at 299 px
        ("Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"),     # -> N x 2048 x 1 x 1
    ),
    "googlenet": (
        ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
         "inception4a"),                                      # -> N x 512 x 14 x 14 at 224 px
        ("inception4b", "inception4c", "inception4d"),        # -> N x 528 x 14 x 14
        ("inception4e", "maxpool4", "inception5a", "inception5b", "avgpool"),  # -> N x 1024 x 1 x 1
    ),
}
ARMS = {"inception_v3": ("AuxLogits",), "googlenet": ("aux1", "aux2")}
# Last Linear of each arm, replaced for 10 classes (768->10 for Inception-v3; 1024->10 for GoogLeNet).
ARM_HEADS = {"inception_v3": ("AuxLogits.fc",), "googlenet": ("aux1.fc2", "aux2.fc2")}
# What Network.features gives per image (N first): the pooled trunk output, and each arm's tap (_arm_tap),
# whatever the image size (the arms pool adaptively). feature_cache.py sizes its features with it.
FEATURE_SHAPES = {"inception_v3": ((2048,), ((768,),)), "googlenet": ((1024,), ((512, 4, 4), (528, 4, 4)))}
FIRST_CONV = {"inception_v3": "Conv2d_1a_3x3.conv", "googlenet": "conv1.conv"}
IMAGENET_WEIGHTS = {"inception_v3": models.Inception_V3_Weights.IMAGENET1K_V1,
                    "googlenet": models.GoogLeNet_Weights.IMAGENET1K_V1}
# torchvision's GoogLeNet checkpoint carries aux arms that were never trained (torchvision warns),
# so they train in full even with a frozen backbone; Inception-v3's arm is pretrained.
UNTRAINED_ARMS = {"inception_v3": False, "googlenet": True}


@dataclass(frozen=True)
class WeightsInfo:
    source: str             # imagenet | none | the file's path
    url: str | None         # torchvision's download URL (imagenet)
    file: str | None        # the file the state dict came from
    sha256: str | None      # of that file
    enum: str | None        # e.g. Inception_V3_Weights.IMAGENET1K_V1


class Network(nn.Module):
    """A torchvision model plus the knowledge of where its trunk ends and its heads begin."""

    def __init__(self, net: nn.Module, arch: str, frozen: bool, fold_bn: bool = True) -> None:
        super().__init__()
        self.net, self.arch, self.frozen = net, arch, frozen
        self.arms = [a for a in ARMS[arch] if getattr(net, a, None) is not None]
        trainable = {"fc"} | set(ARM_HEADS[arch])
        if UNTRAINED_ARMS[arch]:
            trainable |= set(self.arms)
        for name, p in net.named_parameters():
            p.requires_grad_(not frozen or any(name == t or name.startswith(t + ".") for t in trainable))
        # Frozen conv+BN blocks, run as one conv (see fold_frozen_bn); [] when nothing is frozen.
        self.folded = [m for m in net.modules() if _is_conv_bn(m)
                       and not any(p.requires_grad for p in m.parameters())] if frozen and fold_bn else []
        for m in self.folded:
            m.forward = functools.partial(_folded_forward, m)
        self.fold_frozen_bn()

    def train(self, mode: bool = True) -> "Network":
        super().train(mode)
        if self.frozen and mode:
            # Frozen trunk: BatchNorm keeps its ImageNet running statistics, and its frozen
            # parts of the arms too. Only modules owning trainable parameters train.
            for m in self.net.modules():
                own = list(m.parameters(recurse=False))
                if own and not any(p.requires_grad for p in own):
                    m.eval()
        self.fold_frozen_bn()  # after a load_state_dict, .to() or anything else that changed weights
        return self

    @torch.no_grad()
    def fold_frozen_bn(self) -> None:
        """Recompute each frozen block's folded conv. A frozen BatchNorm always runs in eval mode,
        i.e. as the per-channel affine map y = (x - mean) / sqrt(var + eps) * gamma + beta, so
        bn(conv(x)) is one conv with weight W * s and bias beta - mean * s, s = gamma / sqrt(var + eps):
        one op and one pass over the activations fewer per block. Kept as non-persistent buffers, so
        the state dict, the parameter table and the filter images are those of the unfolded model.
        A block whose tensors are where and as they were at its last fold (same storage, no in-place write
        since: torch's version counter) is skipped: a run on cached features never runs the trunk again."""
        for m in self.folded:
            source = (m.conv.weight, m.conv.bias, m.bn.running_mean, m.bn.running_var, m.bn.weight, m.bn.bias)
            seen = tuple((t.data_ptr(), t._version) for t in source if t is not None)
            if getattr(m, "_folded_from", None) == seen:
                continue
            m._folded_from = seen
            w, b = fuse_conv_bn_weights(m.conv.weight, m.conv.bias, m.bn.running_mean, m.bn.running_var,
                                        m.bn.eps, m.bn.weight, m.bn.bias)
            fmt = torch.channels_last if m.conv.weight.is_contiguous(memory_format=torch.channels_last) \
                and not m.conv.weight.is_contiguous() else torch.contiguous_format
            m.register_buffer("folded_weight", w.detach().contiguous(memory_format=fmt), persistent=False)
            m.register_buffer("folded_bias", b.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: (N, 3, S, S) ImageNet-normalised -> (main logits (N, 10), aux logits [(N, 10), ...])."""
        return self.heads(self.features(x, taps=self.training))

    def features(self, x: torch.Tensor, taps: bool) -> Features:
        """The trunk: the pooled output and, with `taps`, each arm's input to its trainable part. With a
        frozen backbone this is a fixed function of the image (what feature_cache.py stores)."""
        net, out = self.net, []
        trunk_grad = torch.is_grad_enabled() and not self.frozen
        with torch.set_grad_enabled(trunk_grad):
            x = net._transform_input(x)
        for i, segment in enumerate(SEGMENTS[self.arch]):
            with torch.set_grad_enabled(trunk_grad):  # frozen: no graph through the trunk at all
                for name in segment:
                    x = getattr(net, name)(x)
            if taps and i < len(self.arms):
                out.append(_arm_tap(self.arch, getattr(net, self.arms[i]), x))
        return Features(torch.flatten(x, 1), tuple(out))

    def heads(self, f: Features) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """What trains on the features: the arms' trainable parts (training only) and the main head. The
        arms run first, as in torchvision's forward, so dropout draws its masks in the same order."""
        net = self.net
        arms = zip(self.arms, f.taps, strict=True) if self.training else ()
        aux = [_arm_tail(self.arch, getattr(net, a), t) for a, t in arms]
        return net.fc(net.dropout(f.pooled)), aux


@dataclass(frozen=True)
class Features:
    """The inputs of a network's trainable parts, per image (N first). At the lecture's sizes:"""
    pooled: torch.Tensor            # (N, 2048) Inception-v3, (N, 1024) GoogLeNet: the pooled trunk output
    taps: tuple[torch.Tensor, ...]  # per arm: (N, 768) Inception-v3; (N, 512|528, 4, 4) GoogLeNet; () in eval

    def __len__(self) -> int:
        return len(self.pooled)

    def index(self, idx: torch.Tensor) -> Features:
        """The images at `idx` (a batch, in that order)."""
        return Features(self.pooled[idx], tuple(t[idx] for t in self.taps))


# torchvision's InceptionAux.forward (googlenet.py, inception.py) cut where its trainable part begins
# when the backbone is frozen: GoogLeNet's arms are untrained and train whole after their first pooling;
# Inception-v3's pretrained arm trains only its last Linear. tests/test_model.py checks tap + tail = arm.
def _arm_tap(arch: str, arm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if arch == "googlenet":
        return F.adaptive_avg_pool2d(x, (4, 4))                # N x 512|528 x 14 x 14 -> N x 512|528 x 4 x 4
    x = F.avg_pool2d(x, kernel_size=5, stride=3)               # N x 768 x 17 x 17 -> N x 768 x 5 x 5
    x = arm.conv1(arm.conv0(x))                                # -> N x 128 x 5 x 5 -> N x 768 x 1 x 1
    return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)  # -> N x 768


def _arm_tail(arch: str, arm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if arch == "googlenet":
        x = F.relu(arm.fc1(torch.flatten(arm.conv(x), 1)), inplace=True)  # N x 128 x 4 x 4 -> N x 1024
        return arm.fc2(arm.dropout(x))
    return arm.fc(x)


def _is_conv_bn(m: nn.Module) -> bool:
    """torchvision's BasicConv2d (GoogLeNet and Inception-v3 alike): relu(bn(conv(x)))."""
    return isinstance(getattr(m, "conv", None), nn.Conv2d) and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)


def _folded_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """BasicConv2d.forward with its eval-mode BatchNorm folded into the conv."""
    return F.relu(m.conv._conv_forward(x, m.folded_weight, m.folded_bias), inplace=True)


def build(cfg: RunConfig, fold_bn: bool = True) -> tuple[Network, WeightsInfo]:
    """The configured network with 10-class heads, weights loaded, arms dropped when aux_weight=0.
    fold_bn=False keeps a frozen trunk's BatchNorm as separate ops (for benchmarks and tests)."""
    ctor = getattr(models, cfg.model)
    pretrained = cfg.weights != "none"
    # Build with every arm and ImageNet's 1000 classes so any torchvision checkpoint fits;
    # transform_input follows torchvision's builders (True with pretrained weights).
    kwargs = dict(weights=None, aux_logits=True, num_classes=1000, transform_input=pretrained,
                  init_weights=not pretrained)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GoogLeNet's init_weights scipy/perf notice
        net = ctor(**kwargs)
    info = WeightsInfo("none", None, None, None, None)
    if cfg.weights == "imagenet":
        state, info = _imagenet_state(cfg.model)
        _load(net, state, info.file or "")
    elif pretrained:
        state, info = _file_state(cfg.weights)
        if not _try_load(net, state):
            replace_heads(net, cfg.model)
            _load(net, state, cfg.weights)
    replace_heads(net, cfg.model)
    if not cfg.has_aux:  # the arms leave the model, and their cost leaves the wall time
        for arm in ARMS[cfg.model]:
            setattr(net, arm, None)
        net.aux_logits = False
    return Network(net, cfg.model, frozen=cfg.backbone == "frozen", fold_bn=fold_bn), info


def replace_heads(net: nn.Module, arch: str) -> None:
    """fc and the last Linear of every arm -> NUM_CLASSES outputs (already done: no-op)."""
    for path in ("fc",) + ARM_HEADS[arch]:
        parent_name, _, attr = path.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        old = getattr(parent, attr, None)
        if isinstance(old, nn.Linear) and old.out_features != NUM_CLASSES:
            setattr(parent, attr, nn.Linear(old.in_features, NUM_CLASSES))


def imagenet_cache_path(arch: str) -> Path:
    url = IMAGENET_WEIGHTS[arch].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _imagenet_state(arch: str) -> tuple[dict, WeightsInfo]:
    w = IMAGENET_WEIGHTS[arch]
    path = imagenet_cache_path(arch)
    try:
        # torchvision's own path: torch.hub cache, download on a miss, hash-checked on download.
        state = w.get_state_dict(progress=False, check_hash=True)
    except OSError as e:  # URLError, socket errors: offline with nothing cached
        raise UserError(f"weights: ImageNet weights for {arch} are not cached and downloading failed "
                        f"({str(getattr(e, 'reason', e))[:80]}); download {w.url} and place it at "
                        f"{path}") from None
    except Exception:  # a truncated/corrupt file in the cache
        raise UserError(f"weights: {path} is not a readable state dict (corrupt download?); "
                        f"delete it, or replace it with {w.url}") from None
    return state, WeightsInfo("imagenet", w.url, str(path), _sha256(path), f"{type(w).__name__}.{w.name}")


def _starts_with(p: Path, magic: bytes) -> bool:
    with open_regular(p) as f:
        return f.read(len(magic)) == magic


def _file_state(path: str) -> tuple[dict, WeightsInfo]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights: {p} does not exist; allowed: imagenet | none | a state-dict file")
    try:
        with warnings.catch_warnings():  # a pickle's "Detected pickle protocol" notice: the line below says it
            warnings.simplefilter("ignore")
            with open_regular(p) as f:  # a FIFO is refused, not waited on
                state = torch.load(f, map_location="cpu", weights_only=True)  # data only: nothing in it runs
    except NotRegular as e:
        raise UserError(f"weights: {e}; allowed: imagenet | none | a state-dict file") from None
    except pickle.UnpicklingError as e:
        # A pickle (torch.save of objects, or pickle.dumps: protocol >= 2 starts with PROTO, 0x80) is refused by
        # the weights-only unpickler; any other bytes are merely unreadable (a corrupt or foreign file).
        if "unsupported GLOBAL" in str(e) or _starts_with(p, b"\x80"):
            raise UserError(f"weights: {p} holds objects other than tensors and plain values (a pickle), which "
                            f"are never loaded; give a state dict saved with torch.save") from None
        raise UserError(f"weights: {p} is not a readable PyTorch state dict") from None
    except Exception:
        raise UserError(f"weights: {p} is not a readable PyTorch state dict") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a googlenet-study checkpoint
    if not isinstance(state, dict):
        raise UserError(f"weights: {p} holds a {type(state).__name__}, not a state dict")
    return state, WeightsInfo("file", None, str(p.resolve()), _sha256(p), None)


def _try_load(net: nn.Module, state: dict) -> bool:
    try:
        net.load_state_dict(state, strict=True)
        return True
    except (RuntimeError, KeyError, TypeError):
        return False


def _load(net: nn.Module, state: dict, source: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).splitlines()[1:2] or [str(e)[:100]]
        raise UserError(f"weights: {source} does not fit {type(net).__name__}: {first[0].strip()[:160]}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def speed_tags(net: Network) -> dict[str, str]:
    """How a frozen trunk was run, as MLflow tags (the math is the same; the ops are not)."""
    if not net.frozen:
        return {}
    return {schema.FROZEN_TRUNK_TAG: "no autograd graph; BatchNorm in eval mode",
            schema.FOLDED_CONVS_TAG: str(len(net.folded))}  # conv+BN blocks run as one conv


def parameter_table(net: Network) -> list[dict]:
    """The lecture's parameter listing: one row per tensor."""
    return [{"name": n, "shape": "x".join(map(str, p.shape)), "count": p.numel(), "trainable": p.requires_grad}
            for n, p in net.net.named_parameters()]


def count_params(net: nn.Module) -> tuple[int, int]:
    ps = list(net.parameters())
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


def first_conv_weight(net: Network) -> torch.Tensor:
    """A CPU copy of the first conv's filters: (32, 3, 3, 3) for Inception-v3, (64, 3, 7, 7) GoogLeNet."""
    return net.net.get_submodule(FIRST_CONV[net.arch]).weight.detach().float().cpu().clone()
