"""Images/s of the on-device batched upscale + normalise against the lecture's per-image PIL pipeline.

Lecture: torchvision `Resize(299)` + `ToTensor()` + `Normalize(ImageNet)` per image, in a DataLoader
with worker processes. Ours: `DeviceBatches` -- uint8 batches indexed from memory, moved to the run's
device, upscaled bilinearly and normalised there a batch at a time. Both turn CIFAR-10-shaped uint8
images (32x32x3; random content -- the cost does not depend on it, and no download is needed) into
float batches of (B, 3, 299, 299), shuffled; runs alternate. Then one real training run (the engine,
GoogLeNet) reports how long its loop waited for input: data_time_s / train_time_s (goal < 5 %).

    .venv/bin/python benchmarks/input_pipeline.py                  # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/input_pipeline.py --images 64 --repeats 1 --real-image-size 32
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from _common import base_config, fit, machine, median, table
from googlenet_study.data import IMAGENET_MEAN, IMAGENET_STD, DeviceBatches, Split

GOAL_SPEEDUP, GOAL_DATA_SHARE = 5.0, 0.05


class PilImages(torch.utils.data.Dataset):
    """The lecture's pipeline: one PIL image at a time through the transforms."""

    def __init__(self, hwc: np.ndarray, labels: np.ndarray, size: int) -> None:
        self.hwc, self.labels = hwc, labels
        self.tf = transforms.Compose([transforms.Resize(size), transforms.ToTensor(),
                                      transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.tf(Image.fromarray(self.hwc[i])), int(self.labels[i])


def time_pil(ds: PilImages, batch: int, workers: int) -> tuple[float, float]:
    """(seconds from the first batch to the last, seconds including worker start-up)."""
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    for _ in it:
        pass
    t2 = time.perf_counter()
    return t2 - t1, t2 - t0


def time_device(split: Split, batch: int, size: int, device: torch.device) -> tuple[float, float]:
    b = DeviceBatches(split, batch, size, device, shuffle=True)
    t0 = time.perf_counter()
    it = b.iterate(b.order(0, 1))
    next(it)
    t1 = time.perf_counter()
    for x, _ in it:
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t2 = time.perf_counter()
    return t2 - t1, t2 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024, help="images per pass")
    ap.add_argument("--size", type=int, default=299, help="output px (the lecture's 299)")
    ap.add_argument("--batch-size", type=int, default=32, help="the lecture's 32")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (default: cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--real-image-size", type=int, default=299, help="px for the real run (GoogLeNet)")
    ap.add_argument("--real-train-size", type=int, default=64)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(a.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=a.images)
    split = Split(torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long())
    pil = PilImages(hwc, labels, a.size)
    device = torch.device(a.device)
    n_batched = a.images - a.batch_size  # the timed part starts after the first batch
    print(f"# input pipeline: {a.images} CIFAR-shaped images -> {a.size} px, batch {a.batch_size}, "
          f"{a.workers} PIL workers, device pipeline on {device}, {a.repeats} alternating repeats\n# {machine()}")
    dev_t, dev_all, pil_t, pil_all = [], [], [], []
    for _ in range(a.repeats):
        s, s_all = time_device(split, a.batch_size, a.size, device)
        dev_t.append(s), dev_all.append(s_all)
        s, s_all = time_pil(pil, a.batch_size, a.workers)
        pil_t.append(s), pil_all.append(s_all)
    d_ips, p_ips = n_batched / median(dev_t), n_batched / median(pil_t)
    print(table(["pipeline", "img/s (steady)", "img/s incl. start-up"],
                [[f"per-image PIL, DataLoader x{a.workers} workers", p_ips, a.images / median(pil_all)],
                 [f"batched on {device.type} (DeviceBatches)", d_ips, a.images / median(dev_all)]]))
    r = d_ips / p_ips
    print(f"ratio batched/PIL images per second: {r:.1f}x (goal >= {GOAL_SPEEDUP:.0f}x: "
          f"{'met' if r >= GOAL_SPEEDUP else 'not met'})")

    cfg = base_config(epochs=1, image_size=a.real_image_size, batch_size=a.batch_size,
                      train_size=a.real_train_size, test_size=10, device=a.device)
    h = fit(cfg)[-1]
    share = h["data_time_s"] / h["train_time_s"]
    print(f"real run (engine.fit, googlenet {cfg.image_size} px, batch {cfg.batch_size}, {cfg.train_size} images): "
          f"data_time_s {h['data_time_s']:.3f} / train_time_s {h['train_time_s']:.3f} = {share:.2%} "
          f"(goal < {GOAL_DATA_SHARE:.0%}: {'met' if share < GOAL_DATA_SHARE else 'not met'})")


if __name__ == "__main__":
    main()
