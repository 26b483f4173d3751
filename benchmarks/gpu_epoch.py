"""The lecture's configuration for a fixed number of steps: img/s, projected epoch time and MFU.

Inception-v3, 299 px, full fine-tuning, aux_weight 1 (the lecture: 466 s per CIFAR-10 epoch, batch 32)
for amp none/bf16 x channels_last off/on x batch 32/128. Projected epoch = ceil(50,000 / B) training
steps + ceil(10,000 / 2B) evaluation steps at the measured step times. MFU = measured model FLOP/s
(forward + backward, counted by torch.utils.flop_counter at the measured batch) / the card's dense
bf16 peak. `--factorial` also projects a study file (default experiments/factorial.yaml) from the
measured step time of every distinct configuration in its grid, and says which ones dominate.
Weights are random (`weights: none`): the step time does not depend on their values.

On a GPU:  .venv/bin/python benchmarks/gpu_epoch.py --factorial
On a CPU:  .venv/bin/python benchmarks/gpu_epoch.py --steps 1 --warmup 0 --batch-sizes 2 --factorial \
               --factorial-batch-sizes 2                            # ~2-3 min: Inception-v3 at 299 px
Smoke:     ... --model googlenet --image-size 32 --factorial-set model=googlenet --factorial-set image_size=32
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
from pathlib import Path

import torch
import yaml

from _common import ROOT, Stepper, machine, table
from googlenet_study.config import RunConfig

LECTURE_EPOCH_S = 466.0        # the lecture's measured epoch (7 min 46 s; 50,000 images at 299 px, batch 32)
TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000  # CIFAR-10
# Dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name() (vendor data sheets).
# H100 PCIe is lower (756 TFLOP/s); its name contains "PCIe" and is matched first.
BF16_PEAK = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12))


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return f"CPU ({machine().split(';')[0]})", None
    name = torch.cuda.get_device_name(device)
    return name, next((p for k, p in BF16_PEAK if k in name), None)


def measure(cfg: RunConfig, steps: int, warmup: int, flops: bool = True) -> dict:
    """Train and eval seconds per step, and training FLOPs per image, for one configuration."""
    s = Stepper(cfg)
    # Counting dispatches every op through Python (seconds on a CPU); it doubles as a warm-up step.
    flops = s.train_flops() / cfg.batch_size if flops else float("nan")
    for _ in range(warmup):
        s.train_step()
    s.eval_step()
    train_s, eval_s = s.time(steps), s.time(max(1, steps // 2), eval_=True)
    del s
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"train_s": train_s, "eval_s": eval_s, "flops_per_img": flops}


def epoch_seconds(m: dict, batch: int, train_n: int = TRAIN_IMAGES, test_n: int = TEST_IMAGES) -> float:
    return math.ceil(train_n / batch) * m["train_s"] + math.ceil(test_n / (2 * batch)) * m["eval_s"]


LECTURE_HEADERS = ["amp", "channels_last", "batch", "train img/s", "eval img/s", "projected epoch s",
                   "x lecture (466 s)", "model TFLOP/s", "MFU (bf16 peak)"]


def lecture_rows(a, device: str, peak: float | None) -> list[dict]:
    """The lecture's configuration at each amp x channels_last x batch: its config, step times and table row."""
    base = dict(model=a.model, weights="none", dataset="cifar10", image_size=a.image_size, backbone="full",
                aux_weight=1.0, device=device, system_metrics=False)
    out = []
    for amp, cl, b in itertools.product(a.amps, a.channels_last, a.batch_sizes):
        cfg = RunConfig(**base, amp=amp, channels_last=cl, batch_size=b).resolve()
        m = measure(cfg, a.steps, a.warmup)
        ep = epoch_seconds(m, b)
        tflops = m["flops_per_img"] * b / m["train_s"]
        mfu = f"{tflops / peak:.1%}" if peak else "unknown peak"
        out.append({"cfg": cfg, "m": m, "epoch_s": ep,
                    "row": [amp, "on" if cl else "off", b, b / m["train_s"], 2 * b / m["eval_s"], ep,
                            LECTURE_EPOCH_S / ep, tflops / 1e12, mfu]})
    return out


def lecture_grid(a, device: str, peak: float | None) -> list[dict]:
    """Print the lecture_rows table and the best row's ratio to the lecture's epoch; return the rows."""
    got = lecture_rows(a, device, peak)
    print(table(LECTURE_HEADERS, [g["row"] for g in got]))
    best = min(got, key=lambda g: g["epoch_s"])
    amp, cl, b = best["row"][:3]
    print(f"ratio lecture/projected epoch time, best (amp {amp}, channels_last {cl}, batch {b}): "
          f"{LECTURE_EPOCH_S / best['epoch_s']:.3g}x ({best['epoch_s']:.4g} s per epoch vs {LECTURE_EPOCH_S:.0f} s)")
    return got


def factorial(a, device: str) -> None:
    spec = yaml.safe_load(Path(a.study).read_text())
    base = {**spec.get("base", {}), **dict(kv.split("=", 1) for kv in a.factorial_set)}
    base.update(weights="none", device=device, system_metrics="false")  # timing only: no download, no sampler
    space = dict(spec.get("space", {}))
    seeds = len(space.pop("seed", [0])) * int(spec.get("repeats", 1))
    if a.factorial_batch_sizes:  # a CPU cannot time batch 128 of Inception-v3: shrink, and say so
        space["batch_size"] = a.factorial_batch_sizes
    keys = list(space)
    train_n = int(base.get("train_size") or TRAIN_IMAGES)
    test_n = int(base.get("test_size") or TEST_IMAGES)
    measured: dict[tuple, dict] = {}
    rows = []
    for values in itertools.product(*(space[k] for k in keys)):
        cfg = RunConfig.from_dict({**base, **dict(zip(keys, values))}, source=a.study).resolve()
        # Any aux_weight > 0 runs the same graph (only the loss's scalar differs): time it once.
        key = (cfg.batch_size, cfg.has_aux, cfg.backbone, cfg.model, cfg.image_size, cfg.amp, cfg.channels_last)
        if key not in measured:
            measured[key] = measure(cfg, a.steps, a.warmup + 1, flops=False)
        ep = epoch_seconds(measured[key], cfg.batch_size, train_n, test_n)
        rows.append([*values, ep, seeds * cfg.epochs * ep])
    total = sum(r[-1] for r in rows)
    rows.sort(key=lambda r: -r[-1])
    cum = 0.0
    for r in rows:
        cum += r[-1]
        r += [f"{r[-1] / total:.1%}", f"{cum / total:.0%}"]
    runs = len(rows) * seeds
    print(f"\n# {a.study}: {runs} runs ({len(rows)} configurations x {seeds} seeds) x {base.get('epochs')} epochs of "
          f"{train_n:,}+{test_n:,} images; {len(measured)} distinct step graphs timed; "
          f"amp {base.get('amp', 'none')}, channels_last {base.get('channels_last', False)}")
    print(table([*keys, "epoch s", "all seeds s", "share", "cumulative"], rows))
    top, cum = [], 0.0
    for r in rows:  # the fewest configurations that make half the total
        top.append(r)
        cum += r[-3]
        if cum >= total / 2:
            break
    print(f"dominant ({'/'.join(keys)}): {', '.join('/'.join(map(str, r[:len(keys)])) for r in top)} "
          f"make {cum / total:.0%} of the total")
    print(f"ratio projected study time / 1 h goal: {total / 3600:.3g} ({total / 3600:.3g} device-hours, "
          f"{total:,.0f} s; at the lecture's 466 s per epoch: {runs * int(base.get('epochs', 10)) * LECTURE_EPOCH_S / 3600:.0f} h)")


def main() -> None:
    def bools(s: str) -> list[bool]:
        return [v.strip().lower() in ("on", "true", "1") for v in s.split(",")]

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per configuration")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (cudnn.benchmark autotuning)")
    ap.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[32, 128])
    ap.add_argument("--amps", type=lambda s: s.split(","), default=["none", "bf16"])
    ap.add_argument("--channels-last", type=bools, default=[False, True], help="e.g. off,on")
    ap.add_argument("--model", default="inception_v3", help="googlenet only to smoke-test the script quickly")
    ap.add_argument("--image-size", type=int, default=299)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--factorial", action="store_true", help="also project the study file's total time")
    ap.add_argument("--factorial-only", action="store_true", help="only the study projection")
    ap.add_argument("--study", default=str(ROOT / "experiments" / "factorial.yaml"))
    ap.add_argument("--factorial-set", action="append", default=[], metavar="field=value",
                    help="override the study's base, e.g. amp=bf16 (repeatable)")
    ap.add_argument("--factorial-batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                    help="replace the study's batch sizes (a CPU cannot time 128)")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True  # what a run with deterministic=false does
    name, peak = peak_flops(device)
    print(f"# lecture configuration: {a.model} {a.image_size} px, full, aux_weight 1; {a.steps} timed steps after "
          f"{a.warmup} warm-up\n# device: {name}; bf16 peak: {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown'}; "
          f"torch {torch.__version__}")
    if device.type != "cuda":
        print("# no GPU here: CPU numbers only show that the script runs")
    if not a.factorial_only:
        lecture_grid(a, str(device), peak)
    if a.factorial or a.factorial_only:
        factorial(a, str(device))


if __name__ == "__main__":
    main()
