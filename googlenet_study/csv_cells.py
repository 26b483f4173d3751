"""CSV cells are data: every CSV the tool writes goes through here, so that no cell is a formula.

A run name or param value is text anyone with write access to the tracking store chose; a spreadsheet
opening runs.csv reads a cell that begins with `=`, `+`, `-` or `@` (after white space, full-width
forms such as `＝` included, or a tab or carriage return) as a formula: `=HYPERLINK("http://x", "y")` becomes a live link. The OWASP rule for CSV
injection: such a text cell is written with a leading `'`, which spreadsheets show as text and which a
reader of the file can strip. Numbers stay numbers: a float -1.5 is written as -1.5, and so is a text
cell that is only a decimal number ("-1.5", "+3", "-1e-05"): a spreadsheet reads it as that number."""

from __future__ import annotations

import csv
import io
import os
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


def write_per_key(first, rest, key: str, path: str | Path) -> Path:
    """The bytes write_frame(first.merge(rest, on=key)) writes (rest's columns after first's, as named), for a
    `first` of one row per key (runs.csv: each run's columns) and a long `rest` of numbers (its epochs),
    without the merge: pandas writes each row of `first` once, and that text begins each of its key's lines;
    rest's numbers are formatted here a column at a time. At 10,000 runs x 30 epochs to_csv of the merge took
    ~17 s, most of it formatting every run's ~40 cells again on each of its 30 lines."""
    import numpy as np
    import pandas as pd

    values = rest.drop(columns=key)
    for c, t in values.dtypes.items():  # numbers only: a text cell needs the guard, a float32 numpy's own text
        if not (isinstance(t, np.dtype) and (t == np.float64 or t.kind in "biu")):
            raise TypeError(f"write_per_key: column {c!r} of rest is {t}, not a number")
    at = pd.Index(first[key]).get_indexer(rest[key])  # each rest row's row of `first` (-1: none, the merge drops it)
    order = np.argsort(at, kind="stable")[np.count_nonzero(at < 0):]  # the merge's order: first's, then rest's
    columns = [np.array(_row_texts(first), dtype=object)[at[order]].tolist()]
    for c in values:
        a = values[c].to_numpy()[order]
        text = list(map(repr, a.tolist()))  # the shortest text that reads back as the float: to_csv's, faster
        if a.dtype.kind == "f":
            for i in np.flatnonzero(np.isnan(a)).tolist():
                text[i] = ""  # NaN: an empty cell, to_csv's na_rep
        columns.append(text)
    header = io.StringIO()
    csv.writer(header, lineterminator=os.linesep).writerow([cell(c) for c in [*first.columns, *values.columns]])
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(header.getvalue())
        f.writelines(",".join(row) + os.linesep for row in zip(*columns))
    return Path(path)


def _row_texts(df) -> list[str]:
    """Each row of write_frame(df) without its line end, as pandas formats and quotes it. A line end inside a
    quoted cell follows an odd number of '"' in its row: each quoted cell has an even number of them."""
    rows, part = [], ""
    for line in safe_frame(df).to_csv(index=False, header=False, lineterminator="\n").split("\n")[:-1]:
        part += line
        if part.count('"') % 2:
            part += "\n"
        else:
            rows.append(part)
            part = ""
    return rows
