"""runs.csv's writer (csv_cells.write_per_key, issue 28): each run's cells are formatted once and begin each of
its epochs' lines, and the file is byte for byte what write_frame of the merged frame (one row per run per
epoch) writes: pandas' number text, NaN an empty cell, every text cell through the formula guard, pandas'
quoting and line ends."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from googlenet_study import csv_cells

FORMULA = '=HYPERLINK("http://x","y")'
# Text a spreadsheet would run, text to quote (comma, quote, line ends), unicode, text that is a number.
TEXTS = [FORMULA, "+1+1", "-2", "@SUM(A1)", "\t=1", "\r=1", " =1", "\uff1d1+1", "\u22121", "a,b", 'say "hi"',
         "two\nlines", "cr\rin", "crlf\r\n", "\n=1", "", "naïve ✓ 日本", "-1.5", "plain", "'quoted"]
FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-300, 1e16, 0.1 + 0.2, 5e-324, 1.7976931348623157e308,
          1e-05, 123456789.0, -1.5, 2.0]


def expected(first: pd.DataFrame, rest: pd.DataFrame) -> bytes:
    """What runs.csv was before the writer: the merged frame through write_frame's cells and to_csv."""
    return csv_cells.safe_frame(first.merge(rest, on="run_id")).to_csv(index=False).encode()


def written(first, rest, tmp_path) -> bytes:
    return csv_cells.write_per_key(first, rest, "run_id", tmp_path / "runs.csv").read_bytes()


@pytest.fixture
def messy():
    """One run per text (one of them with no epochs), every kind of column runs.csv has; epochs out of run
    order, one of a run the merge drops."""
    k = len(TEXTS)
    first = pd.DataFrame({
        "run_id": [f"r{i}" for i in range(k - 1)] + ["=r,\"id\""],
        "run_name": TEXTS,
        "configuration": pd.Categorical([TEXTS[i % 4] for i in range(k)]),
        "seed": pd.array([i if i % 3 else None for i in range(k)], dtype="Int64"),
        "lr": [FLOATS[i % len(FLOATS)] for i in range(k)],
        "epochs": [3.0 * i for i in range(k)],  # a float column that holds integers
        "batch_size": list(range(k)),
        "weights": [None if i % 5 == 0 else TEXTS[-i] for i in range(k)],
        "mixed": [TEXTS[i] if i % 2 else FLOATS[i % len(FLOATS)] for i in range(k)],  # text and numbers, object
        "study": pd.array([None if i % 2 else "s" for i in range(k)], dtype="str"),
        "reached_50": [i % 2 == 0 for i in range(k)],
    })
    ids = list(first["run_id"][1:])  # run r0 has no epochs
    run_id = [ids[(3 * j) % len(ids)] for j in range(5 * len(ids))] + ["not-a-run"]
    m = len(run_id)
    rest = pd.DataFrame({
        "run_id": run_id,
        "epoch": np.arange(m) % 7 + 1,
        "test_acc": [FLOATS[j % len(FLOATS)] for j in range(m)],
        "=acc": np.random.default_rng(0).standard_normal(m) * 10.0 ** np.arange(m) % 40,  # a formula-like name
        "reached": np.arange(m) % 3 == 0,
    })
    return first, rest


def test_runs_csv_is_byte_for_byte_what_write_frame_of_the_merge_writes(messy, tmp_path):
    first, rest = messy
    text = written(first, rest, tmp_path)
    assert text == expected(first, rest)
    # What the comparison covers: formulas guarded (a key, a category, the header), cells quoted, run r0
    # (no epochs) and the epochs of no run dropped, each run's cells on each of its epochs' lines.
    text = text.decode()
    assert text.startswith("run_id,run_name,") and text.split("\n")[0].endswith(",epoch,test_acc,'=acc,reached")
    assert ',"\'=HYPERLINK(""http://x"",""y"")",' in text and '\n"\'=r,""id""",' in text
    assert "\nr3,'@SUM(A1),'@SUM(A1)," in text and "\nr7,'\uff1d1+1," in text and '\nr11,"two\nlines",' in text
    assert "\nr0," not in text and "not-a-run" not in text and text.count("\nr16,naïve ✓ 日本,") == 5
    assert ",1e-300," in text and ",-0.0," in text and ",0.30000000000000004," in text and ",inf," in text


def test_every_float_is_written_as_pandas_writes_it(tmp_path):
    """Random bit patterns: every exponent, subnormals, both zeros, infinities; NaN payloads an empty cell."""
    bits = np.random.default_rng(1).integers(0, 2**64, 20_000, dtype=np.uint64)
    first = pd.DataFrame({"run_id": ["a", "b"], "name": ["x", "y"]})
    nan_payloads = np.array([0x7FF8000000000001, 0xFFF8000000000000], dtype=np.uint64).view(np.float64)
    v = np.concatenate([bits.view(np.float64), FLOATS, nan_payloads, np.arange(100) * 1e15])
    rest = pd.DataFrame({"run_id": np.where(np.arange(len(v)) % 2, "a", "b"), "v": v,
                         "i": np.arange(len(v)) - 10_000})
    assert rest["v"].isna().sum() >= 3 and np.isinf(rest["v"]).sum() == 2
    assert written(first, rest, tmp_path) == expected(first, rest)


def test_no_epoch_of_a_counted_run_leaves_the_header_only(messy, tmp_path):
    first, rest = messy
    none = rest[rest["run_id"] == "not-a-run"]
    assert written(first, none, tmp_path) == expected(first, none)
    assert written(first, none, tmp_path).count(b"\n") == 1


def test_a_text_column_per_epoch_is_refused_not_written_unguarded(messy, tmp_path):
    first, rest = messy
    with pytest.raises(TypeError, match="'note' of rest is"):
        written(first, rest.assign(note="=1"), tmp_path)
