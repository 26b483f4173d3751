"""Numbers formatted for people, in one place (the CSVs keep full precision): missing is "-", an ERT that
never ends is "∞", an interval follows its value in brackets, and every time says its clock."""

from __future__ import annotations

import math

from .. import schema
from ..statistics.clock import Clock

EPOCH_CLOCK_METRICS = (schema.EPOCH_TIME, schema.TOTAL_TIME, schema.CLOCK)  # on the epoch clock whatever --clock


def missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x, digits: int = 1) -> str:
    return "-" if missing(x) else f"{x:.{digits}f}"


def ert(x) -> str:
    """An ERT: empty (NaN) or inf means no run reached the target, an infinite expected time."""
    return "∞" if missing(x) or math.isinf(x) else f"{x:.1f}"


def pct(m, lo, hi, scale: float = 100.0, digits: int = 1) -> str:
    """m [lo, hi] times scale (100: a fraction as percent); no brackets without an interval."""
    if missing(m):
        return "-"
    s = f"{scale * m:.{digits}f}"
    return s if missing(lo) else f"{s} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def ci(row, m: str, fmt=pct, scale: float = 100.0) -> str:
    """Summary columns m, m_ci_low, m_ci_high as "m [low, high]"; an empty high is unbounded, an empty ERT ∞."""
    v, lo, hi = row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"]
    if missing(v) or (m.endswith("_ert") and math.isinf(v)):
        return "∞" if m.endswith("_ert") else "-"
    if not missing(lo) and (missing(hi) or math.isinf(hi)):
        return f"{scale * v:.1f} [{scale * lo:.1f}, ∞]"
    return fmt(v, lo, hi, scale)


def seconds(clock: Clock) -> str:
    """The unit of a time column: '(s, epoch clock)'."""
    return f"(s, {clock.label})"
