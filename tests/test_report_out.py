"""What `report` writes and deletes (issue 18): CSV cells that are data, never formulas; an --out folder
replaced only when a report wrote everything in it; a signal during the build ends the command at once
with 130/143 and leaves neither a half report nor a changed destination."""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from googlenet_study import csv_cells, report
from googlenet_study.cli import main as cli_main
from googlenet_study.config import UserError
from googlenet_study.report import outdir

from helpers import STATE_TIMEOUT_S, new_store, wait_for
from helpers.runs import log_run

FORMULA = '=HYPERLINK("http://x","y")'


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two configurations of two seeds; one configuration's weights param and run names are formulas."""
    root = tmp_path_factory.mktemp("out")
    uri = new_store(root / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("csv")
    for s in (0, 1):
        log_run(c, exp, FORMULA if s == 0 else "@SUM(1+1)", [0.5, 0.7 + 0.01 * s], seed=s,
                params={"weights": FORMULA, "lr": "-1.5"})  # param values no config would accept
        log_run(c, exp, f"plain-{s}", [0.4, 0.6 + 0.01 * s], seed=s, params={"weights": "none", "lr": "0.0001"})
    env = {"MLFLOW_TRACKING_URI": uri, "GOOGLENET_STUDY_CACHE": "off"}
    was = os.environ.get("GOOGLENET_STUDY_CACHE")
    os.environ["GOOGLENET_STUDY_CACHE"] = "off"  # no history cache in the user's home
    try:
        out, _ = report.build(report.Request("csv", targets=(50.0,), out=root / "first", uri=uri))
    finally:
        os.environ.pop("GOOGLENET_STUDY_CACHE") if was is None else os.environ.update(GOOGLENET_STUDY_CACHE=was)
    return {"root": root, "uri": uri, "env": env, "first": out}


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("GOOGLENET_STUDY_CACHE", "off")


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- CSV cells are data ------------------------------------------------------------------------------
@pytest.mark.parametrize("value,written", [
    (FORMULA, "'" + FORMULA), ("+1+1", "'+1+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("-inf", "'-inf"), ("- 1", "'- 1"),
    ("-1.5", "-1.5"), ("+3", "+3"), ("-1e-05", "-1e-05"), ("-.5", "-.5"),  # text that is a number stays one
    ("plain", "plain"), ("a=b", "a=b"), ("", ""), (-1.5, -1.5), (None, None), (True, True),
])
def test_a_text_cell_a_spreadsheet_would_run_gets_a_quote_and_numbers_stay_numbers(value, written):
    assert csv_cells.cell(value) == written


def test_every_writer_quotes_formulas_and_leaves_negative_numbers_bare(tmp_path):
    df = pd.DataFrame({"name": [FORMULA, "ok"], "x": [-1.5, 2.0], "cat": pd.Categorical(["-x", "y"]),
                       "mixed": ["-1.5", 3]})
    csv_cells.write_frame(df, tmp_path / "f.csv")
    assert (tmp_path / "f.csv").read_text().splitlines() == [
        "name,x,cat,mixed", '"\'=HYPERLINK(""http://x"",""y"")",-1.5,\'-x,-1.5', "ok,2.0,y,3"]
    assert df["name"][0] == FORMULA  # the caller's frame is not changed
    csv_cells.write_rows(tmp_path / "r.csv", [{"a": "@x", "b": -2}, {"a": "=1", "c": "ignored"}], ["a", "b"])
    assert (tmp_path / "r.csv").read_text().splitlines() == ["a,b", "'@x,-2", "'=1,"]


@pytest.mark.slow  # seconds of CPU (3-15 s): the full suite runs it, `make test-fast` does not
def test_run_names_and_param_values_are_data_in_runs_and_summary_csv(store):
    runs = rows(store["first"] / "runs.csv")
    assert {r["run_name"] for r in runs} == {"'" + FORMULA, "'@SUM(1+1)", "plain-0", "plain-1"}
    assert {r["weights"] for r in runs} == {"'" + FORMULA, "none"}
    assert {r["lr"] for r in runs} == {"-1.5", "0.0001"}  # a negative number is written as a number
    summary = rows(store["first"] / "summary.csv")
    assert sorted(r["weights"] for r in summary) == ["'" + FORMULA, "none"]
    assert sorted(r["lr"] for r in summary) == ["-1.5", "0.0001"]
    text = "".join(p.read_text() for p in store["first"].glob("*.csv"))
    assert not any(line.startswith(("=", "@", "+")) or ",=" in line or ",@" in line for line in text.splitlines())


# ---- --out deletes only what a report wrote ---------------------------------------------------------
def report_cli(store, out: str, capsys) -> tuple[int, str]:
    rc = cli_main(["report", "--experiment", "csv", "--targets", "50", "--tracking-uri", store["uri"], "--out", out])
    return rc, capsys.readouterr().err.strip()


def test_a_folder_holding_a_users_file_is_refused_and_kept(store, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    rc, err = report_cli(store, str(mine), capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"--out: {mine} holds files no report wrote" in err and "thesis.tex" in err, err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"] and (mine / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder either


def test_a_previous_report_with_a_file_added_is_refused(store, tmp_path, capsys):
    import shutil
    prev = tmp_path / "prev"
    shutil.copytree(store["first"], prev)
    (prev / "notes.txt").write_text("mine")
    rc, err = report_cli(store, str(prev), capsys)
    assert rc == 2 and "'notes.txt', which no report wrote" in err, err
    assert (prev / "notes.txt").exists() and (prev / "report.pdf").exists()


def test_the_folder_is_checked_before_the_build(store, tmp_path, capsys):
    """An unknown experiment would be refused by the build's first stage: the folder's refusal comes first."""
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x").write_text("x")
    rc = cli_main(["report", "--experiment", "no-such", "--tracking-uri", store["uri"], "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert rc == 2 and "holds files no report wrote" in err and "no-such" not in err, err


def test_a_folder_of_report_file_names_without_the_marker_is_refused(tmp_path):
    """Issue 25: the guess by file names (issue 18's pre-marker reports) took a user's own report.html and
    summary.csv for a report and replaced them; only the marker makes a folder a report's."""
    old = tmp_path / "old"
    old.mkdir()
    for name in ("report.html", "report.pdf", "runs.csv", "summary.csv", "comparisons.csv"):
        (old / name).write_text("x")
    with pytest.raises(UserError, match="holds files no report wrote"):
        outdir.check(old)


@pytest.mark.parametrize("kind,expected", [
    ("dot", "names a folder by '.' or '..'"),
    ("parent of here", "holds the current folder"),
    ("file", "exists and is not a folder"),
    ("symlink loop", "loop"),
    ("symlink to a folder", "is a symbolic link; give the folder it points to"),
    ("under a file", "keep.txt"),
])
def test_odd_out_paths_are_one_line_exit_2_and_nothing_touched(kind, expected, store, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    out = {"dot": ".", "parent of here": str(tmp_path), "file": "keep.txt", "symlink loop": str(tmp_path / "loop"),
           "symlink to a folder": str(tmp_path / "link"), "under a file": "keep.txt/r"}[kind]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rc, err = report_cli(store, out, capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (work / "keep.txt").read_text() == "keep"


@pytest.mark.slow  # seconds of CPU (3-15 s): the full suite runs it, `make test-fast` does not
def test_a_previous_report_is_replaced_by_the_new_one(store, tmp_path, capsys):
    import shutil
    prev = tmp_path / "prev"
    shutil.copytree(store["first"], prev)
    old_summary = (prev / "summary.csv").read_text()
    rc = cli_main(["report", "--experiment", "csv", "--targets", "50,70", "--tracking-uri", store["uri"],
                   "--out", str(prev)])
    assert rc == 0, capsys.readouterr().err
    assert (prev / "summary.csv").read_text() != old_summary  # the new report, with a 70 % target
    assert "time_to_test_acc_70" in (prev / "summary.csv").read_text()
    listed = [ln for ln in (prev / outdir.MARKER).read_text().splitlines() if not ln.startswith("#")]
    assert sorted(listed) == sorted(p.name for p in prev.iterdir() if p.name != outdir.MARKER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prev"]  # no .prev.old-* or .prev.tmp-* left


def test_an_empty_folder_is_replaced_and_a_failed_build_leaves_the_folder_as_it_was(tmp_path):
    (tmp_path / "empty").mkdir()
    with outdir.building(tmp_path / "empty") as tmp:
        (tmp / "report.html").write_text("new")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [outdir.MARKER, "report.html"]
    with pytest.raises(ZeroDivisionError):
        with outdir.building(tmp_path / "empty") as tmp:
            (tmp / "report.html").write_text("half")
            1 / 0
    assert (tmp_path / "empty" / "report.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # the build folder is gone


# ---- signals win ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_build_stops_at_once_and_leaves_the_previous_report(sig, code, store, tmp_path):
    """Ctrl-C was ignored (the loop's stop flag, which nothing in a report reads): exit 0, report written."""
    import shutil
    prev = tmp_path / "rep"
    shutil.copytree(store["first"], prev)
    before = {p.name: p.read_bytes() for p in prev.iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "googlenet_study", "report", "--experiment", "csv", "--targets",
                             "50,60,70", "--out", str(prev)], env={**os.environ, **store["env"]}, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []  # (when, line) of stderr: the interpreter's own exit takes seconds
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), ln) for ln in proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: list(tmp_path.glob(".rep.tmp-*")) or proc.poll() is not None, "the report's build folder")
        assert proc.poll() is None, lines  # the build was still under way
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=STATE_TIMEOUT_S)
        reader.join(timeout=60)
    finally:
        proc.kill()
    err = [ln.strip() for _, ln in lines]
    assert proc.returncode == code, err
    said = [t for t, ln in lines if ln.strip() == "googlenet-study report: interrupted"]
    assert said and said[0] - sent < 10, (said, sent, err)  # at once (measured: 30 ms), not after the PDF
    assert "report:" not in proc.stdout.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # the build folder is gone
    assert {p.name: p.read_bytes() for p in prev.iterdir()} == before  # the previous report, as it was


@pytest.mark.slow  # a fresh process: under pytest-xdist this one runs threads, and _beside forks only without
def test_the_csvs_are_written_by_a_forked_child_whose_failure_is_raised_here(tmp_path):
    """report._beside: the job runs in another process while the block runs; its failure comes back as a
    RuntimeError (a full disk as OSError ENOSPC, which outdir turns into its one line); a failing block kills
    the child at once, and so does SIGTERM under stop_at_once even while fork runs its hooks. With another
    thread running, the job runs here."""
    script = '''
import errno, os, signal, sys, threading, time
from pathlib import Path
from googlenet_study import report
out = Path(sys.argv[1])
with report._beside(lambda: (out / "pid").write_text(str(os.getpid()))):
    pass
print("child" if int((out / "pid").read_text()) != os.getpid() else "here")
for exc in (ValueError("boom"), OSError(errno.ENOSPC, "full")):
    def job(exc=exc):
        raise exc
    try:
        with report._beside(job):
            pass
    except Exception as e:
        print(type(e).__name__, getattr(e, "errno", None))
t0 = time.monotonic()
try:
    with report._beside(lambda: time.sleep(60)):
        raise KeyboardInterrupt
except KeyboardInterrupt:
    print("stopped in", round(time.monotonic() - t0))
from googlenet_study.stop import stop_at_once
armed = [True]
def sigterm_inside_the_fork():  # as CI saw it: the signal arrives while fork runs its hooks
    if armed:
        armed.clear()
        os.kill(os.getpid(), signal.SIGTERM)
os.register_at_fork(after_in_parent=sigterm_inside_the_fork)
t0 = time.monotonic()
try:
    with stop_at_once(), report._beside(lambda: time.sleep(60)):
        time.sleep(30)
    print("not stopped")
except KeyboardInterrupt:
    print("SIGTERM at the fork stopped in", round(time.monotonic() - t0))
threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
with report._beside(lambda: (out / "pid").write_text(str(os.getpid()))):
    pass
print("child" if int((out / "pid").read_text()) != os.getpid() else "here")
'''
    p = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split("\n")[:6] == ["child", "RuntimeError None", f"OSError {errno.ENOSPC}", "stopped in 0",
                                        "SIGTERM at the fork stopped in 0", "here"], p.stdout + p.stderr[-2000:]
    assert "Exception ignored" not in p.stderr  # a KeyboardInterrupt dropped inside fork's hooks
    assert "ValueError: boom" in p.stderr  # the child's trace, on the report's stderr
