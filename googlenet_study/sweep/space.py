"""A study file's `space:` block: each searched field a list of values or a numeric range, checked against
the config; the grid's points and the corners checked before a sweep. Its own module, a floor below sweep/study_file.py:
a trial samples a space and budget.py checks one without the rest of the study file."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import yaml

from ..config import RunConfig, UserError, field_names, short, shown
from ..schema import MLFLOW_MAX_PARAM_CHARS

MAX_GRID_CHECK = 20_000  # grid points validated one by one; beyond this only each value is checked
MAX_TRIALS = 100_000     # trials of one study (a grid point is an Optuna trial row, enqueued up front)


@dataclass(frozen=True)
class Range:
    """A numeric interval searched by tpe/random/nsga2 (never by grid)."""
    low: float
    high: float
    log: bool = False
    step: float | None = None
    is_int: bool = False


def number(v: Any) -> float | None:
    """YAML 1.1 reads `1e-5` (no dot) as a string: accept numeric strings in ranges."""
    if isinstance(v, bool):
        return None
    try:
        if isinstance(v, (int, float)):
            float(v)  # an int beyond a float's range cannot be an Optuna bound
            return v
        return float(v) if isinstance(v, str) else None
    except (ValueError, OverflowError):
        return None


def dimension(k: str, v: Any, base: dict, err) -> tuple | Range:
    """One searched field: a list of values (categorical or grid) or a numeric range."""
    key = f"space.{k}"
    if k not in field_names():
        raise err(key, f"not a config field; allowed: {', '.join(field_names())}")
    if isinstance(v, list):
        return _values(k, v, base, err)
    if isinstance(v, dict):
        return _range(k, v, base, err)
    raise err(key, f"must be a list of values or a range {{low, high}}, got {type(v).__name__}")


def _values(k: str, v: list, base: dict, err) -> tuple:
    key = f"space.{k}"
    if not v:
        raise err(key, "an empty list searches nothing")
    if any(isinstance(x, (dict, list)) for x in v):
        raise err(key, "list values must be scalars (numbers, strings, booleans)")
    if len({(type(x), x) for x in v}) != len(v):  # by type too: 1, 1.0 and true are three values
        raise err(key, f"repeated values in {shown(v)}")
    if len(str(v)) > MLFLOW_MAX_PARAM_CHARS:  # the parent run records the list as the param space.<field>
        raise err(key, f"{len(v)} values do not fit one MLflow param ({MLFLOW_MAX_PARAM_CHARS} characters); search a range")
    for x in v:
        _check_value(k, x, base, err)
    return tuple(v)


def _range(k: str, v: dict, base: dict, err) -> Range:
    key = f"space.{k}"
    ftype = str(RunConfig.__dataclass_fields__[k].type)
    extra = set(v) - {"low", "high", "log", "step"}
    if extra or not {"low", "high"} <= set(v):
        raise err(key, "a range is {low: L, high: H} with optional log: true|false and step: S")
    if not ftype.startswith(("int", "float")):
        raise err(key, f"{k} is not numeric; give a list of values")
    low, high, step = number(v["low"]), number(v["high"]), v.get("step")
    log = v.get("log", False)
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        raise err(key, f"low and high must be finite numbers, got {shown(v['low'])}, {shown(v['high'])}")
    if not low < high:
        raise err(key, f"low must be below high, got low={low!r} high={high!r}")
    if not isinstance(log, bool):
        raise err(key, f"log must be true or false, got {shown(log)}")
    if log and low <= 0:
        raise err(key, "a log range needs low > 0")
    if step is not None:
        step = number(step)
        if step is None or not math.isfinite(step) or step <= 0:
            raise err(key, f"step must be a number > 0 (finite), got {shown(v['step'])}")
        if log:
            raise err(key, "step and log cannot be combined (Optuna)")
    is_int = isinstance(low, int) and isinstance(high, int) and (step is None or float(step).is_integer())
    if ftype.startswith("int") and not is_int:
        raise err(key, f"{k} is an integer field: low, high (and step) must be integers")
    for x in (low, high):
        _check_value(k, x, base, err)
    return Range(low, high, log, step, is_int and ftype.startswith("int"))


def _check_value(k: str, x: Any, base: dict, err) -> None:
    try:
        RunConfig.from_dict({**base, k: x}, source="")
    except UserError as e:
        msg = str(e).lstrip(": ")
        raise err(f"space.{k}", f"value {shown(x)}: {msg}") from None


def grid_points(space: dict, err) -> tuple[dict, ...]:
    """Every grid point, in file order (the last dimension varies fastest)."""
    names = list(space)
    size = math.prod(len(space[k]) for k in names)
    if size > MAX_TRIALS:
        raise err("space", f"the grid has {size} points; at most {MAX_TRIALS} (each is an Optuna trial)")
    return tuple(dict(zip(names, combo)) for combo in itertools.product(*(space[k] for k in names)))


def corners(spec) -> tuple[dict, ...]:
    """The points worth checking before a sweep: every grid point, or the corners of the box of each
    dimension's extreme values (ranges); none when there are more than MAX_GRID_CHECK of them.
    `spec` is a study.StudySpec (here, as in budget.py, by its attributes: sweep/study_file.py sits a floor up)."""
    if spec.grid and len(spec.grid) <= MAX_GRID_CHECK:
        return spec.grid
    ends = {k: ((v.low, v.high) if isinstance(v, Range) else v) for k, v in spec.space.items()}
    if math.prod(len(e) for e in ends.values()) > MAX_GRID_CHECK:
        return ()
    return tuple({k: (int(x) if isinstance(spec.space[k], Range) and spec.space[k].is_int else x)
                  for k, x in zip(ends, c)} for c in itertools.product(*ends.values()))


def check_combinations(spec) -> None:
    """Fields can be fine alone and wrong together (image_size vs aux_weight): check what we can."""
    for p in corners(spec):
        try:
            spec.config(p)
        except UserError as e:
            combo = ", ".join(f"{k}={shown(v)}" for k, v in p.items())
            raise UserError(f"{short(spec.path, 300)}: space: the combination {combo} is invalid: "
                            f"{str(e).split(': trial: ')[-1]}") from None


def dump_space(spec) -> str:
    return yaml.safe_dump(spec.space_dict(), sort_keys=False)
