"""Where a run computes: the model placed on its device, autocast as the config asks, host-device sync
around what is timed. Below both the loop (engine) and the feature cache,
which run the same forward on the same device and time it the same way."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .config import RunConfig


def place(cfg: RunConfig, net: torch.nn.Module) -> torch.device:
    """`net` moved to cfg.device, in the config's memory format (in place); returns the device."""
    device = torch.device(cfg.device)
    net.to(device)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    return device


def autocast(cfg: RunConfig, device: torch.device):
    """The forward's precision context: none, or bf16/fp16 autocast (weights stay fp32)."""
    if cfg.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels: CUDA runs asynchronously, so a clock read without it times
    the launches, not the work. A no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
