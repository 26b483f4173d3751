"""The house is drawn from its imports: no circles, and every import points down a floor.

Read from the source with `ast` (no module is imported), function-level imports included: a lazy import
hides a circle from Python, not from a reader. Run on its own to print the floors and every arrow:
`python tests/test_imports.py`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "googlenet_study"

# Lowest first. A module may import any module on a lower floor, never one on its own floor or above.
# A package (tracking/, report/, sweep/) is one room on its floor; inside it, its modules only need no circle.
# A module named on its own ("sweep.space") is a room of its own: the sweep's folder holds its study file,
# space, pruners, outage riding and racing decision, which sit lower than the sweep's runner (the run
# pipeline and the race decision import them; they import none of the runner).
FLOORS = (
    ("schema", "stop", "sweep.outage", "csv_cells", "strict_yaml", "safe_files", "vision"),  # names, process-wide
                                                               # flags, file formats, opening files in shared
                                                               # folders, torchvision's import: they import
                                                               # nothing of ours
    ("config",),                          # the run's config, validated; YAML reading
    ("sweep.space", "sweep.pruners", "sweep.samplers"),  # a study file's search space: values and ranges of
                                          # config fields; its pruner and sampler names, each with its Optuna builder
    ("sweep.study_file", "device", "artifacts", "checkpoint_checks"),  # a study file; where a run computes;
                                          # run artefacts; a checkpoint's contents checked as data
    ("data", "model", "checkpoint"),      # stage 2 and 3; the resumable state
    ("budget",),                          # will it fit (split sizes from data, cores from config)
    ("statistics",),                      # survival, robust, profiles, ranking, significance, target (the
                                          # "reached P" rule the loop uses too): under the loop, report and race
    ("engine", "feature_cache", "tracking"),  # the loop; a frozen trunk's features; the only MLflow importer
    ("train",),                           # one run end to end
    ("sweep.race_decision",),             # which configurations still need seeds: statistics only, never the report
    ("report",),                          # reads runs back; a sweep calls its builder at the end
    ("sweep",),                           # many runs: study setup, trials, workers, Slurm
    ("cli",),                             # the command line
    ("__main__",),                        # python -m googlenet_study
)
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def module_name(path: Path) -> str:
    """googlenet_study/report/stats.py -> report.stats; a package's __init__ is the package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module but the package's own __init__ (a docstring: nothing imports it by name)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "__init__.py"}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file (module-level or in a function)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]  # the package `from .` refers to
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
            target = [*base, *(node.module.split(".") if node.module else [])]
            for alias in node.names:  # `from . import x`: x is a module, or a name in the package
                sub = ".".join([*target, alias.name])
                out.add(sub if sub in known else ".".join(target))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            for full in [mod] if mod else [a.name for a in node.names]:
                if full.startswith("googlenet_study."):
                    out.add(full.removeprefix("googlenet_study."))
    return {m for m in out if m in known and m != name and m != ""}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def room(module: str) -> str:
    """The module's room: the longest dotted prefix FLOORS names (sweep.space, else sweep)."""
    parts = module.split(".")
    return next(".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in FLOOR or i == 1)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every circle, once (Tarjan's strongly connected components with more than one module)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_floor():
    assert sorted({room(m) for m in modules()} - set(FLOOR)) == [], "add the new module to FLOORS"
    assert sorted(set(FLOOR) - {room(m) for m in modules()}) == [], "a module in FLOORS no longer exists"


def test_the_import_graph_has_no_circles():
    assert cycles(graph()) == []


def test_every_import_points_down_a_floor():
    g = graph()
    upward = [f"{a} (floor {FLOOR[room(a)]}) imports {b} (floor {FLOOR[room(b)]})"
              for a, bs in sorted(g.items()) for b in sorted(bs)
              if room(a) != room(b) and FLOOR.get(room(b), -1) >= FLOOR.get(room(a), 99)]  # no floor: test above
    assert upward == []


if __name__ == "__main__":
    g = graph()
    for i, rooms in reversed(list(enumerate(FLOORS))):
        print(f"floor {i}: " + ", ".join(rooms))
        for m in sorted(m for m in g if FLOOR.get(room(m)) == i):
            print(f"    {m} -> {', '.join(sorted(g[m])) or '-'}")
    print("circles:", cycles(g) or "none")
    sys.exit(1 if cycles(g) else 0)
