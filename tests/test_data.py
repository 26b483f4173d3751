"""Data: the offline digits split, seeded stratified subsets, on-device batches, CIFAR-10's files."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.utils as tv_utils
from torchvision.datasets import CIFAR10

from googlenet_study import data
from googlenet_study.config import RunConfig, UserError

DIGITS = RunConfig(dataset="digits", model="googlenet", weights="none", image_size=32)


def test_digits_is_the_real_bundled_set_with_a_fixed_stratified_80_20_split():
    d = data.load(DIGITS)
    assert (len(d.train), len(d.test)) == (1437, 360)
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape[1:] == (3, 8, 8)
    assert torch.equal(d.train.images[:, 0], d.train.images[:, 2])  # grey -> 3 equal channels
    per_class = torch.bincount(torch.cat([d.train.labels, d.test.labels]))
    assert per_class.sum() == 1797
    assert ((torch.bincount(d.test.labels) - 0.2 * per_class).abs() < 1).all()  # stratified
    assert data.load(DIGITS).digest == d.digest  # fixed split


def test_subsets_are_stratified_and_chosen_by_the_seed():
    a = data.load(dataclasses.replace(DIGITS, train_size=200, test_size=100))
    b = data.load(dataclasses.replace(DIGITS, train_size=200, test_size=100, seed=1))
    assert (len(a.train), len(a.test)) == (200, 100)
    assert torch.bincount(a.train.labels).min() >= 19  # ~20 per class
    assert a.digest != b.digest and not torch.equal(a.train.images, b.train.images)
    with pytest.raises(UserError, match="train_size"):
        data.load(dataclasses.replace(DIGITS, train_size=5000))


def test_batches_are_upscaled_and_normalised_on_the_device_in_a_seeded_order():
    d = data.load(dataclasses.replace(DIGITS, train_size=50))
    b = data.DeviceBatches(d.train, 16, 32, torch.device("cpu"), shuffle=True)
    order = b.order(seed=0, epoch=1)
    assert torch.equal(order, b.order(0, 1)) and not torch.equal(order, b.order(0, 2))
    batches = list(b.iterate(order))
    assert [len(y) for _, y in batches] == [16, 16, 16, 2] and len(b) == 4
    x, y = batches[0]
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(y, d.train.labels[order[:16]])
    # A black pixel (0) becomes -mean/std of ImageNet's statistics.
    black = b.transform(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    assert black[0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229, rel=1e-5)


def test_fake_has_cifar10s_shapes_the_same_images_every_time_and_subsets_by_the_seed():
    fake = RunConfig(dataset="fake", model="googlenet", weights="none", image_size=32)
    d = data.load(fake)
    assert (len(d.train), len(d.test)) == (50_000, 10_000) and len(d.classes) == 10
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape[1:] == (3, 32, 32)
    assert torch.bincount(d.train.labels).tolist() == [5000] * 10  # balanced, like CIFAR-10
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    assert abs(d.test.images.float().mean().item() - 127.5) < 0.5  # uniform over all 256 values
    assert not torch.equal(d.train.images[:100], d.test.images[:100])
    # One dataset for every run (its digest does not follow the run's seed); subsets do.
    assert data.load(dataclasses.replace(fake, seed=7)).digest == d.digest
    a = data.load(dataclasses.replace(fake, train_size=100, test_size=50))
    b = data.load(dataclasses.replace(fake, train_size=100, test_size=50, seed=1))
    assert (len(a.train), len(a.test)) == (100, 50) and torch.bincount(a.train.labels).tolist() == [10] * 10
    assert len({d.digest, a.digest, b.digest}) == 3
    assert data.load(dataclasses.replace(fake, train_size=100, test_size=50)).digest == a.digest


def fake_cifar(root, n=10):
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return folder


def test_cifar10_batches_become_nchw_uint8(tmp_path, monkeypatch):
    folder = fake_cifar(tmp_path)
    # Our fake files cannot match torchvision's MD5s; everything past the checksum is real.
    monkeypatch.setattr(tv_utils, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    d = data.load(RunConfig(dataset="cifar10", data_dir=str(tmp_path), download=False, weights="none"))
    assert (len(d.train), len(d.test)) == (50, 10)  # 5 train batches + 1 test batch
    raw = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0]
    assert torch.equal(d.train.images[0], torch.from_numpy(raw.reshape(3, 32, 32)))


def test_cifar10_missing_with_download_off_says_where(tmp_path):
    with pytest.raises(UserError) as e:
        data.load(RunConfig(dataset="cifar10", data_dir=str(tmp_path), download=False))
    assert "download is off" in str(e.value) and str(tmp_path / "cifar-10-batches-py") in str(e.value)


def test_cifar10_missing_offline_names_the_archive_url(tmp_path):
    with pytest.raises(UserError) as e:
        data.load(RunConfig(dataset="cifar10", data_dir=str(tmp_path), download=True))
    assert CIFAR10.url in str(e.value) and "downloading it failed" in str(e.value)


def test_truncated_cifar10_batch_fails_torchvisions_checksum_and_is_named(tmp_path):
    folder = fake_cifar(tmp_path)
    with pytest.raises(UserError) as e:
        data.load(RunConfig(dataset="cifar10", data_dir=str(tmp_path), download=True))
    assert str(folder / "data_batch_1") in str(e.value) and "MD5" in str(e.value)


@pytest.mark.parametrize("size", [299, 64, 5])  # upscale (CIFAR -> 299), and an antialiased downscale
def test_normalising_before_the_resize_is_the_same_transform(size):
    """DeviceBatches normalises at the native size, then resizes: the same map as resize-then-normalise."""
    from googlenet_study.data import IMAGENET_MEAN, IMAGENET_STD, DeviceBatches, Split

    u8 = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    b = DeviceBatches(Split(u8, torch.zeros(4, dtype=torch.long)), 4, size, torch.device("cpu"), shuffle=False)
    x = F.interpolate(u8.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=size < 32)
    want = (x / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(b.transform(u8), want, rtol=0, atol=1e-5)
