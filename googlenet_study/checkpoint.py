"""Per-epoch checkpoints: written atomically, found again by config hash, never trusted blindly.

Layout: <checkpoint_dir>/<config hash>/<mlflow run id>.ckpt. A checkpoint holds the model,
optimiser, every RNG state, the per-epoch history (so `elapsed_time_s` continues where it
stopped: downtime is never counted), the config, the run id and the writer's host and pid.
One is written after every epoch and, when a signal stops a run, after the batch in flight:
then `partial` holds that epoch's position (next batch) and running sums, so nothing finished is lost."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from .config import RunConfig, UserError

SUFFIX = ".ckpt"
FORMAT = 1
REQUIRED = ("format", "epoch", "model", "optimizer", "rng", "history", "config_hash", "run_id", "filters_before")


def default_dir(tracking_uri: str) -> Path:
    """Beside the tracking store when it is a local SQLite file; else in the working folder."""
    u = urlparse(tracking_uri)
    if u.scheme == "sqlite":
        path = unquote(tracking_uri[len("sqlite:///"):])
        return Path(path).resolve().parent / ".checkpoints"
    return Path(".checkpoints").resolve()


def path_for(root: Path, cfg: RunConfig, run_id: str) -> Path:
    return root / cfg.digest() / f"{run_id}{SUFFIX}"


def save(path: Path, state: dict) -> None:
    """Write to a temp file, fsync, rename over: a kill at any moment leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {**state, "format": FORMAT, "host": socket.gethostname(), "pid": os.getpid()}
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load(path: Path, cfg: RunConfig) -> dict:
    """The checkpoint at `path`, checked against `cfg`; a bad one is a one-line error, not a fresh start."""
    how = "delete it, or start over with --resume never"
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        raise UserError(f"checkpoint: {path} is corrupt or truncated; {how}") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED) or state["format"] != FORMAT:
        raise UserError(f"checkpoint: {path} is not a googlenet-study checkpoint (format {FORMAT}); {how}")
    if state["config_hash"] != cfg.digest():
        raise UserError(f"checkpoint: {path} was written for config {state['config_hash']}, this run's config is "
                        f"{cfg.digest()}; {how}")
    if len(state["history"]) != state["epoch"]:
        raise UserError(f"checkpoint: {path} is inconsistent (epoch {state['epoch']}, "
                        f"{len(state['history'])} epochs of history); {how}")
    partial = state.get("partial")
    if partial is not None and (not isinstance(partial, dict) or partial.get("epoch") != state["epoch"] + 1):
        raise UserError(f"checkpoint: {path} is inconsistent (a partial epoch that does not follow epoch "
                        f"{state['epoch']}); {how}")
    return state


def candidates(root: Path, cfg: RunConfig) -> list[Path]:
    """Checkpoints of runs with this exact config, newest first."""
    folder = root / cfg.digest()
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)


def find_by_run_id(root: Path, run_id: str) -> Path | None:
    hits = list(root.glob(f"*/{run_id}{SUFFIX}")) if root.is_dir() else []
    return hits[0] if hits else None


def writer_alive(state: dict) -> bool:
    """Is the process that wrote this checkpoint still running (on this host)?"""
    if state.get("host") != socket.gethostname():
        return True  # can't tell from here: assume it is, never steal another machine's run
    pid = state.get("pid")
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return True


def remove(path: Path) -> None:
    try:
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    except OSError:
        pass
