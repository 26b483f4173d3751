"""Between model and engine: a frozen run's fixed features, computed once, shared, and trained on.

With backbone=frozen the trunk is a fixed function (BatchNorm in eval mode, no dropout before the heads)
and the input pipeline has no random augmentation, so what each trainable part reads is fixed per image:
`model.Network.features` (the pooled trunk output, and each arm's input to its trainable part). `obtain`
computes it once for both splits; `FeatureBatches` serves it in the run's data order, and `engine.fit`,
handed those batches, trains `model.Network.heads` on it: dropout and everything trainable still run live,
every step.

What is guaranteed, and how:
- Keyed by everything that determines the features (`key`): model, a digest of the fixed weights, image
  size, the dataset's digest (which covers the subset), amp, channels_last, device type, the arms, torch.
  The batch size is not in it: every frozen run of a study shares one cache (the results agree to float
  rounding; docs/feature-cache.md).
- Never half-read, never trusted: one file per key in <checkpoint dir>/feature-cache/, written to a temp
  file made by mkstemp, fsynced and renamed over (safe_files.write_atomically: a planted link is never
  written through); on load it must be a regular file (a FIFO is never waited on), its size the header's
  and every tensor must match its CRC-32, else it is rebuilt and replaced, and the run's warning tag says so.
- Built once: a builder holds an exclusive flock on <file>.lock and checks again under it, so a second
  worker waits and then reads what the first wrote; the kernel drops the lock of a killed process. The lock
  is opened O_NOFOLLOW (safe_files.open_lock): a link planted there is refused, the run builds unlocked.
- An honest clock: the build's seconds are stored in the file and charged to every run that uses it
  (the training FeatureBatches' charge_s: engine.fit adds them to epoch 1's train_time_s), so a run's
  times are those of a run on its own.
- Never a crash for want of room: features that do not fit in the device's free memory beside a step
  (budget.py) leave the run uncached with a warning tag; a file that cannot be written is used unsaved.

File format 1: MAGIC, the header's length (8 bytes, little-endian), the header (JSON: key, build_s, and
name, dtype, shape, nbytes, crc32 of each tensor), then the tensors' bytes in the header's order."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from . import budget, model, schema
from .config import RunConfig
from .data import Dataset, DeviceBatches, Split, epoch_order
from .device import autocast, place, sync
from .safe_files import NotRegular, open_lock, open_regular, write_atomically
from .model import Features, Network

FORMAT = 1
MAGIC = b"GSFEAT01"
FOLDER = "feature-cache"  # under the checkpoint dir
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_HEADER = 1 << 20      # bytes: a longer one is not a header of ours


@dataclass(frozen=True)
class Cache:
    """Both splits' features on the run's device, in the splits' order, and how this process got them."""
    train: Features   # with the arms' taps (training runs the arms)
    test: Features    # pooled only: evaluation reads the main head
    build_s: float    # s: computing both splits when it was built (charged to every run using it)
    status: str       # built | reused
    path: Path
    warning: str | None = None  # a file found corrupt and rebuilt, or one that could not be saved

    def tags(self) -> dict[str, str]:
        tags = {schema.FEATURE_CACHE_TAG: self.status, schema.FEATURE_CACHE_FILE_TAG: str(self.path)}
        return {**tags, schema.FEATURE_CACHE_WARNING_TAG: self.warning} if self.warning else tags

    def batches(self, cfg: RunConfig, data: Dataset, device: torch.device) -> tuple[FeatureBatches, FeatureBatches]:
        """The training and the test batches for engine.fit, as data.batches makes them of images; the
        training batches carry the build's seconds, charged to the run's epoch 1."""
        return (FeatureBatches(self.train, data.train, cfg.batch_size, device, True, cfg.channels_last,
                               charge_s=self.build_s),
                FeatureBatches(self.test, data.test, cfg.eval_batch_size, device, False, cfg.channels_last))


class FeatureBatches:
    """DeviceBatches' interface (engine.Batches) over cached features: (Features, labels) batches, in the
    same order; the model's heads read them."""
    on_features = True

    def __init__(self, features: Features, split: Split, batch_size: int, device: torch.device, shuffle: bool,
                 channels_last: bool, charge_s: float = 0.0) -> None:
        self.split, self.batch_size, self.device, self.shuffle = features, batch_size, device, shuffle
        self.charge_s = charge_s  # s: the cache's build, when it is charged to this run (engine.Batches)
        self.labels = split.labels.to(device)
        # A live trunk hands the arms channels_last maps in that format: the same kernels run on them.
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return (len(self.split) + self.batch_size - 1) // self.batch_size

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        return epoch_order(len(self.split), self.shuffle, seed, epoch)

    def iterate(self, order: torch.Tensor):
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size].to(self.device)
            f = self.split.index(idx)
            taps = tuple(t.contiguous(memory_format=self.fmt) if t.dim() == 4 else t for t in f.taps)
            yield Features(f.pooled, taps), self.labels[idx]


def wanted(cfg: RunConfig) -> bool:
    """feature_cache=auto caches a frozen trunk; a trained one changes every step."""
    return cfg.feature_cache == "auto" and cfg.backbone == "frozen"


def obtain(cfg: RunConfig, net: Network, data: Dataset, root: str | Path,
           available: int | None = None) -> tuple[Cache | None, dict[str, str]]:
    """The features of a resolved config that wants them (None otherwise, or when they do not fit in
    `available` bytes, default the device's free memory), and the MLflow tags saying how it went."""
    if not wanted(cfg):
        return None, {schema.FEATURE_CACHE_TAG: "off"}
    sig = key(cfg, net, data)
    path = Path(root) / FOLDER / f"{cfg.model}-{cfg.image_size}px-{_sha(json.dumps(sig, sort_keys=True))}.feat"
    device = place(cfg, net)
    need = nbytes(cfg, data)
    room = (budget.available_bytes(cfg.device) if available is None else available) - \
        max(s.need for s in budget.steps(cfg))  # the build runs evaluation-sized steps beside the features
    if need > room:
        return None, {schema.FEATURE_CACHE_TAG: "off", schema.FEATURE_CACHE_WARNING_TAG:
                      f"the features need {budget.human(need)} of {device.type} memory, {budget.human(max(room, 0))} "
                      f"is free beside a step; ran without them, as feature_cache=off does"}
    cache, _ = _load(path, sig, data, device)  # without the lock: a file there is a whole one (renamed)
    if cache is None:
        with _locked(path):
            cache, problem = _load(path, sig, data, device)  # a worker may have built it while we waited
            if cache is None:
                cache = _build(cfg, net, data, device, path, sig, problem)
    return cache, cache.tags()


def key(cfg: RunConfig, net: Network, data: Dataset) -> dict:
    """Everything the features depend on (the eval batch size only to float rounding: left out, shared)."""
    return {"format": FORMAT, "model": cfg.model, "fixed_weights_sha256": fixed_weights_digest(net),
            "transform_input": bool(net.net.transform_input), "image_size": cfg.image_size,
            "dataset": cfg.dataset, "dataset_digest": data.digest, "train_images": len(data.train),
            "test_images": len(data.test), "amp": cfg.amp, "channels_last": cfg.channels_last,
            "device": torch.device(cfg.device).type, "arms": list(net.arms), "torch": torch.__version__}


def fixed_weights_digest(net: Network) -> str:
    """sha256 of every tensor of the modules that do not train (the BN-folded convs included): the
    weights the features are a function of, whatever file or seed they came from."""
    h = hashlib.sha256()
    for name, m in net.net.named_modules():
        own = list(m.named_parameters(recurse=False))
        if any(p.requires_grad for _, p in own):
            continue
        for n, t in [*own, *m.named_buffers(recurse=False)]:
            h.update(f"{name}.{n}".encode())
            h.update(_raw(t).numpy())
    return h.hexdigest()


def nbytes(cfg: RunConfig, data: Dataset) -> int:
    """Bytes both splits' features take: model.FEATURE_SHAPES per image, fp32, or half precision under amp
    (autocast's convolutions and the pooling after them give bfloat16 / float16)."""
    pooled_shape, tap_shapes = model.FEATURE_SHAPES[cfg.model]
    pooled = math.prod(pooled_shape)
    per_image = pooled + sum(math.prod(s) for s in tap_shapes) * cfg.has_aux  # aux_weight 0: no arms
    return (4 if cfg.amp == "none" else 2) * (len(data.train) * per_image + len(data.test) * pooled)


@torch.no_grad()
def _compute(cfg: RunConfig, net: Network, split: Split, taps: bool, device: torch.device) -> Features:
    """net.features of every image of `split`, in order, in evaluation-sized batches, as the run computes them."""
    batches = DeviceBatches(split, cfg.eval_batch_size, cfg.image_size, device, False, cfg.channels_last)
    net.eval()  # as in training: a frozen trunk's BatchNorm is in eval mode there too; dropout is in the heads
    out: Features | None = None

    def rows_like(t: torch.Tensor) -> torch.Tensor:  # preallocated: no second copy of gigabytes of features
        return torch.empty((len(split), *t.shape[1:]), dtype=t.dtype, device=device)
    for i, (x, _) in enumerate(batches.iterate(batches.order(0, 0))):
        with autocast(cfg, device):
            f = net.features(x, taps)
        if out is None:
            out = Features(rows_like(f.pooled), tuple(rows_like(t) for t in f.taps))
        rows = slice(i * batches.batch_size, i * batches.batch_size + len(x))
        for dst, src in zip((out.pooled, *out.taps), (f.pooled, *f.taps), strict=True):
            dst[rows] = src
    return out


def _build(cfg: RunConfig, net: Network, data: Dataset, device: torch.device, path: Path, sig: dict,
           problem: str | None) -> Cache:
    sync(device)
    t0 = time.perf_counter()
    train, test = _compute(cfg, net, data.train, True, device), _compute(cfg, net, data.test, False, device)
    sync(device)
    build_s = time.perf_counter() - t0
    warning = f"{problem}; rebuilt" if problem else None
    try:
        _save(path, sig, build_s, {"train.pooled": train.pooled, **{f"train.tap{i}": t for i, t in
                                   enumerate(train.taps)}, "test.pooled": test.pooled})
    except OSError as e:  # a full disk: this run still has its features, the next builds its own
        warning = f"{path} could not be written ({e.strerror or e}); used unsaved"
    return Cache(train, test, build_s, "built", path, warning)


def _save(path: Path, sig: dict, build_s: float, tensors: dict[str, torch.Tensor]) -> None:
    raw = {name: _raw(t).numpy() for name, t in tensors.items()}
    header = json.dumps({"format": FORMAT, "key": sig, "build_s": build_s, "tensors": [
        {"name": n, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "nbytes": raw[n].nbytes,
         "crc32": zlib.crc32(raw[n])} for n, t in tensors.items()]}).encode()

    def write(f) -> None:
        f.write(MAGIC + len(header).to_bytes(8, "little") + header)
        for b in raw.values():
            f.write(memoryview(b))
    write_atomically(path, write)


def _load(path: Path, sig: dict, data: Dataset, device: torch.device) -> tuple[Cache | None, str | None]:
    """The cache at `path` if it is whole and for `sig`; else None and what is wrong (None: no file).
    Read as bytes and a JSON header only: the folder may be shared, and nothing in a file is unpickled or run."""
    try:
        with open_regular(path) as f:  # a FIFO or a folder there: NotRegular, rebuilt and replaced
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a feature cache")
            n = int.from_bytes(f.read(8), "little")
            if n > MAX_HEADER:
                raise ValueError("not a feature cache")
            header = json.loads(f.read(n))
            size = len(MAGIC) + 8 + n + sum(int(e["nbytes"]) for e in header["tensors"])
            if os.fstat(f.fileno()).st_size != size:  # truncated, or something appended
                raise ValueError(f"{os.fstat(f.fileno()).st_size} bytes, its header says {size}")
            if header["key"] != sig:
                raise ValueError("written for other inputs")
            t = {e["name"]: _read(f, e, device) for e in header["tensors"]}
    except FileNotFoundError:
        return None, None
    except NotRegular as e:
        return None, f"{str(e)[:300]}"
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:  # JSONDecodeError is a ValueError
        return None, f"{path} was corrupt ({str(e)[:200]})"
    taps = tuple(t[k] for k in sorted(t) if k.startswith("train.tap"))
    train, test = Features(t["train.pooled"], taps), Features(t["test.pooled"], ())
    if (len(train), len(test), len(taps)) != (len(data.train), len(data.test), len(sig["arms"])) or \
            any(len(x) != len(data.train) for x in taps):
        return None, f"{path} was corrupt (shapes that do not fit the splits)"
    return Cache(train, test, float(header["build_s"]), "reused", path), None


def _read(f, entry: dict, device: torch.device) -> torch.Tensor:
    buf = torch.empty(int(entry["nbytes"]), dtype=torch.uint8)
    if f.readinto(memoryview(buf.numpy())) != buf.numel():
        raise ValueError(f"{entry['name']} is cut short")
    if zlib.crc32(buf.numpy()) != entry["crc32"]:
        raise ValueError(f"{entry['name']} fails its CRC-32 check")
    return buf.view(DTYPES[entry["dtype"]]).view(entry["shape"]).to(device)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive flock on <path>.lock for the block: one builder per cache across processes."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open_lock(path.with_name(path.name + ".lock"))
    except OSError:  # a folder this process cannot write, a link or FIFO planted as the lock: it builds for
        #              itself, unlocked (at worst a second builder duplicates the work, never half a file)
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)  # blocks while another process builds; released when f closes
        except OSError:  # a file system without locks: a second builder may duplicate the work, never half a file
            pass
        yield


def _raw(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes as a flat uint8 CPU tensor (any dtype, bfloat16 included)."""
    return t.detach().contiguous().cpu().reshape(-1).view(torch.uint8)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
