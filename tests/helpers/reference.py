"""What docs/reference.md documents: the names a run records that its "What MLflow holds" section (or, for
config fields, the config table) covers, read as regular expressions."""

from __future__ import annotations

import dataclasses
import re

from googlenet_study import schema
from googlenet_study.config import RunConfig

from helpers import ROOT

REFERENCE = ROOT / "docs" / "reference.md"  # README links to it: the reference moved out of the newcomer's page
MLFLOW_SECTION = "## What MLflow holds for every run"
CONFIG_SECTION = "## The run config"
FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
_NUMBER = r"\d+(?:\.\d+)?"
# What a placeholder in the reference may stand for: nothing wider, so a placeholder cannot document everything.
PLACEHOLDERS = {
    "<field>": "|".join(FIELDS),
    "<objective>": "|".join([*schema.SUMMARY_METRICS, *schema.EPOCH_METRICS,
                             re.escape(schema.TIME_TO_TARGET_PREFIX) + _NUMBER]),
}


def reference_section(title: str) -> str:
    """From `title` to the next heading, fenced code left out."""
    text = REFERENCE.read_text()
    start = text.index(title) + len(title)
    nxt = re.search(r"^#{1,3} ", text[start:], re.M)
    body = text[start:start + nxt.start()] if nxt else text[start:]
    return re.sub(r"```.*?```", "", body, flags=re.S)


def pattern(token: str) -> str:
    """`time_to_test_acc_P`, `resolved.<field>`, `n_trials_{a,b}` -> a regular expression."""
    out = ""
    for part in re.split(r"(<[a-z_]+>|\{[^}]*\}|_P$)", token):
        if part in PLACEHOLDERS:
            out += f"(?:{PLACEHOLDERS[part]})"
        elif part.startswith("<"):
            raise AssertionError(f"docs/reference.md uses placeholder {part} that tests/helpers/reference.py "
                                 f"does not know")
        elif part.startswith("{"):
            out += "(?:" + "|".join(map(re.escape, part[1:-1].split(","))) + ")"
        elif part == "_P":
            out += "_" + _NUMBER
        else:
            out += re.escape(part)
    return out


def documented_patterns() -> list[str]:
    mlflow_section = reference_section(MLFLOW_SECTION)
    assert "every field above" in mlflow_section  # the config fields are documented in the table above it
    fields = [t for t in re.findall(r"`([^`\n]+)`", reference_section(CONFIG_SECTION)) if t in FIELDS]
    return [pattern(t) for t in re.findall(r"`([^`\n]+)`", mlflow_section)] + [re.escape(f) for f in fields]


def undocumented(names) -> set[str]:
    """The names docs/reference.md's "What MLflow holds" (or, for config fields, the config table) does not cover."""
    patterns = documented_patterns()
    return {n for n in names if not any(re.fullmatch(p, n) for p in patterns)}
