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
import reprlib
import stat
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from . import strict_yaml


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, nothing written."""


SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"  # the report's "written" time: seconds since 1970-01-01 UTC, an integer
LAST_DATE_EPOCH = 253402300799  # 9999-12-31 23:59:59 UTC: the last second a datetime (and time.gmtime) holds


def source_date_epoch(env=os.environ) -> int | None:
    """SOURCE_DATE_EPOCH (the reproducible-builds convention) as seconds, None when unset or empty; anything
    else is one line. Checked by the CLI before numpy is imported: numpy.f2py reads it at import time and
    raises a traceback on garbage, OverflowError/OSError on a huge value."""
    text = env.get(SOURCE_DATE_EPOCH)
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > LAST_DATE_EPOCH:
        raise UserError(f"{SOURCE_DATE_EPOCH}: got {shown(text)}; allowed: an integer, seconds since "
                        f"1970-01-01 00:00 UTC, 0 to {LAST_DATE_EPOCH} (or unset: now)")
    return int(text)


MODELS = ("inception_v3", "googlenet")
DATASETS = ("cifar10", "digits", "fake")
OPTIMIZERS = ("adam", "sgd")
BACKBONES = ("full", "frozen")
AMPS = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")  # or cuda:N
FEATURE_CACHES = ("auto", "off")  # auto: a frozen run trains on cached trunk features (feature_cache.py)

# The smallest input each model accepts. Inception-v3's auxiliary arm pools 17x17 -> 5x5
# and then runs a 5x5 conv, so with the arm it needs the full 299x299 input; without the
# arm its stride-2 stem still needs 75x75. GoogLeNet's aux arms adaptive-pool, 15 px is
# the least that survives its five stride-2 stages (checked with torchvision 0.29).
MIN_IMAGE_SIZE = {("inception_v3", True): 299, ("inception_v3", False): 75,
                  ("googlenet", True): 15, ("googlenet", False): 15}
DEFAULT_IMAGE_SIZE = {"inception_v3": 299, "googlenet": 224}
MAX_SEED = 2**32 - 1  # numpy.random.seed refuses more
MAX_INT = 2**63 - 1   # int64
MAX_TEXT = 4096       # characters of a text field: Linux's PATH_MAX; below schema.MLFLOW_MAX_PARAM_CHARS
MAX_TARGETS = 100     # target_accs entries (one summary metric each)


def cores() -> int:
    """CPU cores this process may run on: its affinity mask, what a Slurm task's cpus-per-task or a cgroup
    limit leaves it (os.cpu_count() is the whole node's: 64 threads in an 8-core Slurm task)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one fine-tuning run. Every field is an MLflow param."""

    model: str = "inception_v3"          # inception_v3 (the lecture's, 1 aux arm) | googlenet (2 aux arms)
    weights: str = "imagenet"            # imagenet | none | path to a state dict (.pth)
    dataset: str = "cifar10"             # cifar10 (50,000/10,000) | digits (sklearn, offline, 1,437/360)
                                         # | fake (CIFAR-10 shapes, random pixels: timing only)
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
    feature_cache: str = "auto"          # auto (on for backbone=frozen, off otherwise) | off
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
        unknown = sorted((k for k in data if k not in known), key=str)  # YAML keys can be numbers
        if unknown:
            raise UserError(f"{source}: unknown config key {shown(unknown[0])}; allowed: {', '.join(known)}")
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
        if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
            raise UserError(f"device: {device!r} asked for but this machine has CUDA devices "
                            f"0..{torch.cuda.device_count() - 1}")
        return dataclasses.replace(
            self,
            device=device,
            image_size=self.image_size if self.image_size is not None else DEFAULT_IMAGE_SIZE[self.model],
            eval_batch_size=self.eval_batch_size if self.eval_batch_size is not None else 2 * self.batch_size,
            threads=self.threads if self.threads is not None else cores(),
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
    """The mapping at the top of a YAML file (see read_yaml_mapping)."""
    return read_yaml_mapping(path)[1]


def read_yaml_mapping(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """A YAML file's text and the mapping at its top. An empty file (or only comments) is an empty
    mapping: every field keeps its default. Anything that is not a readable regular file is refused, as
    are a file over strict_yaml.MAX_BYTES (before parsing) and a key written twice in one mapping."""
    name = short(str(path)) or "''"
    problem = file_problem(str(path))
    if problem:
        raise UserError(f"{name}: {problem}")
    try:
        text = strict_yaml.read_bytes(path).decode("utf-8")  # the size limit comes before any parsing
        data = strict_yaml.load(text)
    except strict_yaml.TooLarge as e:
        raise UserError(f"{name}: {e}") from None
    except strict_yaml.DuplicateKey as e:
        raise UserError(f"{name}: {short(str(e), 300)}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: not UTF-8 text (byte {e.start}); give a YAML file") from None
    except OSError as e:
        raise UserError(f"{name}: cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        if "nesting depth" in str(getattr(e, "problem", "")):  # libyaml stops at 1,000 levels
            raise UserError(f"{name}: not valid YAML (nested too deeply)") from None
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"{name}: not valid YAML{where}") from None
    except ValueError:  # PyYAML's int() of a number past Python's 4300-digit limit
        raise UserError(f"{name}: not valid YAML (a number of more than 4300 digits)") from None
    except RecursionError:  # PyYAML's own (pure Python) parser, where libyaml is missing
        raise UserError(f"{name}: not valid YAML (nested too deeply)") from None
    if data is None:  # empty, or only comments
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{name}: expected a mapping of config fields at the top level, "
                        f"got a {type(data).__name__}")
    return text, data


def file_problem(path: str) -> str | None:
    """Why `path` cannot be read as a file (None if it can): empty, missing, a directory, a device..."""
    if not path:
        return "an empty path"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as e:  # a name too long, a component that is a file, a loop of links
        return f"not a usable path ({e.strerror})"
    except ValueError:  # an embedded NUL character
        return "not a usable path (it contains a NUL character)"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(mode):  # /dev/null, a FIFO (reading one could block), a socket
        kind = "a character device" if stat.S_ISCHR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
        return f"is {kind}, not a regular file"
    return None


def dir_problem(path: str) -> str | None:
    """Why `path` cannot be (or become) a writable folder (None if it can); checked before a run exists."""
    if not path:
        return "an empty path"
    p = Path(path).absolute()
    try:
        while not p.exists():  # the nearest folder that exists is where it would be created
            if p.is_symlink():  # exists() is False for a symlink loop (ELOOP) or a dangling link
                return f"{short(str(p))} is a symlink that does not resolve (a loop, or a missing target)"
            p = p.parent
    except (OSError, ValueError) as e:  # a name too long, an embedded NUL
        return f"not a usable path ({getattr(e, 'strerror', None) or e})"
    if not p.is_dir():
        return f"{short(str(p))} exists and is not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{short(str(p))} is not writable"
    return None


def short(text: str, limit: int = 120) -> str:
    """`text` on one line (control characters escaped), cut in the middle to `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2 + 3:]}"


_SHOWN = reprlib.Repr()  # Python 3.11's Repr takes no arguments
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxset = 3, 8, 8, 8
_SHOWN.maxstring, _SHOWN.maxlong, _SHOWN.maxother = 120, 60, 120


def shown(value: Any) -> str:
    """repr() for an error message, bounded however large or deeply aliased the YAML value is."""
    try:
        return _SHOWN.repr(value)
    except ValueError:  # an int past Python's 4300-digit str() limit
        return f"an integer of {value.bit_length()} bits" if isinstance(value, int) else "(unprintable)"


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
    kind = next(k for k in _COERCE if typ.startswith(k))
    try:
        out = _COERCE[kind](value)
    except (ValueError, TypeError, OverflowError):  # OverflowError: float(10**400)
        what = "comma-separated integers" if kind == "tuple" else typ.split(" ")[0]
        raise UserError(f"{source}: {name} must be {what}, got {shown(value)}") from None
    if kind == "int" and abs(out) > MAX_INT:  # it would not fit an int64 downstream (torch, SQL, MLflow)
        raise UserError(f"{source}: {name} must be an integer of at most {MAX_INT}, got {shown(out)}")
    if kind == "str" and len(out) > MAX_TEXT:
        raise UserError(f"{source}: {name} must be at most {MAX_TEXT} characters, got {len(out)}")
    if kind == "str" and not out.isprintable():  # no choice holds one; in a path a newline or NUL is a typo
        raise UserError(f"{source}: {name} must not contain control characters, got {shown(out)}")
    return out


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s not in _TRUE | _FALSE:
        raise ValueError
    return s in _TRUE


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    return int(value.strip()) if isinstance(value, str) else int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def _to_ints(value: Any) -> tuple[int, ...]:
    """'50,60' or [50, 60] (or a lone 70) -> (50, 60); whole numbers only."""
    items = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
    if any(isinstance(x, bool) for x in items):
        raise ValueError
    floats = [float(str(x).strip()) for x in items]
    if not all(x.is_integer() for x in floats):
        raise ValueError
    return tuple(int(x) for x in floats)


def _to_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError
    return str(value).strip()


_COERCE = {"bool": _to_bool, "int": _to_int, "float": _to_float, "tuple": _to_ints, "str": _to_text}


def _validate(c: RunConfig) -> None:
    def bad(field: str, allowed: str) -> None:
        raise UserError(f"{field}: got {shown(getattr(c, field))}; allowed: {allowed}")

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
    if c.feature_cache not in FEATURE_CACHES:
        bad("feature_cache", " | ".join(FEATURE_CACHES))
    if c.weights not in ("imagenet", "none"):
        problem = file_problem(c.weights)
        # A missing file named like a state dict passes here (a config read back from MLflow on another
        # machine); model.build names it before any run exists. Anything else must be a readable file.
        if problem and not (problem == "no such file" and c.weights.endswith((".pth", ".pt", ".bin", ".ckpt"))):
            bad("weights", f"imagenet | none | the path of a state-dict file ({problem})")
    if not (c.device in DEVICES or (c.device.startswith("cuda:") and c.device[5:].isascii() and c.device[5:].isdigit())):
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
    if not 0 <= c.seed <= MAX_SEED:
        bad("seed", f"an integer from 0 to {MAX_SEED} (numpy's seed range)")
    for f in ("train_size", "test_size"):
        if getattr(c, f) is not None and getattr(c, f) < 10:
            bad(f, "none (all) or an integer >= 10 (one image per class at least)")
    if c.threads is not None and c.threads < 1:
        bad("threads", "an integer >= 1")
    if not c.target_accs or len(c.target_accs) > MAX_TARGETS or any(not 0 < t <= 100 for t in c.target_accs):
        bad("target_accs", f"1 to {MAX_TARGETS} comma-separated percentages in (0, 100]")
    if c.image_size is not None:
        need = MIN_IMAGE_SIZE[(c.model, c.aux_weight > 0)]
        if c.image_size < need:
            why = (" (its auxiliary arm needs 299x299; use aux_weight=0 for smaller images)"
                   if c.model == "inception_v3" and c.aux_weight > 0 else "")
            bad("image_size", f">= {need} px for {c.model}{why}")
