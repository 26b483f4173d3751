"""A study file (experiments/*.yaml): what a sweep searches, validated before anything is created.

Every error names the file and the key and ends the command with exit status 2 before an
Optuna study or an MLflow run exists (see cli.py). `StudySpec` is what sweep.py runs."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .config import RunConfig, UserError, field_names, load_yaml_mapping

KEYS = ("name", "experiment", "base", "space", "sampler", "sampler_seed", "objectives", "pruner",
        "n_trials", "max_retries", "repeats")
SAMPLERS = ("grid", "tpe", "random", "nsga2")
PRUNERS = ("none", "median", "hyperband")
SUMMARY_METRICS = ("best_test_acc", "final_test_acc", "total_time_s")  # + time_to_test_acc_P
# Per-epoch metrics (engine.fit); as an objective they mean the last epoch's value.
EPOCH_METRICS = ("train_loss", "train_aux_loss", "train_total_loss", "train_acc", "test_loss", "test_acc",
                 "epoch_time_s", "train_time_s", "eval_time_s", "data_time_s", "elapsed_time_s",
                 "throughput_img_s")
MAX_GRID_CHECK = 20_000  # grid points validated one by one; beyond this only each value is checked


@dataclass(frozen=True)
class Range:
    """A numeric interval searched by tpe/random/nsga2 (never by grid)."""
    low: float
    high: float
    log: bool = False
    step: float | None = None
    is_int: bool = False


@dataclass(frozen=True)
class StudySpec:
    path: str
    text: str                                   # the file as written (logged as the parent's artifact)
    name: str
    experiment: str
    base: dict[str, Any]                        # config fields, file values + --set overrides
    space: dict[str, tuple | Range]             # tuple: categorical / grid values
    sampler: str
    sampler_seed: int
    objectives: tuple[tuple[str, str], ...]     # (direction, metric)
    pruner: str
    n_trials: int
    max_retries: int
    repeats: int
    grid: tuple[dict, ...] = field(default=(), repr=False)  # every grid point, in file order

    @property
    def directions(self) -> list[str]:
        return [d for d, _ in self.objectives]

    @property
    def metrics(self) -> list[str]:
        return [m for _, m in self.objectives]

    def config(self, params: dict[str, Any], **fixed: Any) -> RunConfig:
        """The run config of one trial: base, then the trial's params, then per-worker fields."""
        return RunConfig.from_dict({**self.base, **params, **fixed}, source=f"{self.path}: trial")

    def digest(self) -> str:
        """What may not change when a study is resumed (n_trials and max_retries may)."""
        d = {"base": self.base, "space": {k: (list(v) if isinstance(v, tuple) else v.__dict__)
                                          for k, v in self.space.items()},
             "sampler": self.sampler, "sampler_seed": self.sampler_seed, "objectives": self.objectives,
             "pruner": self.pruner, "repeats": self.repeats}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def space_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else {kk: vv for kk, vv in v.__dict__.items()
                                                           if vv is not None})
                for k, v in self.space.items()}


def load(path: str, sets: list[str] | None = None, n_trials: int | None = None) -> StudySpec:
    """Read and validate a study file; `sets` are `field=value` overrides of `base`."""
    raw = load_yaml_mapping(path)
    text = open(path).read()

    def err(key: str, msg: str) -> UserError:
        return UserError(f"{path}: {key}: {msg}")

    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise err(str(unknown[0]), f"unknown key; allowed: {', '.join(KEYS)}")

    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise err("name", f"must be a name of letters, digits, '.', '_' or '-', got {name!r}")
    experiment = raw.get("experiment", "googlenet-study")
    if not isinstance(experiment, str) or not experiment.strip():
        raise err("experiment", f"must be a non-empty string, got {experiment!r}")

    base = _mapping(raw.get("base", {}), "base", err)
    for k in base:
        if k not in field_names():
            raise err(f"base.{k}", f"not a config field; allowed: {', '.join(field_names())}")
    space_raw = _mapping(raw.get("space"), "space", err)
    if not space_raw:
        raise err("space", "must map at least one config field to a list of values or a range")
    for s in sets or []:
        k, eq, v = s.partition("=")
        k = k.strip().replace("-", "_")
        if not eq or k not in field_names():
            raise UserError(f"--set: expected field=value with a config field, got {s!r}")
        if k in space_raw:
            raise UserError(f"--set {k}: {k} is searched in {path}'s space; it cannot be fixed")
        base[k] = v
    try:
        base_cfg = RunConfig.from_dict(base, source=f"{path}: base")
    except UserError as e:
        # A base can be incomplete on its own (inception_v3 at 100 px is fine once the space sets
        # aux_weight=0): accept it if the space's first values complete it; combinations are checked below.
        firsts = {k: (v[0] if isinstance(v, list) and v else v.get("low") if isinstance(v, dict) else None)
                  for k, v in space_raw.items() if k in field_names()}
        try:
            base_cfg = RunConfig.from_dict({**base, **firsts}, source="")
        except UserError:
            raise _prefixed(e, f"{path}: base") from None

    space = {k: _dimension(k, v, base, err) for k, v in space_raw.items()}

    sampler = raw.get("sampler", "grid" if all(isinstance(v, tuple) for v in space.values()) else "tpe")
    if sampler not in SAMPLERS:
        raise err("sampler", f"got {sampler!r}; allowed: {' | '.join(SAMPLERS)}")
    if sampler == "grid":
        ranges = [k for k, v in space.items() if isinstance(v, Range)]
        if ranges:
            raise err(f"space.{ranges[0]}", "a range cannot be searched by sampler grid; give a list of values")
    sampler_seed = _int(raw.get("sampler_seed", 0), "sampler_seed", err, low=0)

    objectives = _objectives(raw.get("objectives", [{"maximize": "best_test_acc"}]), base_cfg, err)
    pruner = raw.get("pruner", "none")
    if pruner is None or pruner is False:
        pruner = "none"
    if pruner not in PRUNERS:
        raise err("pruner", f"got {pruner!r}; allowed: {' | '.join(PRUNERS)}")
    if pruner != "none" and len(objectives) > 1:
        raise err("pruner", f"{pruner} prunes on one objective; with {len(objectives)} objectives use none")
    max_retries = _int(raw.get("max_retries", 0), "max_retries", err, low=0)
    repeats = _int(raw.get("repeats", 1), "repeats", err, low=1)
    if repeats > 1 and "seed" in space:
        raise err("repeats", "with repeats > 1 each trial trains seeds base.seed .. base.seed+repeats-1; "
                             "remove seed from space")

    grid: tuple[dict, ...] = ()
    if sampler == "grid":
        names = list(space)
        grid = tuple(dict(zip(names, combo)) for combo in itertools.product(*(space[k] for k in names)))
    nt_key = "--n-trials" if n_trials is not None else "n_trials"
    nt = n_trials if n_trials is not None else raw.get("n_trials")
    if nt is None:
        if sampler != "grid":
            raise err("n_trials", f"required with sampler {sampler} (only grid defaults to its size)")
        nt = len(grid)
    nt = _int(nt, nt_key, err, low=1)
    if sampler == "grid" and nt > len(grid):
        raise err(nt_key, f"{nt} is more than the grid's {len(grid)} points")

    spec = StudySpec(path=str(path), text=text, name=name, experiment=experiment.strip(), base=base,
                     space=space, sampler=sampler, sampler_seed=sampler_seed, objectives=objectives,
                     pruner=pruner, n_trials=nt, max_retries=max_retries, repeats=repeats, grid=grid[:nt])
    _check_combinations(spec)
    return spec


# ---- pieces of validation -------------------------------------------------------------------
def _prefixed(e: UserError, where: str) -> UserError:
    msg = str(e)
    return UserError(msg if msg.startswith(where.split(":")[0]) else f"{where}: {msg}")


def _mapping(v: Any, key: str, err) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise err(key, f"must be a mapping of config fields, got {type(v).__name__}")
    return dict(v)


def _int(v: Any, key: str, err, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise err(key, f"must be an integer >= {low}, got {v!r}")
    return v


def _number(v: Any) -> float | None:
    """YAML 1.1 reads `1e-5` (no dot) as a string: accept numeric strings in ranges."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v) if isinstance(v, str) else None
    except ValueError:
        return None


def _dimension(k: str, v: Any, base: dict, err) -> tuple | Range:
    key = f"space.{k}"
    if k not in field_names():
        raise err(key, f"not a config field; allowed: {', '.join(field_names())}")
    ftype = str(RunConfig.__dataclass_fields__[k].type)
    if isinstance(v, list):
        if not v:
            raise err(key, "an empty list searches nothing")
        if any(isinstance(x, (dict, list)) for x in v):
            raise err(key, "list values must be scalars (numbers, strings, booleans)")
        if len(set(map(repr, v))) != len(v):
            raise err(key, f"repeated values in {v!r}")
        for x in v:
            _check_value(k, x, base, err)
        return tuple(v)
    if isinstance(v, dict):
        extra = set(v) - {"low", "high", "log", "step"}
        if extra or not {"low", "high"} <= set(v):
            raise err(key, "a range is {low: L, high: H} with optional log: true|false and step: S")
        if not ftype.startswith(("int", "float")):
            raise err(key, f"{k} is not numeric; give a list of values")
        low, high, step = _number(v["low"]), _number(v["high"]), v.get("step")
        log = v.get("log", False)
        if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
            raise err(key, f"low and high must be finite numbers, got {v['low']!r}, {v['high']!r}")
        if not low < high:
            raise err(key, f"low must be below high, got low={low!r} high={high!r}")
        if not isinstance(log, bool):
            raise err(key, f"log must be true or false, got {log!r}")
        if log and low <= 0:
            raise err(key, "a log range needs low > 0")
        if step is not None:
            step = _number(step)
            if step is None or step <= 0:
                raise err(key, f"step must be a number > 0, got {v['step']!r}")
            if log:
                raise err(key, "step and log cannot be combined (Optuna)")
        is_int = isinstance(low, int) and isinstance(high, int) and (step is None or float(step).is_integer())
        if ftype.startswith("int") and not is_int:
            raise err(key, f"{k} is an integer field: low, high (and step) must be integers")
        for x in (low, high):
            _check_value(k, x, base, err)
        return Range(low, high, log, step, is_int and ftype.startswith("int"))
    raise err(key, f"must be a list of values or a range {{low, high}}, got {type(v).__name__}")


def _check_value(k: str, x: Any, base: dict, err) -> None:
    try:
        RunConfig.from_dict({**base, k: x}, source="")
    except UserError as e:
        msg = str(e).lstrip(": ")
        raise err(f"space.{k}", f"value {x!r}: {msg}") from None


def _objectives(v: Any, base_cfg: RunConfig, err) -> tuple[tuple[str, str], ...]:
    allowed = list(SUMMARY_METRICS) + [f"time_to_test_acc_{p}" for p in base_cfg.target_accs]
    if not isinstance(v, list) or not v:
        raise err("objectives", "must be a list like [{maximize: best_test_acc}, {minimize: total_time_s}]")
    out = []
    for i, o in enumerate(v):
        key = f"objectives[{i}]"
        if not isinstance(o, dict) or len(o) != 1 or next(iter(o)) not in ("maximize", "minimize"):
            raise err(key, f"must be one of {{maximize: METRIC}} or {{minimize: METRIC}}, got {o!r}")
        direction, metric = next(iter(o.items()))
        if metric not in allowed and metric not in EPOCH_METRICS:
            hint = ("; time_to_test_acc_P needs P in base.target_accs"
                    if isinstance(metric, str) and metric.startswith("time_to_test_acc_") else "")
            raise err(key, f"unknown objective metric {metric!r}; allowed: {', '.join(allowed)}, "
                           f"or a per-epoch metric (last epoch){hint}")
        if metric in [m for _, m in out]:
            raise err(key, f"{metric} is already an objective")
        out.append((direction, metric))
    return tuple(out)


def _check_combinations(spec: StudySpec) -> None:
    """Fields can be fine alone and wrong together (image_size vs aux_weight): check what we can."""
    if spec.grid and len(spec.grid) <= MAX_GRID_CHECK:
        points = spec.grid
    else:  # ranges: the corners of the box of every dimension's extreme values
        ends = {k: ((v.low, v.high) if isinstance(v, Range) else v) for k, v in spec.space.items()}
        n = math.prod(len(e) for e in ends.values())
        points = tuple(dict(zip(ends, c)) for c in itertools.product(*ends.values())) if n <= MAX_GRID_CHECK else ()
    for p in points:
        try:
            spec.config({k: (int(v) if isinstance(spec.space[k], Range) and spec.space[k].is_int else v)
                         for k, v in p.items()})
        except UserError as e:
            combo = ", ".join(f"{k}={v!r}" for k, v in p.items())
            raise UserError(f"{spec.path}: space: the combination {combo} is invalid: "
                            f"{str(e).split(': trial: ')[-1]}") from None


def dump_space(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.space_dict(), sort_keys=False)
