"""A run's training state, one type, and its per-epoch checkpoint file: written atomically, found again by
config hash, never trusted blindly.

`TrainingState` is everything a run needs to continue to the bit: model, optimiser, scaler, every RNG,
the per-epoch history (so `elapsed_time_s` continues where it stopped: downtime is never counted), when
each epoch ended, the epoch a signal stopped mid-way (`PartialEpoch`) and whose run it is (`RunIdentity`).
`engine.fit` builds it (`snapshot`) and applies it (`restore`); this module writes and reads it. It lives
here, not in the engine, because its shape is the file format: the checks in `load`, the fields and the
on-disk keys are read side by side, and reading a checkpoint needs neither the model nor the data code.

Layout: <checkpoint_dir>/<config hash>/<mlflow run id>.ckpt, a torch-saved plain dict (format 1: the keys
of `TrainingState.to_dict` plus format, host and pid of the writer). One is written after every epoch and,
when a signal stops a run, after the batch in flight, so nothing finished is lost.

Loaded as data, never as code: the folder may be shared, so a file in it is untrusted input. torch.load runs
with weights_only=True (tensors, numbers, strings, lists, dicts; a pickle naming any other callable, such as
os.system, is refused before anything is called); the RNG states are stored as tensors and plain values for
that reason. A file is only read when its resolved path lies inside the checkpoint folder (`inside`), and
`Resume` accepts only auto, never or a 32-hex MLflow run id, so no glob or `../` reaches a path."""

from __future__ import annotations

import os
import pickle
import random
import re
import socket
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import torch

from . import checkpoint_checks, schema
from .config import RunConfig, UserError
from .safe_files import NotRegular, open_regular, write_atomically  # noqa: F401 - feature_cache's writer too

SUFFIX = ".ckpt"
FORMAT = 1
REQUIRED = ("format", "epoch", "model", "optimizer", "rng", "history", "config_hash", "run_id", "filters_before")
RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id (uuid4().hex): the only run ids --resume takes
# Checkpoints written before the RNG states became tensors hold numpy's MT19937 key as an ndarray: these
# three numpy names rebuild a plain array and nothing else (a subtype must itself be allowed).
_NP_CORE = np._core if hasattr(np, "_core") else np.core  # numpy 2 | 1.26
_OLD_NUMPY = (_NP_CORE.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType)


@dataclass(frozen=True)
class Resume:
    """What train() continues from: this config's unfinished run (`AUTO`), nothing (`NEVER`), or `run(id)`."""
    auto: bool = True
    run_id: str | None = None  # 32 lowercase hex digits: that run's checkpoint, which must exist

    @classmethod
    def parse(cls, text: str) -> Resume:
        """The --resume flag: auto | never | a 32-hex MLflow run id; anything else is a one-line error."""
        if text in ("auto", "never"):
            return AUTO if text == "auto" else NEVER
        if RUN_ID.fullmatch(text):
            return cls(auto=False, run_id=text)
        from .config import short
        raise UserError(f"--resume: {short(text, 60)!r} is not allowed; allowed: auto | never | an MLflow run id "
                        f"(32 hexadecimal digits)")


AUTO, NEVER = Resume(), Resume(auto=False)


@dataclass(frozen=True)
class RunIdentity:
    """Whose state it is: the config and its hash, the MLflow run and its parent, the filters at the start."""
    config_hash: str
    run_id: str
    parent_run_id: str | None
    config: dict
    filters_before: torch.Tensor | None  # the first conv's weights before any training (the filter figures)

    @classmethod
    def of(cls, cfg: RunConfig, run_id: str, parent_run_id: str | None,
           filters_before: torch.Tensor | None) -> RunIdentity:
        return cls(cfg.digest(), run_id, parent_run_id, cfg.to_dict(), filters_before)


@dataclass(frozen=True)
class PartialEpoch:
    """An epoch so far: where it continues and what it has summed; `fresh` for one not yet begun."""
    epoch: int            # the epoch in progress, from 1
    batch: int            # index of the next batch to train, from 0 (the resumed_at_batch tag is this + 1)
    seen: int             # training images so far
    sums: torch.Tensor    # float64 (4,): main CE, aux CE, total CE (each x images), correct predictions
    data_time_s: float    # s: waiting for input so far
    train_time_s: float   # s: training so far (before a stop; the clock resumes from here)

    @classmethod
    def fresh(cls, epoch: int) -> PartialEpoch:
        return cls(epoch, 0, 0, torch.zeros(4, dtype=torch.float64), 0.0, 0.0)


@dataclass(frozen=True)
class Writer:
    """The process that saved a checkpoint."""
    host: str | None
    pid: int | None

    def alive(self) -> bool:
        """Is it still running (on this host)?"""
        if self.host != socket.gethostname():
            return True  # can't tell from here: assume it is, never steal another machine's run
        if not self.pid or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie (killed, not yet reaped by its parent) is not alive.
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().split(") ")[-1].split()[0] != "Z"
        except OSError:
            return True


@dataclass(frozen=True)
class TrainingState:
    """A run at the end of an epoch, or mid-epoch after a signal (`partial`); every tensor on the CPU."""
    run: RunIdentity
    model: dict                   # state dicts
    optimizer: dict
    scaler: dict | None           # GradScaler's (amp fp16 only)
    rng: dict                     # python, numpy, torch (and cuda) generator states
    history: list[dict]           # the finished epochs' metrics (schema.EPOCH_METRICS)
    epoch_ended_ms: list[int]     # when each ended, ms since 1970: its metrics' MLflow timestamp
    partial: PartialEpoch | None  # the epoch a signal stopped after a batch
    writer: Writer | None = None  # who saved it (set by `load`)

    @property
    def epoch(self) -> int:
        """Epochs finished."""
        return len(self.history)

    @property
    def elapsed_time_s(self) -> float:
        """s: the study's clock after the last finished epoch (derived, so it cannot disagree with history)."""
        return self.history[-1][schema.CLOCK] if self.history else 0.0

    @classmethod
    def snapshot(cls, run: RunIdentity, net: torch.nn.Module, opt: torch.optim.Optimizer, scaler,
                 history: list[dict], epoch_ended_ms: list[int], partial: PartialEpoch | None = None
                 ) -> TrainingState:
        """This moment's state, copied to the CPU: a writer thread can save it while training moves on."""
        return cls(run, *_cpu_copy((net.state_dict(), opt.state_dict(), scaler.state_dict() if scaler else None,
                                    _rng_state(), history, epoch_ended_ms)),
                   None if partial is None else replace(partial, sums=_cpu_copy(partial.sums)))

    def restore(self, net: torch.nn.Module, opt: torch.optim.Optimizer, scaler) -> None:
        """Put the model, optimiser, scaler and every RNG back as they were at the snapshot."""
        net.load_state_dict(self.model)
        opt.load_state_dict(self.optimizer)
        if scaler is not None and self.scaler:
            scaler.load_state_dict(self.scaler)
        _set_rng_state(self.rng)

    def to_dict(self) -> dict:
        """The on-disk form: a plain dict of tensors, lists and numbers (no classes of ours)."""
        return {"epoch": self.epoch, "model": self.model, "optimizer": self.optimizer, "scaler": self.scaler,
                "rng": self.rng, "history": self.history, "epoch_ended_ms": self.epoch_ended_ms,
                "elapsed_time_s": self.elapsed_time_s,
                "partial": None if self.partial is None else asdict(self.partial),
                **{f.name: getattr(self.run, f.name) for f in fields(RunIdentity)}}

    @classmethod
    def from_dict(cls, d: dict) -> TrainingState:
        run = RunIdentity(**{f.name: d.get(f.name) for f in fields(RunIdentity)})
        return cls(run, d["model"], d["optimizer"], d.get("scaler"), d["rng"], list(d["history"]),
                   list(d.get("epoch_ended_ms", [])), PartialEpoch(**d["partial"]) if d.get("partial") else None,
                   Writer(d.get("host"), d.get("pid")))


def default_dir(tracking_uri: str) -> Path:
    """Beside the tracking store when it is a local SQLite file; else in the working folder."""
    u = urlparse(tracking_uri)
    if u.scheme == "sqlite":
        path = unquote(tracking_uri[len("sqlite:///"):])
        return Path(path).resolve().parent / ".checkpoints"
    return Path(".checkpoints").resolve()


def path_for(root: Path, cfg: RunConfig, run_id: str) -> Path:
    return root / cfg.digest() / f"{run_id}{SUFFIX}"


@dataclass(frozen=True)
class RunCheckpoint:
    """One run's checkpoint file: where `engine.fit` saves each TrainingState of `run`."""
    path: Path
    run: RunIdentity

    def save(self, state: TrainingState) -> None:
        save(self.path, state)


def save(path: Path, state: TrainingState) -> None:
    """Write the checkpoint atomically (see write_atomically)."""
    write_atomically(path, lambda f: torch.save(
        {**state.to_dict(), "format": FORMAT, "host": socket.gethostname(), "pid": os.getpid()}, f))


def load(path: Path, cfg: RunConfig, net: torch.nn.Module | None = None) -> TrainingState:
    """The checkpoint at `path`, checked against `cfg` (and `net`'s tensor names and shapes, when given); a bad
    one is a one-line error naming the file and what is wrong, never a fresh start nor a traceback later.
    Read as data only (module doc): a file holding anything else is refused, and nothing in it runs."""
    how = "move it away (or delete it), or start over with --resume never"
    try:
        with open_regular(path) as f, torch.serialization.safe_globals(_OLD_NUMPY):  # a FIFO: refused, not waited on
            d = torch.load(f, map_location="cpu", weights_only=True)
    except NotRegular as e:
        raise UserError(f"checkpoint: {e}; {how}") from None
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise UserError(f"checkpoint: {path} is corrupt or truncated; {how}") from None
        raise UserError(f"checkpoint: {path} is not a googlenet-study checkpoint (it holds objects other than "
                        f"tensors and plain values, which are never loaded); {how}") from None
    except Exception:
        raise UserError(f"checkpoint: {path} is corrupt or truncated; {how}") from None
    if not isinstance(d, dict) or any(k not in d for k in REQUIRED) or d["format"] != FORMAT:
        raise UserError(f"checkpoint: {path} is not a googlenet-study checkpoint (format {FORMAT}); {how}")
    if d["config_hash"] != cfg.digest():
        raise UserError(f"checkpoint: {path} was written for config {str(d['config_hash'])[:40]}, this run's "
                        f"config is {cfg.digest()}; {how}")
    if d["run_id"] != path.stem:  # a copy renamed to another run's name would resume the wrong MLflow run
        raise UserError(f"checkpoint: {path} is inconsistent (it holds run {str(d['run_id'])[:40]!r}); {how}")
    problem = checkpoint_checks.problem_of(d, cfg.epochs, net)
    if problem:
        raise UserError(f"checkpoint: {path} is inconsistent ({problem}); {how}")
    try:
        return TrainingState.from_dict(d)
    except (TypeError, KeyError, ValueError):  # a partial epoch with other fields
        raise UserError(f"checkpoint: {path} is not a googlenet-study checkpoint (format {FORMAT}); {how}") from None


def inside(path: Path, root: Path) -> Path:
    """`path`, refused in one line unless it lies inside `root` once every symlink is followed."""
    try:
        if path.resolve(strict=True).is_relative_to(root.resolve(strict=True)):
            return path
        why = "resolves to a file outside the checkpoint folder"
    except (OSError, RuntimeError) as e:  # a dangling link, a symlink loop (RuntimeError before Python 3.13)
        why = f"cannot be resolved ({getattr(e, 'strerror', None) or e})"
    raise UserError(f"checkpoint: {path} {why} ({root}); delete it, or start over with --resume never")


def candidates(root: Path, cfg: RunConfig) -> list[Path]:
    """Checkpoints of runs with this exact config, newest first; each inside `root`."""
    folder = root / cfg.digest()
    if not folder.is_dir():
        return []
    found = [inside(p, root) for p in folder.glob(f"*{SUFFIX}")]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_by_run_id(root: Path, run_id: str) -> Path | None:
    """The checkpoint of run `run_id` under any config, inside `root`; `run_id` is 32 hex digits, so the
    pattern below is no glob and no path."""
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"not an MLflow run id: {run_id!r}")
    hits = list(root.glob(f"*/{run_id}{SUFFIX}")) if root.is_dir() else []
    return inside(hits[0], root) if hits else None


def remove(path: Path) -> None:
    try:
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    except OSError:
        pass


def _cpu_copy(obj):
    """A deep copy with every tensor on the CPU: a snapshot that the next training step cannot change."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _rng_state() -> dict:
    """Every generator's state as tensors and plain values (what weights_only=True loads)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    s = {"python": random.getstate(),
         "numpy": {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)},
         "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    n = s["numpy"]
    if isinstance(n, dict):  # (a tuple with an ndarray key in checkpoints written before this was a tensor)
        n = (n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    np.random.set_state(n)
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
