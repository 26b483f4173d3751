"""`googlenet-study report`: MLflow runs -> runs.csv, summary.csv, comparisons.csv, report.html, report.pdf.

fetch (MLflow -> pandas) -> stats (numbers) -> figures -> render (HTML, PDF). The folder is written
under a temporary name beside its destination and renamed at the end: bad input leaves nothing."""

from __future__ import annotations

import contextlib
import gc
import math
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .. import schema, tracking
from ..config import UserError, dir_problem
from .. import csv_cells
from . import fetch, figures, outdir, profiles, render, stats

DEFAULT_TARGETS = (50.0, 60.0, 70.0, 80.0)  # percent test accuracy
MAX_FILTER_ROWS = 12  # figure 8 shows at most this many configurations (the best ranked)


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


def default_out(experiment: str, study: str | None) -> Path:
    return Path("reports") / (re.sub(r"[^A-Za-z0-9._-]+", "_", study or experiment).strip("._") or "report")


def main(args) -> int:
    with outdir.signals_stop_at_once():  # a report has nothing to checkpoint: SIGTERM/SIGINT end it now
        return run(args.experiment, study=args.study, parent_run=args.parent_run, filter_string=args.filter,
                   targets=parse_targets(args.targets), out=args.out, uri=args.tracking_uri,
                   clock_name=getattr(args, "clock", "epoch"), pool_hardware=getattr(args, "pool_hardware", False))


def run(experiment: str, *, study: str | None = None, parent_run: str | None = None, filter_string: str | None = None,
        targets: tuple[float, ...] = DEFAULT_TARGETS, out: str | None = None, uri: str | None = None,
        clock_name: str = "epoch", pool_hardware: bool = False) -> int:
    """`googlenet-study report` with plain values (the sweep calls it too): check, build, say where it went."""
    if out is not None and dir_problem(out):  # build() would replace a file (or /dev/null) by a folder
        raise UserError(f"--out: {dir_problem(out)}")
    tracking.check_tracking_uri(tracking.tracking_uri(uri))
    out, timings = build(experiment, study=study, parent_run=parent_run, filter_string=filter_string,
                         targets=targets, out=out, uri=uri, clock_name=clock_name, pool_hardware=pool_hardware)
    print(f"report: {out}/report.html, report.pdf, runs.csv, summary.csv "
          f"({timings['n_runs']} runs, {timings['n_configs']} configurations, {timings['total_s']:.1f} s)"
          + (f"; attached to run {timings['attached_to']} as report/" if timings.get("attached_to") else ""))
    return 0


def build(experiment: str, study: str | None = None, parent_run: str | None = None,
          filter_string: str | None = None, targets: tuple[float, ...] = DEFAULT_TARGETS,
          out: str | Path | None = None, uri: str | None = None, clock_name: str = "epoch",
          pool_hardware: bool = False) -> tuple[Path, dict]:
    """Write the report folder (and attach it to the study's parent run, when there is one); returns it and
    how long each stage took (seconds). clock_name: epoch (elapsed_time_s) | train (cumulative train_time_s);
    pool_hardware: runs of equal params on different hardware make one configuration."""
    if clock_name not in stats.CLOCKS:
        raise UserError(f"--clock: got {clock_name!r}; allowed: {' | '.join(stats.CLOCKS)}")
    out, out_label = (Path(out), "--out") if out else (default_out(experiment, study), "report folder")
    outdir.check(out, out_label)  # before the build: a folder the report may not replace costs nothing
    clock = {"start": time.perf_counter()}
    with _gc_paused():
        f = fetch.fetch(experiment, study, parent_run, filter_string, uri)  # every UserError is raised in here
    clock["fetch_s"] = time.perf_counter()
    runs, varying, summ, comp, rank, main_p = numbers(f, targets, clock_name, pool_hardware)
    clock["stats_s"] = time.perf_counter()

    with outdir.building(out, out_label) as tmp:  # on any error or signal: tmp removed, out untouched
        csv_cells.write_frame(_tidy(runs, f, targets), tmp / "runs.csv")
        csv_cells.write_frame(summ, tmp / "summary.csv")
        csv_cells.write_frame(comp, tmp / "comparisons.csv")
        with plt.rc_context(figures.style()):
            reps = _filters(runs, rank, uri, tmp)
            clock["artifacts_s"] = time.perf_counter()
            doc = _document(f, runs, varying, summ, comp, rank, main_p, targets, reps)
            clock["figures_s"] = time.perf_counter()
            (tmp / "report.html").write_text(render.to_html(doc), encoding="utf-8")
            clock["html_s"] = time.perf_counter()
            render.to_pdf(doc, tmp / "report.pdf")
            for fig in doc.figures:
                plt.close(fig.fig)
        clock["render_s"] = time.perf_counter()
        shutil.rmtree(tmp / ".artifacts", ignore_errors=True)
    keys = ["start", "fetch_s", "stats_s", "artifacts_s", "figures_s", "render_s"]
    t = {k: clock[k] - clock[keys[i - 1]] for i, k in enumerate(keys) if i}
    t.update(total_s=clock["render_s"] - clock["start"], n_runs=len(runs), n_configs=len(summ),
             pdf_s=clock["render_s"] - clock["html_s"])  # of render_s: WeasyPrint's part
    if len(f.source["roots"]) == 1:  # a study's report belongs to its parent run: open it from the MLflow UI
        try:
            tracking.log_report(f.source["roots"][0], out, uri)
            t["attached_to"] = f.source["roots"][0]
        except Exception as e:  # noqa: BLE001 - the report on disk is complete; say why it is not in MLflow
            print(f"report: not attached to run {f.source['roots'][0]}: {type(e).__name__}: "
                  f"{tracking.redact(str(e))[:200]}", file=sys.stderr)
    return out, t


def numbers(f: fetch.Fetched, targets: tuple[float, ...], clock_name: str = "epoch", pool_hardware: bool = False):
    """Stage 2 in one call: (runs, varying, summary, comparisons, ranking, ranking target); summary gets its
    `rank` column and f.source the clock and pooling (the report states both)."""
    runs, varying = stats.per_run(f, targets, clock_name, pool_hardware)
    summ = stats.summary(runs, varying, targets)
    comp = stats.comparisons(runs, varying, targets)
    rank, main_p = stats.ranking(summ, targets, clock_name)
    for c in ("rank", "rank_by"):  # summary.csv says each configuration's rank and the criterion behind it
        summ[c] = summ["configuration"].map(dict(zip(rank["configuration"], rank[c])))
    f.source.update(clock=clock_name, pool_hardware=pool_hardware)
    return runs, varying, summ, comp, rank, main_p


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


def _tidy(runs: pd.DataFrame, f: fetch.Fetched, targets: tuple[float, ...]) -> pd.DataFrame:
    """runs.csv: one row per run per epoch, the run's params, hardware, times to target and every per-epoch
    metric."""
    per_target = [c for p in targets for c in (schema.time_to_target(p), stats.reached(p))]
    cols = ["run_id", "run_name", "configuration", "seed"] + [p for p in f.params if p != "seed"] + \
        ["study", "trial", "device_name", "host", stats.HARDWARE, "time_excluded", *per_target]
    tidy = runs[cols].merge(f.epochs, on="run_id")
    return tidy[cols + ["epoch"] + list(schema.EPOCH_METRICS)]


def _filters(runs: pd.DataFrame, rank: pd.DataFrame, uri: str | None, tmp: Path) -> list:
    """(configuration, run name, {before, after}) for the median-accuracy run of the best-ranked configurations."""
    reps = []
    for cfg in list(rank["configuration"])[:MAX_FILTER_ROWS]:
        g = runs[runs["configuration"] == cfg].sort_values(["best_test_acc", "run_id"])
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


def _pct(m, lo, hi, scale=100.0, digits=1) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "-"
    s = f"{scale * m:.{digits}f}"
    return s if math.isnan(lo) else f"{s} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def _document(f, runs, varying, summ, comp, rank, main_p, targets, reps) -> render.Document:
    from .text import method_paragraphs, scope_facts, tables

    colors = figures.palette(list(runs["configuration"].cat.categories))
    title = f"googlenet-study report: {f.source['study'] or f.source['experiment']}"
    facts = scope_facts(f, runs, varying, summ, targets) + \
        [("written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))]
    clk = f.source.get("clock", "epoch")
    figs = [
        ("fig-time", "Test accuracy vs wall-clock time", figures.acc_vs_time(runs, f.epochs, colors, clk),
         "The main figure. Thin lines: each run's last evaluated test accuracy, held until its next epoch ends, "
         "and its final accuracy once it has finished. Thick line and band: the mean of all n runs of a "
         "configuration with its 95 % t-interval, on that configuration's own epoch ends, drawn from the moment "
         "every one of its runs has been evaluated to the end of its longest run (the set of runs behind a "
         "mean never changes along it; other configurations do not move it)."),
        ("fig-reached", "Runs that have reached the ranking target",
         figures.reached_target(runs, main_p, colors, clk),
         f"Kaplan-Meier estimate (the one behind the tables' medians) of the fraction of each configuration's runs that have reached "
         f"{'the ranking target' if main_p is None else f'{main_p:g} %'} by each second, with its 95 % interval; a "
         "run that never reached it is censored at its end (it counts as not yet there, never as dropped)."),
        ("fig-profiles", "Performance profiles", figures.profiles(profiles.performance_profile(summ, targets), colors),
         "Dolan & More: for each workload (model, dataset, target) a configuration's ratio r = its expected "
         "running time (ERT) to the best configuration's ERT there; the line is rho(tau), the share of workloads "
         "with r <= tau. High and to the left is better; its area over [1, 4] / 3 is profile_score."),
        ("fig-epoch", "Test accuracy per epoch", figures.acc_vs_epoch(runs, f.epochs, colors),
         "Thin lines: runs; thick line and band: the mean of all n runs of a configuration with its 95 % "
         "t-interval (none when n = 1), where every run has that epoch or has ended (then holding its final "
         "accuracy)."),
        ("fig-epoch-time", "Seconds per epoch", figures.epoch_time(runs, varying),
         "Mean over each run's epochs (training + evaluation), then mean and 95 % t-interval across runs."),
        ("fig-targets", "Time to target accuracy", figures.time_to_target(runs, targets, colors),
         "Mean over the runs that reached the target; runs that never reached it are counted on the right."),
        ("fig-factors", "Effect of each factor", figures.factor_effects(runs, varying, main_p),
         "Marginal means over all runs at each level of a factor (other factors and seeds pooled)."),
        ("fig-pareto", "Best accuracy vs total time", figures.pareto(summ, colors),
         "Dashed: the Pareto front (no configuration is both faster and more accurate than one on it)."),
        ("fig-lecture", "Losses and accuracies (the lecture's plots)", figures.lecture_plots(runs, f.epochs, colors),
         "Left: main vs auxiliary training loss (the auxiliary loss is summed over the arms, 0 without arms). "
         "Right: train vs test accuracy. Means over seeds."),
        ("fig-filters", "First-conv filters", figures.filters(reps),
         "Before, after and difference, one representative run per configuration (at most "
         f"{MAX_FILTER_ROWS}, best ranked first); before/after share one colour scale, the difference is "
         "centred on grey."),
        ("fig-reference", "Lecture reference (inception_v3)", figures.lecture_reference(runs, f.epochs, colors),
         "Dashed black: the lecture's published curve (one run; test accuracy 52.87 ... 79.57 % for epochs 1-8, "
         "about 466 s per epoch on its GPU), drawn for reference, not averaged in."),
    ]
    why = {"fig-factors": "no factor varies", "fig-filters": "no run has a filters/filters.pt artifact",
           "fig-reached": "no ranking target", "fig-profiles": "no performance profile",
           "fig-reference": "no inception_v3 runs"}
    skipped = [f"{t} ({why.get(i, 'nothing to draw')})" for i, t, fig, _ in figs if fig is None]
    facts.append(("figures not drawn", "; ".join(skipped) or "none"))
    doc = render.Document(title, facts, method_paragraphs(main_p, targets, f.source["clock"]))
    doc.figures = [render.Figure(i, t, c, fig) for i, t, fig, c in figs if fig is not None]
    doc.tables, doc.appendix = tables(f, runs, varying, summ, comp, rank, main_p, targets, _pct)
    return doc
