"""Stage 2: the data. Images live in memory as uint8 (N, 3, H, W); batches are upscaled and
normalised on the run's device, a batch at a time (per-image PIL resizing at 299 px
starves a GPU: see benchmarks/input_pipeline.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import RunConfig, UserError

# torchvision's ImageNet statistics: the pretrained weights expect inputs normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FAKE_SEED = 0                 # dataset=fake: its images and labels are this generator seed's
# Images per split (train, test) of each dataset, before train_size/test_size subset them (budget.py: a
# batch is at most a split).
SPLIT_SIZES = {"cifar10": (50_000, 10_000), "digits": (1_437, 360), "fake": (50_000, 10_000)}


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 3, h, w) uint8, at the dataset's native size
    labels: torch.Tensor  # (N,) int64 in [0, 10)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    digest: str  # sha256 prefix of the exact images and labels used (after subsetting)
    classes: tuple[str, ...]


def load(cfg: RunConfig) -> Dataset:
    """The configured dataset, subset as asked, with a digest for provenance."""
    if cfg.dataset == "digits":
        train, test, classes = _digits()
    elif cfg.dataset == "fake":
        train, test, classes = _fake()
    else:
        train, test, classes = _cifar10(Path(cfg.data_dir), cfg.download)
    train = _stratified_subset(train, cfg.train_size, cfg.seed, "train_size")
    test = _stratified_subset(test, cfg.test_size, cfg.seed + 1, "test_size")
    h = hashlib.sha256()
    for s in (train, test):
        h.update(s.images.numpy().tobytes())
        h.update(s.labels.numpy().tobytes())
    return Dataset(cfg.dataset, train, test, h.hexdigest()[:16], classes)


def _digits() -> tuple[Split, Split, tuple[str, ...]]:
    # scikit-learn ships these 1,797 8x8 images (values 0..16) inside the package: no network.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)       # (N, 8, 8) grey
    images = np.repeat(images[:, None], 3, axis=1)                        # (N, 3, 8, 8)
    idx_train, idx_test = train_test_split(np.arange(len(images)), test_size=0.2,
                                           stratify=d.target, random_state=0)  # fixed split
    def split(idx: np.ndarray) -> Split:
        return Split(torch.from_numpy(images[idx]).contiguous(), torch.from_numpy(d.target[idx]).long())
    return split(idx_train), split(idx_test), tuple(str(i) for i in range(10))


def _fake() -> tuple[Split, Split, tuple[str, ...]]:
    """CIFAR-10's shapes with uniformly random pixels: the lecture's epoch size on any machine, no
    download. Accuracy on it means nothing (chance, 0.10); it exists to time epochs end to end."""
    # A fixed seed, as torchvision's FakeData has one (random_offset), not the run's: one dataset for
    # every run, like CIFAR-10, so its digest (and the feature cache keyed by it) is shared across a
    # study's seeds; the run's seed still picks train_size/test_size subsets and the data order.
    g = torch.Generator().manual_seed(FAKE_SEED)

    def split(n: int) -> Split:
        # Full-range int64 draws viewed as bytes: 8 uniform pixels per draw (randint on uint8 draws one
        # per pixel and takes 4x longer: 0.9 s for both splits' 184 MB here).
        words = torch.empty(n * 3 * 32 * 32 // 8, dtype=torch.int64).random_(-2**63, None, generator=g)
        images = words.view(torch.uint8).view(n, 3, 32, 32)
        labels = torch.arange(n) % 10  # balanced like CIFAR-10: n/10 per class, shuffled
        return Split(images, labels[torch.randperm(n, generator=g)])
    train_n, test_n = SPLIT_SIZES["fake"]  # CIFAR-10's, of 32x32x3 images in 10 classes
    return split(train_n), split(test_n), tuple(f"class{i}" for i in range(10))


def _cifar10(root: Path, download: bool) -> tuple[Split, Split, tuple[str, ...]]:
    from .vision import torchvision

    CIFAR10, check_integrity = torchvision.datasets.CIFAR10, torchvision.datasets.utils.check_integrity

    folder = root / CIFAR10.base_folder
    # Name the exact file that fails torchvision's MD5 check: never re-download over it silently.
    for name, md5 in CIFAR10.train_list + CIFAR10.test_list:
        if (folder / name).exists() and not check_integrity(str(folder / name), md5):
            raise UserError(f"dataset: {folder / name} fails torchvision's MD5 check (truncated or corrupt); "
                            f"delete {folder} and run again with download=true")
    archive = CIFAR10.url.rsplit("/", 1)[-1]
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted."
        raise UserError(f"dataset: CIFAR-10 is not under {folder} and download is off; set download=true, "
                        f"or extract {archive} ({CIFAR10.url}) into {root}/") from None
    except OSError as e:  # URLError and socket errors derive from OSError
        raise UserError(f"dataset: CIFAR-10 is not under {folder} and downloading it failed ({_reason(e)}); "
                        f"put {archive} from {CIFAR10.url} into {root}/ and run again") from None

    def split(ds) -> Split:  # ds.data: (N, 32, 32, 3) uint8, HWC
        return Split(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                     torch.tensor(ds.targets, dtype=torch.long))
    return split(train), split(test), tuple(train.classes)


def _reason(e: BaseException) -> str:
    return str(getattr(e, "reason", None) or e).splitlines()[0][:120]


def _stratified_subset(s: Split, size: int | None, seed: int, field: str) -> Split:
    """`size` images with the class proportions of `s`, chosen by `seed`; all when None."""
    if size is None or size >= len(s):
        if size is not None and size > len(s):
            raise UserError(f"{field}: {size} is more than the {len(s)} images in that split")
        return s
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(s)), train_size=size, stratify=s.labels.numpy(),
                              random_state=seed)
    idx = torch.from_numpy(np.sort(idx))
    return Split(s.images[idx].contiguous(), s.labels[idx].contiguous())


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's permutation of n images: a function of (seed, epoch) only, so a resumed run sees the same
    order, and a run on cached features (feature_cache.FeatureBatches) the order of one on images."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batches(cfg: RunConfig, data: Dataset, device: torch.device) -> tuple[DeviceBatches, DeviceBatches]:
    """The training (shuffled per epoch) and the test batches of a run, on `device`, for engine.fit."""
    return (DeviceBatches(data.train, cfg.batch_size, cfg.image_size, device, True, cfg.channels_last),
            DeviceBatches(data.test, cfg.eval_batch_size, cfg.image_size, device, False, cfg.channels_last))


class DeviceBatches:
    """Yields (x, y) batches: uint8 on the host -> device -> float, upscaled and normalised there."""
    on_features = False  # images: the whole network reads them (engine.Batches)
    charge_s = 0.0       # s charged to epoch 1 for making them: none

    def __init__(self, split: Split, batch_size: int, image_size: int, device: torch.device,
                 shuffle: bool, channels_last: bool = False) -> None:
        self.split, self.batch_size, self.image_size = split, batch_size, image_size
        self.device, self.shuffle, self.channels_last = device, shuffle, channels_last
        pin = device.type == "cuda"
        # Pinned host memory lets the copy overlap compute (non_blocking) on CUDA.
        self.images = split.images.pin_memory() if pin else split.images
        self.labels = split.labels.pin_memory() if pin else split.labels
        # Normalisation as one multiply-add on 0..255 values: x * scale + shift = (x / 255 - mean) / std.
        self.scale = 1.0 / (torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0)
        self.shift = -torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) / torch.tensor(
            IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return (len(self.split) + self.batch_size - 1) // self.batch_size

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        return epoch_order(len(self.split), self.shuffle, seed, epoch)

    def iterate(self, order: torch.Tensor):
        nb = self.device.type == "cuda"
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx].to(self.device, non_blocking=nb)
            y = self.labels[idx].to(self.device, non_blocking=nb)
            yield self.transform(x), y

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, h, w) -> float32 (B, 3, S, S): ImageNet normalisation, then bilinear resize.

        Normalising first is the same map (a per-channel affine commutes with bilinear interpolation,
        whose weights sum to 1; equal up to float rounding, ~1e-6) on h*w pixels instead of S*S:
        at 32 -> 299 px that is 87x fewer, and it halves the transform's time on CPU."""
        x = x.float().mul_(self.scale).add_(self.shift)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.image_size)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
