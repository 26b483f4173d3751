"""Stage 1 of the data flow: one run's configuration, frozen and validated.

Overrides flow one way: defaults -> YAML file -> command line. `RunConfig.resolve()`
fills the machine-dependent defaults (device, threads, image size) so that what is
logged is what ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, nothing written."""


MODELS = ("inception_v3", "googlenet")
DATASETS = ("cifar10", "digits")
OPTIMIZERS = ("adam", "sgd")
BACKBONES = ("full", "frozen")
AMPS = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")  # or cuda:N

# The smallest input each model accepts. Inception-v3's auxiliary arm pools 17x17 -> 5x5
# and then runs a 5x5 conv, so with the arm it needs the full 299x299 input; without the
# arm its stride-2 stem still needs 75x75. GoogLeNet's aux arms adaptive-pool, 15 px is
# the least that survives its five stride-2 stages (checked with torchvision 0.29).
MIN_IMAGE_SIZE = {("inception_v3", True): 299, ("inception_v3", False): 75,
                  ("googlenet", True): 15, ("googlenet", False): 15}
DEFAULT_IMAGE_SIZE = {"inception_v3": 299, "googlenet": 224}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one fine-tuning run. Every field is an MLflow param."""

    model: str = "inception_v3"          # inception_v3 (the lecture's, 1 aux arm) | googlenet (2 aux arms)
    weights: str = "imagenet"            # imagenet | none | path to a state dict (.pth)
    dataset: str = "cifar10"             # cifar10 (50,000/10,000) | digits (sklearn, offline, 1,437/360)
    data_dir: str = "data"               # where torchvision keeps CIFAR-10
    download: bool = True                # let torchvision download CIFAR-10 (checksummed)
    image_size: int | None = None        # px, square; None: 299 for inception_v3, 224 for googlenet
    backbone: str = "full"               # full | frozen (train only the heads and untrained aux arms)
    aux_weight: float = 1.0              # loss = CE(main) + aux_weight * sum CE(aux); 0 removes the arms
    batch_size: int = 32                 # training images per step
    eval_batch_size: int | None = None   # images per evaluation step; None: 2 x batch_size
    epochs: int = 10
    optimizer: str = "adam"              # adam | sgd (momentum 0.9)
    lr: float = 1e-4                     # learning rate, constant
    seed: int = 0                        # seeds python, numpy, torch and the data order
    train_size: int | None = None        # stratified subset of the training split; None: all
    test_size: int | None = None         # stratified subset of the test split; None: all
    deterministic: bool = False          # torch.use_deterministic_algorithms(True)
    threads: int | None = None           # intra-op CPU threads; None: all cores
    amp: str = "none"                    # none (fp32, the lecture) | bf16 | fp16 (with a GradScaler)
    channels_last: bool = False          # NHWC memory format
    compile: bool = False                # torch.compile the model
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    target_accs: tuple[int, ...] = (50, 60, 70, 80)  # percent; time_to_test_acc_P for each
    system_metrics: bool = True          # MLflow's CPU/memory/GPU sampling

    def __post_init__(self) -> None:
        _validate(self)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "RunConfig":
        """Build from loosely typed values (YAML, CLI strings, MLflow params)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"{source}: unknown config key {unknown[0]!r}; allowed: {', '.join(known)}")
        values = {k: _coerce(known[k], v, source) for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> "RunConfig":
        data = load_yaml_mapping(path)
        data.update(overrides or {})
        return cls.from_dict(data, source=str(path))

    def resolve(self) -> "RunConfig":
        """Fill machine-dependent defaults, so the logged config is the one that ran."""
        import torch  # local: keep `import googlenet_study.config` light

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device: {device!r} asked for but no CUDA device is available; use device=cpu")
        return dataclasses.replace(
            self,
            device=device,
            image_size=self.image_size if self.image_size is not None else DEFAULT_IMAGE_SIZE[self.model],
            eval_batch_size=self.eval_batch_size if self.eval_batch_size is not None else 2 * self.batch_size,
            threads=self.threads if self.threads is not None else (os.cpu_count() or 1),
        )

    # ---- views --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target_accs"] = list(self.target_accs)
        return d

    def to_params(self) -> dict[str, str]:
        """MLflow params: every field under its own name; lists comma-separated."""
        def fmt(v: Any) -> str:
            if isinstance(v, bool):
                return str(v).lower()
            return ",".join(map(str, v)) if isinstance(v, list) else str(v)
        return {k: fmt(v) for k, v in self.to_dict().items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """Stable hash of everything that can change the result (not where data lives)."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def has_aux(self) -> bool:
        return self.aux_weight > 0


_NOT_HASHED = {"data_dir", "download", "system_metrics"}


def field_names() -> list[str]:
    return [f.name for f in fields(RunConfig)]


def load_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"{p}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config fields at the top level")
    return data


# ---- coercion and validation ---------------------------------------------------------
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Turn a YAML/CLI/MLflow-param value into the field's type, or say what is allowed."""
    name, typ = f.name, str(f.type)
    if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "null", ""}
                         and "None" in typ):
        if "None" in typ:
            return None
        raise UserError(f"{source}: {name} must not be empty")
    try:
        if typ.startswith("bool"):
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError
        if typ.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if typ.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            out = []
            for x in items:
                if isinstance(x, bool):
                    raise ValueError
                xf = float(str(x).strip())
                if not xf.is_integer():
                    raise ValueError
                out.append(int(xf))
            return tuple(out)
        if isinstance(value, (dict, list)):
            raise ValueError
        return str(value).strip()
    except (ValueError, TypeError):
        kind = typ.split(" ")[0].replace("tuple[int, ...]", "comma-separated integers")
        raise UserError(f"{source}: {name} must be {kind}, got {value!r}") from None


def _validate(c: RunConfig) -> None:
    def bad(field: str, allowed: str) -> None:
        raise UserError(f"{field}: got {getattr(c, field)!r}; allowed: {allowed}")

    if c.model not in MODELS:
        bad("model", " | ".join(MODELS))
    if c.dataset not in DATASETS:
        bad("dataset", " | ".join(DATASETS))
    if c.optimizer not in OPTIMIZERS:
        bad("optimizer", " | ".join(OPTIMIZERS))
    if c.backbone not in BACKBONES:
        bad("backbone", " | ".join(BACKBONES))
    if c.amp not in AMPS:
        bad("amp", " | ".join(AMPS))
    if c.weights not in ("imagenet", "none") and not c.weights.endswith((".pth", ".pt", ".bin", ".ckpt")) \
            and not Path(c.weights).exists():
        bad("weights", "imagenet | none | the path of a state-dict file")
    if not (c.device in DEVICES or (c.device.startswith("cuda:") and c.device[5:].isdigit())):
        bad("device", "auto | cpu | cuda | cuda:N")
    if c.batch_size < 1:
        bad("batch_size", "an integer >= 1")
    if c.eval_batch_size is not None and c.eval_batch_size < 1:
        bad("eval_batch_size", "an integer >= 1")
    if c.epochs < 1:
        bad("epochs", "an integer >= 1")
    if not (c.aux_weight >= 0) or c.aux_weight != c.aux_weight or c.aux_weight == float("inf"):
        bad("aux_weight", "a finite number >= 0")
    if not (c.lr > 0) or c.lr == float("inf"):
        bad("lr", "a finite number > 0")
    if c.seed < 0:
        bad("seed", "an integer >= 0")
    for f in ("train_size", "test_size"):
        if getattr(c, f) is not None and getattr(c, f) < 10:
            bad(f, "none (all) or an integer >= 10 (one image per class at least)")
    if c.threads is not None and c.threads < 1:
        bad("threads", "an integer >= 1")
    if not c.target_accs or any(not 0 < t <= 100 for t in c.target_accs):
        bad("target_accs", "comma-separated percentages in (0, 100]")
    if c.image_size is not None:
        need = MIN_IMAGE_SIZE[(c.model, c.aux_weight > 0)]
        if c.image_size < need:
            why = (" (its auxiliary arm needs 299x299; use aux_weight=0 for smaller images)"
                   if c.model == "inception_v3" and c.aux_weight > 0 else "")
            bad("image_size", f">= {need} px for {c.model}{why}")
