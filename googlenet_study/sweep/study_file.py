"""A study file (experiments/*.yaml): what a sweep searches, validated before anything is created.

Every error names the file and the key and ends the command with exit status 2 before an
Optuna study or an MLflow run exists (see cli.py). `StudySpec` is what sweep.py runs."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from .. import schema
from ..config import MAX_SEED, RunConfig, UserError, field_names, read_yaml_mapping, short, shown
from . import pruners, samplers
from .space import MAX_TRIALS, Range, check_combinations, dimension, grid_points, number

SAMPLERS = tuple(samplers.SAMPLERS)  # the names each table of name -> Optuna builder defines
PRUNERS = tuple(pruners.PRUNERS)
MAX_NAME = 128           # characters; the study's name also names its parent run, trial runs and checkpoints
MAX_EXPERIMENT = 256     # characters: MLflow's experiments.name column
# Each worker's sampler seed is sampler_seed + worker index (+ up to 1e8 for joiners, sweep.plan_workers);
# Optuna's samplers seed numpy, which takes seeds below 2**32.
MAX_SAMPLER_SEED = 2**31 - 1


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
    checkpoint_dir: str | None = None           # trials' checkpoints (shared storage on a cluster); None: default
    storage_timeout_s: float = 600.0            # s: how long a worker waits out its database or tracking server
    pruner_warmup_s: float | None = None        # s: wallclock_median prunes nothing before; None: one epoch
    report_targets: tuple[float, ...] | None = None  # percent: the final report's targets; None: its defaults
    racing: Racing | None = None                # seeds 0, 1, ... raced over the grid (sweep/race_decision.py); None: no race

    @property
    def directions(self) -> list[str]:
        return [d for d, _ in self.objectives]

    @property
    def metrics(self) -> list[str]:
        return [m for _, m in self.objectives]

    # ---- what the study does, decided here once: the runner's modules ask, never compare strings ----
    @property
    def is_grid(self) -> bool:
        """Every trial is a point of the grid queued up front (racing: a point and a seed); the sampler
        picks nothing, and a trial beyond the queue is surplus."""
        return self.sampler == samplers.GRID

    @property
    def races(self) -> bool:
        """Seeds 0, 1, ... raced over the grid in rounds (sweep/race_rounds.py) instead of a fixed queue."""
        return self.racing is not None

    @property
    def nests_seed_runs(self) -> bool:
        """repeats > 1: a trial's own run nests one run per seed; else the trial's run is its one seed's run."""
        return self.repeats > 1

    @property
    def prunes(self) -> bool:
        """A pruner may stop a trial at an epoch end (sweep/pruners.py)."""
        return pruners.prunes(self.pruner)

    @property
    def prunes_by_clock(self) -> bool:
        """Trials are compared at the same elapsed seconds (wallclock_median), not the same epoch."""
        return pruners.by_clock(self.pruner)

    def config(self, params: dict[str, Any], **fixed: Any) -> RunConfig:
        """The run config of one trial: base, then the trial's params, then per-worker fields."""
        return RunConfig.from_dict({**self.base, **params, **fixed}, source=f"{self.path}: trial")

    def digest(self) -> str:
        """What may not change when a study is resumed (n_trials and max_retries may)."""
        d = {"base": self.base, "space": {k: (list(v) if isinstance(v, tuple) else v.__dict__)
                                          for k, v in self.space.items()},
             "sampler": self.sampler, "sampler_seed": self.sampler_seed, "objectives": self.objectives,
             "pruner": self.pruner, "repeats": self.repeats}
        if self.pruner_warmup_s is not None:  # only when set: the digests of older studies stay as they were
            d["pruner_warmup_s"] = self.pruner_warmup_s
        if self.races:
            d["racing"] = self.racing.__dict__
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def space_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else {kk: vv for kk, vv in v.__dict__.items()
                                                           if vv is not None})
                for k, v in self.space.items()}


# A study file's keys are StudySpec's fields, in its order, but for what reading the file adds.
NOT_KEYS = ("path", "text", "grid")  # where it was read, the file as written, the grid spelled out
KEYS = tuple(f.name for f in fields(StudySpec) if f.name not in NOT_KEYS)


def load(path: str, sets: list[str] | None = None, n_trials: int | None = None,
         checkpoint_dir: str | None = None) -> StudySpec:
    """Read and validate a study file; `sets` are `field=value` overrides of `base`, `checkpoint_dir`
    (--checkpoint-dir) beats the file's."""
    text, raw = read_yaml_mapping(path)
    err = _errors(path)
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise err(str(unknown[0]), f"unknown key; allowed: {', '.join(KEYS)}")
    name, experiment = _names(raw, err)
    base = _base_fields(raw, err)
    space_raw = _mapping(raw.get("space"), "space", err)
    if not space_raw:
        raise err("space", "must map at least one config field to a list of values or a range")
    base = _with_sets(base, sets or [], space_raw, path)
    base_cfg = _base_config(base, space_raw, path)
    space = {k: dimension(k, v, base, err) for k, v in space_raw.items()}
    sampler = _sampler(raw, space, err)
    sampler_seed = _int(raw.get("sampler_seed", 0), "sampler_seed", err, low=0, high=MAX_SAMPLER_SEED)
    objectives = _objectives(raw.get("objectives", [{"maximize": schema.BEST_ACC}]), base_cfg, err)
    pruner = _pruner(raw, len(objectives), err)
    max_retries = _int(raw.get("max_retries", 0), "max_retries", err, low=0)
    repeats = _repeats(raw, base_cfg, space, err)
    grid = grid_points(space, err) if sampler == samplers.GRID else ()
    nt = _n_trials(raw, n_trials, sampler, grid, err)
    if nt * repeats > MAX_TRIALS:  # each repeat is a training run of its own
        raise err("repeats", f"{repeats} seeds x {nt} trials = {nt * repeats:,} training runs; "
                             f"at most {MAX_TRIALS:,} (the trial cap)")
    spec = StudySpec(path=str(path), text=text, name=name, experiment=experiment, base=base, space=space,
                     sampler=sampler, sampler_seed=sampler_seed, objectives=objectives, pruner=pruner, n_trials=nt,
                     max_retries=max_retries, repeats=repeats, grid=grid[:nt],
                     checkpoint_dir=_checkpoint_dir(raw, checkpoint_dir, err),
                     storage_timeout_s=_storage_timeout(raw, err), pruner_warmup_s=_pruner_warmup(raw, pruner, err),
                     report_targets=_report_targets(raw, err),
                     racing=_racing(raw, n_trials, sampler, pruner, base, space, len(grid), err))
    check_combinations(spec)
    return spec


# ---- the parts of a study file, in the order load() checks them ------------------------------------
def _errors(path: str) -> Callable[[str, str], UserError]:
    """err(key, message): the one-line error naming the file and the key."""
    where = short(str(path), 300)

    def err(key: str, msg: str) -> UserError:
        return UserError(f"{where}: {short(key)}: {msg}")
    return err


def _names(raw: dict, err) -> tuple[str, str]:
    """The study's name (also its parent run's name) and the MLflow experiment of its runs."""
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise err("name", f"must be a name of letters, digits, '.', '_' or '-', got {shown(name)}")
    if len(name) > MAX_NAME:
        raise err("name", f"must be at most {MAX_NAME} characters, got {len(name)}")
    experiment = raw.get("experiment", "googlenet-study")
    if not isinstance(experiment, str) or not experiment.strip():
        raise err("experiment", f"must be a non-empty string, got {shown(experiment)}")
    if len(experiment.strip()) > MAX_EXPERIMENT or not experiment.strip().isprintable():
        raise err("experiment", f"must be one line of at most {MAX_EXPERIMENT} characters, got {shown(experiment)}")
    return name, experiment.strip()


def _base_fields(raw: dict, err) -> dict:
    base = _mapping(raw.get("base", {}), "base", err)
    for k in base:
        if k not in field_names():
            raise err(f"base.{k}", f"not a config field; allowed: {', '.join(field_names())}")
    return base


def _with_sets(base: dict, sets: list[str], space_raw: dict, path: str) -> dict:
    """base with the command line's `--set field=value` overrides (a searched field cannot be fixed)."""
    out = dict(base)
    for s in sets:
        k, eq, v = s.partition("=")
        k = k.strip().replace("-", "_")
        if not eq or k not in field_names():
            raise UserError(f"--set: expected field=value with a config field, got {shown(s)}")
        if k in space_raw:
            raise UserError(f"--set {k}: {k} is searched in {short(str(path), 300)}'s space; it cannot be fixed")
        out[k] = v
    return out


def _base_config(base: dict, space_raw: dict, path: str) -> RunConfig:
    """base as a config. A base can be incomplete on its own (inception_v3 at 100 px is fine once the
    space sets aux_weight=0): accept it if the space's first values complete it; combinations are
    checked at the end (space.check_combinations)."""
    where = f"{short(str(path), 300)}: base"
    try:
        return RunConfig.from_dict(base, source=where)
    except UserError as e:
        firsts = {k: (v[0] if isinstance(v, list) and v else v.get("low") if isinstance(v, dict) else None)
                  for k, v in space_raw.items() if k in field_names()}
        try:
            return RunConfig.from_dict({**base, **firsts}, source="")
        except UserError:
            raise _prefixed(e, where) from None


def _sampler(raw: dict, space: dict, err) -> str:
    """grid by default when every dimension is a list, else tpe; grid cannot search a range."""
    sampler = raw.get("sampler", samplers.GRID if all(isinstance(v, tuple) for v in space.values()) else "tpe")
    if sampler not in SAMPLERS:
        raise err("sampler", f"got {shown(sampler)}; allowed: {' | '.join(SAMPLERS)}")
    ranges = [k for k, v in space.items() if isinstance(v, Range)]
    if sampler == samplers.GRID and ranges:
        raise err(f"space.{ranges[0]}", "a range cannot be searched by sampler grid; give a list of values")
    return sampler


def _pruner(raw: dict, n_objectives: int, err) -> str:
    pruner = raw.get("pruner", pruners.NONE)
    if pruner is None or pruner is False:
        pruner = pruners.NONE
    if pruner not in PRUNERS:
        raise err("pruner", f"got {shown(pruner)}; allowed: {' | '.join(PRUNERS)}")
    if pruners.prunes(pruner) and n_objectives > 1:
        raise err("pruner", f"{pruner} prunes on one objective; with {n_objectives} objectives use none")
    return pruner


def _pruner_warmup(raw: dict, pruner: str, err) -> float | None:
    """Seconds of a trial's clock before wallclock_median may prune it; None: the trial's first epoch."""
    v = raw.get("pruner_warmup_s")
    if v is None:
        return None
    if not pruners.by_clock(pruner):
        raise err("pruner_warmup_s", f"only with pruner wallclock_median (pruner is {pruner})")
    v = number(v)
    if v is None or not math.isfinite(v) or v < 0:
        raise err("pruner_warmup_s", f"must be a number of seconds >= 0, got {shown(raw['pruner_warmup_s'])}")
    return float(v)


def _repeats(raw: dict, base_cfg: RunConfig, space: dict, err) -> int:
    """Seeds per trial: base.seed .. base.seed+repeats-1."""
    repeats = _int(raw.get("repeats", 1), "repeats", err, low=1)
    if repeats > 1 and "seed" in space:
        raise err("repeats", "with repeats > 1 each trial trains seeds base.seed .. base.seed+repeats-1; "
                             "remove seed from space")
    if base_cfg.seed + repeats - 1 > MAX_SEED:
        raise err("repeats", f"seeds base.seed .. base.seed+repeats-1 must stay <= {MAX_SEED}, got {repeats}")
    return repeats


MAX_RACING_SEEDS = 1000  # seeds per configuration: trials are enqueued one per seed


@dataclass(frozen=True)
class Racing:
    """The study file's `racing:` block (sweep/race_decision.py decides the rounds, docs/sweeps.md explains them)."""
    min_seeds: int = 3            # seeds 0 .. min_seeds-1: every configuration gets these first
    max_seeds: int = 10           # no configuration gets more seeds
    # per comparison with the leader, per round (no promise over the race: sweep/race_decision.py): a number, or steps
    # ((from seeds, alpha), ...): 0.1 while the configurations have 3-4 seeds, 0.15 from 5 (docs/sweeps.md)
    alpha: float | tuple[tuple[int, float], ...] = ((3, 0.1), (5, 0.15))
    budget_s: float | None = None  # s of the runs' clocks, summed over runs: stop adding seeds past it

    def alpha_at(self, seeds: int) -> float:
        """The alpha of a round whose configurations have `seeds` runs each: the last step at or below it (the
        first step's below it)."""
        if isinstance(self.alpha, (int, float)):
            return float(self.alpha)
        return next((a for s, a in reversed(self.alpha) if s <= seeds), self.alpha[0][1])


RACING_KEYS = tuple(f.name for f in fields(Racing))  # the racing: block's keys


def parse_racing(v: Any, err: Callable[[str, str], Exception]) -> Racing:
    """The `racing:` block, validated; err(key, message) makes the one-line error."""
    if not isinstance(v, dict):
        raise err("racing", "must be a mapping like {min_seeds: 3, max_seeds: 10, alpha: 0.1, budget_s: null}")
    unknown = [k for k in v if k not in RACING_KEYS]
    if unknown:
        raise err(f"racing.{unknown[0]}", f"unknown key; allowed: {', '.join(RACING_KEYS)}")
    d = Racing()

    def count(k: str, low: int) -> int:
        x = v.get(k, getattr(d, k))
        if isinstance(x, bool) or not isinstance(x, int) or not low <= x <= MAX_RACING_SEEDS:
            raise err(f"racing.{k}", f"must be an integer in [{low}, {MAX_RACING_SEEDS}], got {x!r}")
        return x

    lo = count("min_seeds", 2)  # one seed per configuration gives a permutation test nothing to permute
    hi = count("max_seeds", 2)
    if hi < lo:
        raise err("racing.max_seeds", f"must be >= min_seeds ({lo}), got {hi}")
    alpha = _alpha(v.get("alpha", d.alpha), err)
    budget = v.get("budget_s")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise err("racing.budget_s", f"must be a number of seconds > 0, or null, got {budget!r}")
    return Racing(lo, hi, alpha, None if budget is None else float(budget))


def _alpha(a: Any, err) -> float | tuple[tuple[int, float], ...]:
    """racing.alpha: a number in (0, 1), or steps {from seeds: alpha} (the first also holds below its seeds)."""
    def number(x) -> bool:
        return not isinstance(x, bool) and isinstance(x, (int, float)) and 0 < x < 1

    if isinstance(a, (dict, tuple)):
        steps = dict(a)
        if not steps or not all(isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= MAX_RACING_SEEDS
                                and number(x) for k, x in steps.items()):
            raise err("racing.alpha", "steps must map seeds (an integer >= 2) to a number in (0, 1), e.g. "
                                      f"{{3: 0.1, 5: 0.15}}, got {a!r}")
        return tuple((int(k), float(steps[k])) for k in sorted(steps))
    if not number(a):
        raise err("racing.alpha", f"must be a number in (0, 1) or steps {{seeds: alpha}}, e.g. 0.1 or "
                                  f"{{3: 0.1, 5: 0.15}}, got {a!r}")
    return float(a)


def _racing(raw: dict, n_trials: int | None, sampler: str, pruner: str, base: dict, space: dict, n_grid: int,
            err) -> Racing | None:
    """The racing: block (sweep/race_decision.py): seeds 0, 1, ... raced over the grid of space; None without one."""
    if "racing" not in raw:
        return None
    r = parse_racing(raw["racing"], err)
    if "repeats" in raw:
        raise err("racing", "exclusive with repeats: the race decides each configuration's seeds; remove repeats")
    if "seed" in space or "seed" in base:
        raise err("racing", f"seeds 0 .. {r.max_seeds - 1} are the racing dimension; remove seed from "
                            f"{'space' if 'seed' in space else 'base (or --set)'}")
    if sampler != samplers.GRID:
        raise err("racing", f"races the configurations of a grid; sampler must be grid, got {sampler}")
    if pruners.prunes(pruner):  # a pruned run's end is the pruner's verdict, not a censoring the log-rank test may ignore
        raise err("racing", f"cannot be combined with pruner {pruner}; use pruner none (docs/sweeps.md, Racing)")
    if n_trials is not None or "n_trials" in raw:
        raise err("--n-trials" if n_trials is not None else "n_trials", "not with racing: the race decides the trials")
    if n_grid * r.max_seeds > MAX_TRIALS:
        raise err("racing.max_seeds",
                  f"{n_grid} configurations x {r.max_seeds} seeds is more than {MAX_TRIALS:,} trials")
    return r


def _n_trials(raw: dict, n_trials: int | None, sampler: str, grid: tuple, err) -> int:
    """--n-trials, else the file's n_trials, else (grid only) the grid's size."""
    key = "--n-trials" if n_trials is not None else "n_trials"
    nt = n_trials if n_trials is not None else raw.get("n_trials")
    if nt is None:
        if sampler != samplers.GRID:
            raise err("n_trials", f"required with sampler {sampler} (only grid defaults to its size)")
        nt = len(grid)
    nt = _int(nt, key, err, low=1, high=MAX_TRIALS)
    if sampler == samplers.GRID and nt > len(grid):
        raise err(key, f"{nt} is more than the grid's {len(grid)} points")
    return nt


def _checkpoint_dir(raw: dict, flag: str | None, err) -> str | None:
    """--checkpoint-dir, else the file's checkpoint_dir: a folder that is (or can become) writable."""
    from ..config import dir_problem

    key, v = ("--checkpoint-dir", flag) if flag is not None else ("checkpoint_dir", raw.get("checkpoint_dir"))
    if v is None:
        return None
    if not isinstance(v, str) or dir_problem(v):
        raise err(key, dir_problem(v) if isinstance(v, str) else f"must be a folder path, got {shown(v)}")
    return v


def _report_targets(raw: dict, err) -> tuple[float, ...] | None:
    """The test accuracies (percent) the sweep's final report times runs to; None: the report's defaults."""
    v = raw.get("report_targets")
    if v is None:
        return None
    nums = [number(x) for x in v] if isinstance(v, list) else []
    if not nums or any(x is None or not math.isfinite(x) or not 0 < x <= 100 for x in nums):
        raise err("report_targets", f"must be a list of percentages in (0, 100], e.g. [50, 70, 90], got {shown(v)}")
    return tuple(sorted({float(x) for x in nums}))


def _storage_timeout(raw: dict, err) -> float:
    v = raw.get("storage_timeout_s", 600)
    seconds = number(v) if isinstance(v, (int, float)) else None
    if seconds is None or not math.isfinite(float(seconds)) or seconds <= 0:
        raise err("storage_timeout_s", f"must be a number of seconds > 0, got {shown(v)}")
    return float(seconds)


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


def _int(v: Any, key: str, err, low: int, high: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise err(key, f"must be an integer >= {low}, got {shown(v)}")
    if high is not None and v > high:
        raise err(key, f"must be an integer <= {high}, got {shown(v)}")
    return v



def _objectives(v: Any, base_cfg: RunConfig, err) -> tuple[tuple[str, str], ...]:
    allowed = list(schema.SUMMARY_METRICS) + [schema.time_to_target(p) for p in base_cfg.target_accs]
    if not isinstance(v, list) or not v:
        raise err("objectives", "must be a list like [{maximize: best_test_acc}, {minimize: total_time_s}]")
    out = []
    for i, o in enumerate(v):
        key = f"objectives[{i}]"
        if not isinstance(o, dict) or len(o) != 1 or next(iter(o)) not in ("maximize", "minimize"):
            raise err(key, f"must be one of {{maximize: METRIC}} or {{minimize: METRIC}}, got {shown(o)}")
        direction, metric = next(iter(o.items()))
        if metric not in allowed and metric not in schema.EPOCH_METRICS:  # per-epoch: the last epoch's value
            hint = (f"; {schema.TIME_TO_TARGET_PREFIX}P needs P in base.target_accs"
                    if isinstance(metric, str) and schema.is_time_to_target(metric) else "")
            raise err(key, f"unknown objective metric {shown(metric)}; allowed: {', '.join(allowed)}, "
                           f"or a per-epoch metric (last epoch){hint}")
        if metric in [m for _, m in out]:
            raise err(key, f"{metric} is already an objective")
        out.append((direction, metric))
    return tuple(out)
