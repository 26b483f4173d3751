"""Will it fit? A training step's memory, estimated from the config and checked against what the
device has, before any data is loaded or any run or study exists: a 100000 px image must never
reach the allocator. Also the thread and worker counts a machine can carry.

The estimate is linear in the pixels of a batch (image_size^2 x images) plus the model's own state.
Constants measured on the CPU with benchmarks/step_memory.py (torch 2.14, fp32: the peak resident
set over two steps minus that before them), rounded up. They are meant to refuse the absurd, not
to squeeze the last batch out of a device: what is refused here would not have run."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import DEFAULT_IMAGE_SIZE, MIN_IMAGE_SIZE, RunConfig, UserError, cores, short, shown
from .data import SPLIT_SIZES

# Bytes per input pixel per image of one step: the activations autograd keeps for backward (whole
# network trained), or the transient tensors of a forward without a graph (a frozen trunk: only the
# heads and arms keep a graph; evaluation keeps none). The aux arms add under 15 % to a full step
# (googlenet 1302 vs 1144 B): counted always.
TRAIN_FULL_B = {"googlenet": 1000, "inception_v3": 1350}   # measured 998 (224 px), 1331 (299 px)
NO_GRAPH_B = {"googlenet": 320, "inception_v3": 320}       # frozen training 315 / 270; evaluation 248 / 268
# Parameters with 10-class heads, with and without the aux arms (torchvision 0.29).
PARAMS = {("googlenet", True): 9_960_638, ("googlenet", False): 5_610_154,
          ("inception_v3", True): 24_371_444, ("inception_v3", False): 21_806_058}
FROZEN_TRAINABLE = 4_400_000  # a frozen googlenet still trains its randomly initialised arms (4.36 M)
FIXED_B = 128 * 2**20         # allocator and workspace overhead seen at every size
PROCESS_B = 512 * 2**20       # one sweep worker before it trains: Python with torch and MLflow imported
# amp: autocast keeps fp32 weights and runs convolutions in half precision; activations about halve.
# Percent, so that the arithmetic stays in integers (10**60 px must not overflow a float).
AMP_PERCENT = {"none": 100, "bf16": 60, "fp16": 60}
THREADS_PER_CORE = 8          # intra-op threads beyond this only switch between one another
WORKERS_PER_CORE = 4          # sweep workers: each is a process with its own threads


def step_bytes(model: str, image_size: int, batch: int, aux: bool, frozen: bool, amp: str,
               training: bool = True, optimizer: str = "adam") -> int:
    """Peak bytes of one training (or evaluation) step: weights, their gradients and optimiser
    state (they live through evaluation too), and the activations of `batch` images of image_size^2."""
    params = PARAMS[(model, aux)]
    trainable = min(params, FROZEN_TRAINABLE) if frozen else params
    moments = 2 if optimizer == "adam" else 1  # Adam: two; SGD: momentum
    state = 4 * params + 4 * trainable * (1 + moments)  # fp32 weights, gradients, moments
    per_px = TRAIN_FULL_B[model] if training and not frozen else NO_GRAPH_B[model]
    return FIXED_B + state + per_px * AMP_PERCENT[amp] * image_size ** 2 * batch // 100


def available_bytes(device: str) -> int:
    """Free memory of the device a run would use: available RAM (psutil) or the GPU's free memory."""
    if device.startswith("cuda"):
        import torch
        index = int(device[5:]) if device[5:] else torch.cuda.current_device()
        return torch.cuda.mem_get_info(index)[0]
    import psutil
    return psutil.virtual_memory().available


@dataclass(frozen=True)
class Step:
    name: str      # training | evaluation
    field: str     # the config field that sets its batch
    batch: int     # images per step: the field's value, at most the split
    need: int      # bytes


def steps(cfg: RunConfig) -> list[Step]:
    """The training and the evaluation step of a resolved config."""
    train_n, test_n = SPLIT_SIZES[cfg.dataset]
    train_n, test_n = cfg.train_size or train_n, cfg.test_size or test_n

    def step(name: str, field: str, batch: int) -> Step:
        return Step(name, field, batch, _need(cfg, name, cfg.image_size, batch))
    return [step("training", "batch_size", min(cfg.batch_size, train_n)),
            step("evaluation", "eval_batch_size", min(cfg.eval_batch_size, test_n))]


def _need(cfg: RunConfig, step: str, image_size: int, batch: int) -> int:
    return step_bytes(cfg.model, image_size, batch, cfg.has_aux, cfg.backbone == "frozen", cfg.amp,
                      step == "training", cfg.optimizer)


def check_fits(cfg: RunConfig, available: int | None = None, workers: int = 1) -> None:
    """Refuse, in one line, a resolved config that the machine cannot carry: a step larger than the
    device's free memory (shared by `workers` processes), or far more threads than cores."""
    if cfg.threads > THREADS_PER_CORE * cores():
        raise UserError(f"threads: {cfg.threads} on a machine with {cores()} cores; at most "
                        f"{THREADS_PER_CORE * cores()} ({THREADS_PER_CORE} per core: more only switch between threads)")
    available = (available_bytes(cfg.device) if available is None else available) // workers
    for step in steps(cfg):
        if step.need > available:
            raise UserError(_refusal(cfg, step, available, workers))


def check_study(spec, workers: int) -> None:
    """A sweep's worker count, and each grid point (or each corner of its ranges) against the
    memory its workers share; before the study or any run exists. `spec` is a study.StudySpec."""
    from .sweep import space

    if workers > WORKERS_PER_CORE * cores():
        raise UserError(f"--workers: {workers} on a machine with {cores()} cores; at most "
                        f"{WORKERS_PER_CORE * cores()} ({WORKERS_PER_CORE} per core)")
    free = available_bytes("cpu")
    ram = free - workers * PROCESS_B  # what the workers' steps share on the CPU
    if ram <= 0:
        raise UserError(f"--workers: {workers} processes need about {human(workers * PROCESS_B)} before they "
                        f"train ({human(PROCESS_B)} each), {human(free)} available; "
                        f"--workers <= {max(1, free // PROCESS_B - 1)} would fit")
    for point in space.corners(spec):
        cfg = spec.config(point).resolve()
        gpus = _gpus() if cfg.device.startswith("cuda") else 0
        sharing = math.ceil(workers / gpus) if gpus else workers  # one GPU each, round robin (sweep.plan_workers)
        try:
            check_fits(cfg, ram if cfg.device == "cpu" else None, sharing)
        except UserError as e:
            combo = ", ".join(f"{k}={shown(v)}" for k, v in point.items())
            raise UserError(f"{short(spec.path, 300)}: space point {combo}: {e}") from None


def _gpus() -> int:
    import torch
    return torch.cuda.device_count()


def _refusal(cfg: RunConfig, step: Step, available: int, workers: int) -> str:
    """One line: the field most likely wrong, what it would need, what is free, and what would fit."""
    max_batch = _largest(lambda b: _need(cfg, step.name, cfg.image_size, b) <= available, step.batch)
    max_size = _largest(lambda s: _need(cfg, step.name, s, step.batch) <= available, cfg.image_size)
    fixes = ([f"{step.field} <= {max_batch}"] if max_batch else []) + \
            ([f"image_size <= {max_size}"] if max_size >= MIN_IMAGE_SIZE[(cfg.model, cfg.has_aux)] else [])
    if cfg.image_size > DEFAULT_IMAGE_SIZE[cfg.model] or not max_batch:  # beyond the model's native size
        what = f"image_size: {shown(cfg.image_size)} px at {step.field} {step.batch}"
    else:
        what = f"{step.field}: {step.batch} images of {cfg.image_size} px"
    free = f"{human(available)} available" + (f" to each of {workers} workers" if workers > 1 else "")
    fix = " or ".join(fixes) + " would fit" if fixes else "no batch of this model fits"
    return (f"{what} needs about {human(step.need)} for one {step.name} step of {cfg.model} on {cfg.device}, "
            f"{free}; {fix} (an estimate: docs/reference.md, image_size)")


def _largest(ok, below: int) -> int:
    """The largest n in [1, below) with ok(n), where ok holds up to some n and fails beyond; 0 if none."""
    lo, hi = 0, below
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def human(n: int) -> str:
    """Bytes in binary units, three significant digits: 21.3 GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    if n >= 1000 * 1024 ** 6:
        return f"1e{len(str(n)) - 1} B"
    i = max((k for k in range(len(units)) if n >= 1024 ** k), default=0)
    return f"{n / 1024 ** i:.3g} {units[i]}"
