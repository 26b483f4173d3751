"""CSV cells are data: every CSV the tool writes goes through here, so that no cell is a formula.

A run name or param value is text anyone with write access to the tracking store chose; a spreadsheet
opening runs.csv reads a cell that begins with `=`, `+`, `-` or `@` (after white space, full-width
forms such as `＝` included, or a tab or carriage return) as a formula: `=HYPERLINK("http://x", "y")` becomes a live link. The OWASP rule for CSV
injection: such a text cell is written with a leading `'`, which spreadsheets show as text and which a
reader of the file can strip. Numbers stay numbers: a float -1.5 is written as -1.5, and so is a text
cell that is only a decimal number ("-1.5", "+3", "-1e-05"): a spreadsheet reads it as that number."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Full-width forms a spreadsheet (Excel with East Asian input) folds to = + - @ before it parses a formula.
WIDE_FORMULA_STARTS = ("\uff1d", "\uff0b", "\uff0d", "\uff20", "\u2212", "\ufe62", "\ufe63", "\ufe66")
QUOTE = "'"
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")  # ASCII digits: not a wide one


def needs_quote(text: str) -> bool:
    """Does a spreadsheet read `text` as a formula? Its first character after any white space (a space,
    a line feed, a tab, an ideographic space: spreadsheets skip them) is = + - @, or a full-width one;
    or it begins with a tab or carriage return. A plain decimal number (ASCII digits, no space) is a number."""
    first = text.lstrip()[:1]
    starts = text.startswith(FORMULA_STARTS) or (first != "" and first in FORMULA_STARTS + WIDE_FORMULA_STARTS)
    return starts and not _NUMBER.fullmatch(text)


def cell(value: Any) -> Any:
    """The value as a CSV cell: text a spreadsheet would run gets a leading '; anything else unchanged."""
    return QUOTE + value if isinstance(value, str) and needs_quote(value) else value


def safe_frame(df):
    """A copy of a DataFrame whose header and text cells are safe; numeric columns are not touched.
    Only the distinct text values of a column are checked (runs.csv of 1,000 runs: ~30 names a column)."""
    from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype

    out = df.rename(columns=cell)
    for i, col in enumerate(out.columns):
        s = out.iloc[:, i]
        if is_numeric_dtype(s) or is_bool_dtype(s) or is_datetime64_any_dtype(s):
            continue
        values = s.astype(object)
        try:
            distinct = values.unique()
        except TypeError:  # unhashable cells (lists): each one
            out[col] = values.map(cell)
            continue
        fix = {v: QUOTE + v for v in distinct if isinstance(v, str) and needs_quote(v)}
        if fix:
            out[col] = values.map(lambda v: fix.get(v, v) if isinstance(v, str) else v)
    return out


def write_frame(df, path: str | Path) -> Path:
    """df.to_csv(path, index=False), every cell safe."""
    safe_frame(df).to_csv(path, index=False)
    return Path(path)


def write_rows(path: str | Path, rows: Iterable[dict], columns: Iterable[str]) -> Path:
    """csv.DictWriter's file (keys outside `columns` ignored), every cell safe."""
    columns = list(columns)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[cell(c) for c in columns], extrasaction="ignore")
        w.writeheader()
        w.writerows({cell(c): cell(r[c]) for c in columns if c in r} for r in rows)
    return Path(path)
