"""`googlenet-study report`: MLflow runs -> runs.csv, summary.csv, comparisons.csv, report.html, report.pdf.

fetch (MLflow -> pandas) -> stats (numbers) -> figures -> render (HTML, PDF). The folder is written
under a temporary name beside its destination and renamed at the end: bad input leaves nothing."""

from __future__ import annotations

import contextlib
import errno
import gc
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .. import schema, tracking
from ..config import UserError, dir_problem
from ..safe_files import out_of_space
from ..stop import SIGNALS, install, stop_at_once
from .. import csv_cells
from ..statistics import clock as clocks
from . import document, fetch, figures, lecture, outdir, race_section, render, stats
from .reading import Reading

DEFAULT_TARGETS = (50.0, 60.0, 70.0, 80.0)  # percent test accuracy


def parse_targets(text: str | None) -> tuple[float, ...]:
    if text is None:
        return DEFAULT_TARGETS
    try:
        t = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        t = ()
    if not t or any(not (0 < p <= 100) or math.isnan(p) for p in t):
        raise UserError(f"--targets: got {text!r}; allowed: comma-separated percentages in (0, 100], e.g. 50,60,70,80")
    return tuple(sorted(set(t)))


def parse_by(text: str | None) -> tuple[str, ...] | None:
    """--by PARAM[,PARAM...]: the configuration's params, in the order given (None: not given)."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UserError(f"--by: got {text!r}; allowed: comma-separated param names, e.g. lr,batch_size")
    return names


def default_out(experiment: str, study: str | None) -> Path:
    return Path("reports") / (re.sub(r"[^A-Za-z0-9._-]+", "_", study or experiment).strip("._") or "report")


@dataclass(frozen=True)
class Request:
    """What a report is asked for: which runs (fetch's scope: experiment, study or parent run, filter, store),
    how they are read (the accuracy metric, the clock, the configuration's params), the targets, whether
    hardware is pooled, and where it goes."""
    experiment: str
    study: str | None = None           # a sweep's runs (its parent run's name)
    parent_run: str | None = None      # the runs under this parent run id
    filter_string: str | None = None   # an MLflow search filter
    uri: str | None = None             # the tracking URI (None: MLFLOW_TRACKING_URI or the default)
    targets: tuple[float, ...] = DEFAULT_TARGETS  # percent test accuracy
    pool_hardware: bool = False        # runs of equal params on different hardware make one configuration
    out: str | Path | None = None      # the folder (None: default_out)
    reading: Reading = Reading()       # how runs are read: --accuracy-metric, --clock, --by, --seed-param

    @classmethod
    def from_args(cls, args) -> Request:
        """The command line's request; a bad --targets, --clock or --by is one line (UserError)."""
        return cls(args.experiment, study=args.study, parent_run=args.parent_run, filter_string=args.filter,
                   uri=args.tracking_uri, targets=parse_targets(args.targets), pool_hardware=args.pool_hardware,
                   out=args.out, reading=Reading(args.accuracy_metric, clocks.parse(args.clock),
                                                 parse_by(args.by), args.seed_param))


def main(args) -> int:
    with stop_at_once():  # a report has nothing to checkpoint: SIGTERM/SIGINT end it now
        return run(Request.from_args(args))


def run(req: Request) -> int:
    """`googlenet-study report` from a Request (the sweep calls it too): check, build, say where it went."""
    if req.out is not None and dir_problem(req.out):  # build() would replace a file (or /dev/null) by a folder
        raise UserError(f"--out: {dir_problem(req.out)}")
    # A report reads; a damaged store file is one line.
    tracking.check_tracking_uri(tracking.tracking_uri(req.uri), write=False)
    out, timings = build(req)
    print(f"report: {out}/report.html, report.pdf, runs.csv, summary.csv "
          f"({timings['n_runs']} runs, {timings['n_configs']} configurations, {timings['total_s']:.1f} s)"
          + (f"; attached to run {timings['attached_to']} as report/" if timings.get("attached_to") else ""))
    return 0


def build(req: Request) -> tuple[Path, dict]:
    """Write the report folder (and attach it to the study's parent run, when there is one); returns it and
    how long each stage took (seconds)."""
    document.written()  # a bad SOURCE_DATE_EPOCH is refused before any work
    out, out_label = (Path(req.out), "--out") if req.out else (default_out(req.experiment, req.study), "report folder")
    outdir.check(out, out_label)  # before the build: a folder the report may not replace costs nothing
    at = {"start": time.perf_counter()}  # s: when each stage ended
    with _gc_paused():
        # every UserError is raised in here
        f = fetch.fetch(req.experiment, req.study, req.parent_run, req.filter_string, req.uri,
                        reading=req.reading)
    at["fetch_s"] = time.perf_counter()
    n = stats.numbers(f, req.targets, req.reading.clock, req.pool_hardware)
    at["stats_s"] = time.perf_counter()

    with outdir.building(out, out_label) as tmp:  # on any error or signal: tmp removed, out untouched
        with _beside(lambda: _write_csvs(n, tmp)), plt.rc_context(figures.style()):
            reps = _filters(n.runs, n.ranking, req.uri, tmp)
            at["artifacts_s"] = time.perf_counter()
            doc = document.build(n, reps)
            doc.tables += race_section.tables(f, req.uri)  # a racing study's rounds (report/race_section.py)
            at["figures_s"] = time.perf_counter()
            (tmp / "report.html").write_text(render.to_html(doc), encoding="utf-8")
            at["html_s"] = time.perf_counter()
            render.to_pdf(doc, tmp / "report.pdf")
            for fig in doc.figures:
                plt.close(fig.fig)
        at["render_s"] = time.perf_counter()  # the CSVs' child waited for too
        shutil.rmtree(tmp / ".artifacts", ignore_errors=True)
    keys = ["start", "fetch_s", "stats_s", "artifacts_s", "figures_s", "render_s"]
    t = {k: at[k] - at[keys[i - 1]] for i, k in enumerate(keys) if i}
    t.update(total_s=at["render_s"] - at["start"], n_runs=len(n.runs), n_configs=len(n.summary),
             pdf_s=at["render_s"] - at["html_s"])  # of render_s: WeasyPrint's part
    if len(f.source["roots"]) == 1 and _attach(f.source["roots"][0], out, req.uri):
        t["attached_to"] = f.source["roots"][0]
    return out, t


def _write_csvs(n: stats.Numbers, folder: Path) -> None:
    csv_cells.write_per_key(*_tidy(n), "run_id", folder / "runs.csv")
    csv_cells.write_frame(n.summary, folder / "summary.csv")
    csv_cells.write_frame(n.comparisons, folder / "comparisons.csv")


NO_SPACE_EXIT = 3  # the CSVs' child found the disk full: the parent says so as report.outdir does


@contextlib.contextmanager
def _beside(job):
    """`job` in a forked child while the block runs: the CSVs (pure Python formatting: 5.5 of 43 s at 10,000
    runs) on the other core while this one draws the figures and the PDF. In this process instead where there
    is no fork or another thread runs (a fork copies none of them; pytest-xdist and a sweep have some). The
    child's failure is raised here after the block: an OSError for a full disk, else a RuntimeError."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        job()
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()  # else the child's exit would write the parent's buffered lines a second time
    # SIGINT/SIGTERM held across the fork: a handler that ran inside fork's own hooks (logging's lock release)
    # had its KeyboardInterrupt printed and dropped there, and the report went on to exit 0 (seen in CI).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:
        code = 0
        try:
            install(signal.SIG_DFL)  # the parent's stop handlers are the parent's
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            job()
        except BaseException as e:  # noqa: BLE001 - reported through the exit status, the trace on stderr
            code = NO_SPACE_EXIT if out_of_space(e) else 1
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(code)  # not the parent's atexit handlers, not its buffers
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal held since the fork raises here
        yield
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == NO_SPACE_EXIT:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if code:
        raise RuntimeError(f"writing runs.csv, summary.csv and comparisons.csv failed (exit {code}; above)")


def _attach(parent: str, out: Path, uri: str | None) -> bool:
    """A study's report belongs to its parent run: open it from the MLflow UI. False (and why, on stderr)
    when it could not be logged there; the report on disk is complete either way."""
    try:
        tracking.log_report(parent, out, uri)
        return True
    except Exception as e:  # noqa: BLE001 - the report on disk is complete; say why it is not in MLflow
        print(f"report: not attached to run {parent}: {type(e).__name__}: {tracking.redact(str(e))[:200]}",
              file=sys.stderr)
        return False


@contextlib.contextmanager
def _gc_paused():
    """Reading 1,000 runs makes millions of short-lived objects (MLflow entities, SQLAlchemy rows); the
    cyclic GC rescanning them doubled the fetch time (measured: 2.2 s -> 1.0 s per metric key)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _tidy(n: stats.Numbers) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs.csv, one row per run per epoch, in two parts written side by side (csv_cells.write_per_key): per
    run, its params, hardware and times to target; per epoch (with its run_id), every per-epoch metric."""
    per_target = [c for p in n.targets for c in (schema.time_to_target(p), stats.reached(p))]
    cols = ["run_id", "run_name", "configuration", "seed"] + [p for p in n.fetched.params if p != "seed"] + \
        ["study", "trial", schema.DEVICE_NAME_TAG, schema.HOST_TAG, stats.HARDWARE, "time_excluded", *per_target]
    src = n.fetched.source
    if "accuracy_metric" not in src:  # this tool's runs, read as logged
        return n.runs[cols], n.fetched.epochs[["run_id", "epoch", *schema.EPOCH_METRICS]]
    # Another tool's runs (reading.py): their accuracy under the name they logged it by, the clock's column, and
    # this tool's per-epoch metrics only when some run of this tool is counted.
    metrics = list(schema.EPOCH_METRICS) if src["ours"] else [schema.ACCURACY]
    clock = [n.clock.metric] if n.clock.metric not in metrics else []
    epochs = n.fetched.epochs[["run_id", "epoch", *metrics, *clock]]
    return n.runs[cols], epochs.rename(columns={schema.ACCURACY: src["accuracy_metric"]})


def _filters(runs: pd.DataFrame, rank: pd.DataFrame, uri: str | None, tmp: Path) -> list:
    """(configuration, run name, {before, after}) for the median-accuracy run of the best-ranked configurations."""
    reps = []
    for cfg in list(rank["configuration"])[:lecture.MAX_FILTER_ROWS]:
        g = runs[runs["configuration"] == cfg].sort_values(schema.BEST_ACC, kind="stable")  # ties: run order
        r = g.iloc[(len(g) - 1) // 2]
        path = tracking.download_artifact(r["run_id"], "filters/filters.pt", tmp / ".artifacts" / r["run_id"], uri)
        if path is None:
            continue
        import torch  # only when some run has filters: importing torch costs a second or two

        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            reps.append((str(cfg), str(r["run_name"]), {k: d[k].float().numpy() for k in ("before", "after")}))
        except Exception:  # noqa: BLE001 - an unreadable artifact loses one row of one figure, not the report
            continue
    return reps
