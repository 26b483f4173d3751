"""Every name once: a metric, param or tag name is spelled in schema.py and imported everywhere else.

Read from the source with `ast`, in milliseconds: a string literal in googlenet_study/ that equals a name
schema.py defines is a second spelling, which drifts the day one of them is renamed. Docstrings and
f-string text are prose, not names, and are not read."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

from googlenet_study import schema
from googlenet_study.config import RunConfig
from googlenet_study.sweep import study_file

PACKAGE = Path(schema.__file__).parent

# Schema names that are also another interface's own spelling: a RunConfig field (a YAML key and a
# --flag), a study file's key (sweep/study_file.py validates those by their YAML names), a command-line dest, or a
# plain word used as a DataFrame column or JSON field that merely coincides with a tag's name.
OTHER_INTERFACES = {f.name for f in fields(RunConfig)} | set(study_file.KEYS) | {
    "seeds",                                  # a trial's param: the seeds it trains (schema.TRIAL_PARAMS)
    "experiment", "file", "workers", "study", "trial",  # CLI dests and the report's column names
    "host",                                   # checkpoint.py's writer record (host, pid), a JSON field
}


# A name that is also a field of a file format of ours, with the same meaning but its own version history.
FILE_FIELDS = {
    ("feature_cache.py", "dataset_digest"),  # a feature cache's key (changing it is a new FORMAT)
    ("checkpoint.py", "config_hash"),        # a checkpoint's JSON fields (REQUIRED in every checkpoint)
    ("checkpoint.py", "elapsed_time_s"),
    ("train.py", "end_reason"),              # outage.Unavailable's attribute of that name
}
# Modules whose owners are converting them in the same change: none left (issue 19).
CONVERTING: set[str] = set()


def schema_names() -> set[str]:
    """Every name schema.py defines: its string constants and the strings in its tuples and sets."""
    names = set()
    for key, value in vars(schema).items():
        if key.startswith("_"):
            continue
        if isinstance(value, str):
            names.add(value)
        elif isinstance(value, (tuple, frozenset, set)):
            names |= {v for v in value if isinstance(v, str)}
    return names - OTHER_INTERFACES


def second_spellings(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    prose = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant):
            prose.add(id(body[0].value))  # a docstring
        if isinstance(node, ast.JoinedStr):
            prose |= {id(v) for v in node.values}  # f-string text
    return [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
            and id(node) not in prose and (path.name, node.value) not in FILE_FIELDS]


def test_schema_names_are_spelled_only_in_schema():
    names = schema_names()
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "schema.py"
             and str(p.relative_to(PACKAGE)) not in CONVERTING for hit in second_spellings(p, names)]
    assert found == [], "use the schema.py constant (add one if it has none):\n" + "\n".join(found)


def test_schema_defines_each_name_once():
    constants = [v for k, v in vars(schema).items() if not k.startswith("_") and isinstance(v, str)]
    assert sorted({n for n in constants if constants.count(n) > 1}) == []
