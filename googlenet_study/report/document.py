"""Report stage 3b: the document a reader meets, in order — the verdict, Scope, Method, the tables, the
figures (each with the caption its figure function wrote) and the appendix — assembled from stage 2's
numbers; render.py turns it into HTML and PDF.

Reproducible: the "written" time is SOURCE_DATE_EPOCH when it is set (the reproducible-builds convention,
https://reproducible-builds.org/specs/source-date-epoch/), so the same runs give the same bytes."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from ..config import source_date_epoch
from ..statistics import profiles
from . import figures, lecture, render
from .stats import Numbers
from .text import method_paragraphs, reading_paragraphs, scope_facts, tables
from .verdict import verdict

# Figures that may be missing, with the reason the Scope gives (any other: "nothing to draw").
NOT_DRAWN = {"fig-reached": ("Runs that have reached the ranking target", "no ranking target"),
             "fig-profiles": ("Performance profiles", "no performance profile"),
             "fig-factors": ("Effect of each factor", "no factor varies"),
             "fig-filters": ("First-conv filters", "no run has a filters/filters.pt artifact"),
             "fig-reference": ("Lecture reference (inception_v3)", "no inception_v3 runs")}


def written(env=os.environ) -> datetime:
    """When the report was written: SOURCE_DATE_EPOCH if set, else now (UTC)."""
    seconds = source_date_epoch(env)  # config.source_date_epoch: one rule, for the CLI and here
    if seconds is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    return datetime.fromtimestamp(seconds, timezone.utc)


def build(n: Numbers, reps) -> render.Document:
    """The whole report as a render.Document; reps: the filters figure's representative runs."""
    f, runs, clk = n.fetched, n.runs, n.clock
    colors = figures.palette(list(runs["configuration"].cat.categories))
    when = written()
    title = f"googlenet-study report: {f.source['study'] or f.source['experiment']}"
    facts = scope_facts(n) + [("written", when.strftime("%Y-%m-%d %H:%M UTC"))]
    drawn = {
        "fig-time": figures.acc_vs_time(runs, f.epochs, colors, clk),
        "fig-reached": figures.reached_target(runs, n.main_p, colors, clk),
        "fig-profiles": figures.profiles(profiles.performance_profile(n.summary, n.targets), colors, clk),
        "fig-epoch": figures.acc_vs_epoch(runs, f.epochs, colors),
        "fig-epoch-time": figures.epoch_time(runs, n.varying),
        "fig-targets": figures.time_to_target(runs, n.targets, colors, clk),
        "fig-factors": figures.factor_effects(runs, n.varying, n.main_p, clk),
        "fig-pareto": figures.pareto(n.summary, colors),
        "fig-lecture": lecture.lecture_plots(runs, f.epochs, colors),
        "fig-filters": lecture.filters(reps),
        "fig-reference": lecture.lecture_reference(runs, f.epochs, colors),
    }
    skipped = [f"{NOT_DRAWN.get(i, (i, ''))[0]} ({NOT_DRAWN.get(i, ('', 'nothing to draw'))[1]})"
               for i, d in drawn.items() if d is None]
    facts.append(("figures not drawn", "; ".join(skipped) or "none"))
    doc = render.Document(title, facts, method_paragraphs(n.main_p, n.targets, clk) + reading_paragraphs(n),
                          verdict=verdict(n.ranking, runs, n.main_p, clk), written=when)
    doc.figures = [render.Figure(i, d.title, d.caption, d.fig) for i, d in drawn.items() if d is not None]
    doc.tables, doc.appendix = tables(n)
    return doc
