"""The report, checked as a reader would: runs logged by the test itself into a real SQLite MLflow store,
numbers recomputed by hand, the HTML opened in Chromium, the PDF turned into pages."""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import subprocess
import sys
import time
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy import stats as sps

from googlenet_study import report
from googlenet_study.cli import main as cli_main
from googlenet_study.config import RunConfig, UserError
from googlenet_study.report import fetch, stats
from googlenet_study.report.render import PDF_ENV
from googlenet_study.statistics import robust
from googlenet_study.statistics.clock import EPOCH

from helpers import ARTIFACTS, new_store, skip_or_fail
from helpers.runs import log_run
from helpers.servers import mlflow_server

XSS_NAME = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'


# Config A (batch 32): three seeds whose numbers we know; config B (batch 64): three seeds, faster epochs.
A_ACCS = [[0.40, 0.55, 0.80], [0.52, 0.66, 0.85], [0.45, 0.58, 0.90]]  # best 0.80, 0.85, 0.90
B_ACCS = [[0.30, 0.45, 0.62], [0.35, 0.51, 0.60], [0.33, 0.48, 0.64]]
A_EPOCH_S, B_EPOCH_S = [10.0, 12.0, 11.0], [6.0, 6.5, 7.0]

SUMMARY = ("best_test_acc", "final_test_acc", "total_time_s")  # what a run that ended early never logged


def populate(c: MlflowClient) -> dict:
    exp = c.create_experiment("rep")
    ids = {}
    for s, (accs, t) in enumerate(zip(A_ACCS, A_EPOCH_S)):
        ids[f"A{s}"] = log_run(c, exp, f"a-seed{s}", accs, t, seed=s, batch_size=32, filters=True)
    for s, (accs, t) in enumerate(zip(B_ACCS, B_EPOCH_S)):
        ids[f"B{s}"] = log_run(c, exp, XSS_IMG if s == 2 else f"b-seed{s}", accs, t, seed=s, batch_size=64,
                               drop=("train_aux_loss", *SUMMARY) if s == 2 else (), filters=True)
    ids["failed"] = log_run(c, exp, XSS_NAME, [0.1], 5.0, seed=9, batch_size=32, status="FAILED")
    ids["no_acc"] = log_run(c, exp, "no-test-acc", [0.5, 0.6], 5.0, seed=8, batch_size=32, drop=("test_acc",))
    # One inception_v3 run, so figure 9 (the lecture's reference curve) appears.
    ids["inc"] = log_run(c, exp, "inception", [0.5, 0.7], 466.0, seed=0, model="inception_v3",
                         image_size=299, batch_size=32)
    log_run(c, c.create_experiment("only-failed"), "crashed", [0.5], 1.0, status="FAILED")
    return ids


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One store, one report written through the real command line (in this process: the fast tier)."""
    root = tmp_path_factory.mktemp("report")
    uri = new_store(root / "mlflow.db")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        ids = populate(MlflowClient(uri))
    finally:
        os.chdir(cwd)
    env = {"MLFLOW_TRACKING_URI": uri, "GOOGLENET_STUDY_CACHE": str(root / "cache")}
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):  # the real CLI, in this process
        mp.chdir(root)
        for k, v in env.items():
            mp.setenv(k, v)
        assert cli_main(["report", "--experiment", "rep", "--targets", "50,60,80"]) == 0
    return {"root": root, "out": root / "reports" / "rep", "uri": uri, "ids": ids, "env": env,
            "stdout": out.getvalue()}


def test_writes_the_four_files_into_reports_experiment(made):
    names = {p.name for p in made["out"].iterdir()}
    assert {"report.html", "report.pdf", "runs.csv", "summary.csv"} <= names
    assert not [p for p in made["out"].parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    assert "report: reports/rep/report.html" in made["stdout"]


def test_summary_matches_numbers_computed_by_hand(made):
    s = pd.read_csv(made["out"] / "summary.csv")
    googlenet = s[s["model"] == "googlenet"]
    assert list(googlenet["batch_size"]) == [32, 64] and list(googlenet["n_runs"]) == [3, 3]
    a = googlenet.iloc[0]
    best = np.array([max(x) for x in A_ACCS])
    lo, hi = sps.t.interval(0.95, len(best) - 1, loc=best.mean(), scale=sps.sem(best))
    assert a["best_test_acc_mean"] == pytest.approx(0.85)
    assert (a["best_test_acc_ci_low"], a["best_test_acc_ci_high"]) == pytest.approx((lo, hi))
    assert a["epoch_time_s_mean"] == pytest.approx(np.mean(A_EPOCH_S))
    assert a["total_time_s_mean"] == pytest.approx(3 * np.mean(A_EPOCH_S))
    # 50 %: seeds reach it at epochs 2, 1, 2 -> elapsed 20, 12, 22 s; nothing censored.
    t50 = np.array([2 * 10.0, 1 * 12.0, 2 * 11.0])
    assert a["time_to_test_acc_50_reached"] == 1.0
    assert a["time_to_test_acc_50_mean_reached"] == pytest.approx(t50.mean())
    assert a["time_to_test_acc_50_ert"] == pytest.approx(t50.sum() / 3)
    assert a["time_to_test_acc_50_median"] == 20.0  # S(12) = 2/3, S(20) = 1/3 <= 1/2
    # 80 %: reached by all three at epoch 3; config B never reaches it: counted, not dropped.
    assert a["time_to_test_acc_80_ert"] == pytest.approx(np.mean([30.0, 36.0, 33.0]))
    b = googlenet.iloc[1]
    assert b["time_to_test_acc_80_reached"] == 0.0 and math.isnan(b["time_to_test_acc_80_ert"])  # infinite
    assert math.isnan(b["time_to_test_acc_80_median"]) and math.isnan(b["time_to_test_acc_80_mean_reached"])
    # B's third run logged no summary metrics: its best accuracy comes from its history (0.64).
    assert b["best_test_acc_mean"] == pytest.approx(np.mean([0.62, 0.60, 0.64]))
    # Exact issue-4 column names.
    for m in ("best_test_acc", "final_test_acc", "epoch_time_s", "total_time_s"):
        assert {f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high"} <= set(s.columns)
    k = "time_to_test_acc_60"
    assert {f"{k}_{x}" for x in ("reached", "median", "median_ci_low", "median_ci_high", "ert")} <= set(s.columns)
    assert f"{k}_mean" not in s.columns and "n_runs" in s.columns  # no mean over the survivors alone


def test_runs_csv_is_tidy_and_only_finished_complete_runs_count(made):
    r = pd.read_csv(made["out"] / "runs.csv")
    assert len(r) == 3 * 6 + 2  # six googlenet runs x 3 epochs + the inception run's 2 epochs
    assert set(r["run_id"]) == {made["ids"][k] for k in ("A0", "A1", "A2", "B0", "B1", "B2", "inc")}
    assert {"epoch", "seed", "batch_size", "lr", "test_acc", "elapsed_time_s", "throughput_img_s"} <= set(r.columns)
    html = (made["out"] / "report.html").read_text()
    assert made["ids"]["failed"] in html and "status FAILED" in html
    assert made["ids"]["no_acc"] in html and "missing per-epoch test_acc" in html
    assert "train_aux_loss, best_test_acc, final_test_acc, total_time_s" in html  # B2, counted, flagged


def test_mlflow_strings_are_escaped_and_the_page_has_no_script(made):
    html = (made["out"] / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert 'src="http' not in html and "<link" not in html  # self-contained
    assert html.count('<img src="data:image/png;base64,') == 11  # all eleven figures
    assert '<a href="#fig-time">' in html  # table of contents


def test_comparisons_give_effect_size_and_probability(made):
    c = pd.read_csv(made["out"] / "comparisons.csv")
    row = c[(c["factor"] == "batch_size") & (c["metric"] == "best_test_acc")].iloc[0]
    a, b = np.array([max(x) for x in A_ACCS]), np.array([max(x) for x in B_ACCS])
    assert row["p_A_better"] == 1.0  # every A run beats every B run
    assert row["welch_p"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert row["cohens_d"] == pytest.approx((a.mean() - b.mean()) / pooled)
    t80 = c[(c["factor"] == "batch_size") & (c["metric"] == "time_to_test_acc_80")].iloc[0]
    assert t80["reached_A"] == 3 and t80["reached_B"] == 0 and t80["p_A_better"] == 1.0


@pytest.mark.slow  # poppler's pdftotext and pdftoppm
def test_pdf_is_the_html_typeset_with_bookmarks_and_tables_as_text(made, tmp_path):
    import pypdf

    if shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None:
        skip_or_fail("pdftoppm / pdftotext (poppler-utils) are not installed")
    pdf = made["out"] / "report.pdf"
    html = (made["out"] / "report.html").read_text()
    contents = re.findall(r'<li><a href="#[^"]+">([^<]+)</a></li>', html)
    assert len(contents) >= 11 + 4 and "Runs that have reached the ranking target" in contents
    # Bookmarks: the title, then every entry of the HTML's contents, in order (WeasyPrint makes them from h1/h2).
    outline = pypdf.PdfReader(pdf).outline
    assert outline[0].title == "googlenet-study report: rep"
    assert [b.title for b in outline[1]] == [unescape(t) for t in contents]
    # The verdict first: the HTML's first section and the PDF's first page, before Contents, Scope and Method.
    assert contents[0] == "Verdict" and html.index('<section id="verdict">') < html.index("<nav>")
    first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, text=True,
                           check=True).stdout
    assert first.index("Verdict") < first.index("Contents") and "First by" in first
    # Short sections share A4 pages (once a page each: 1 + len(contents) pages); wide tables get landscape pages.
    reader = pypdf.PdfReader(pdf)
    assert len(reader.pages) < len(contents)
    sizes = [tuple(round(float(v)) for v in pg.mediabox[2:]) for pg in reader.pages]
    assert set(sizes) == {(595, 842), (842, 595)} and sizes[0] == (595, 842)
    # Tables are text, not pictures of text: the excluded runs' ids and reasons can be searched and copied.
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert made["ids"]["failed"] in text and "status FAILED" in text and XSS_NAME in text
    assert "batch_size=64" in text and "page 2 of" in text
    subprocess.run(["pdftoppm", "-png", "-r", "30", str(pdf), str(tmp_path / "p")], check=True)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) == len(reader.pages) and all(p.stat().st_size > 1500 for p in pages)


@pytest.mark.browser
def test_html_in_chromium_shows_every_figure_and_runs_no_script(made, chromium):
    from playwright.sync_api import sync_playwright

    dialogs, console = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("console", lambda m: console.append(m.text))
            page.goto((made["out"] / "report.html").as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            toc = page.eval_on_selector_all("nav a", "els => els.length")
            text = page.inner_text("#excluded")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
            page.locator("#fig-time").screenshot(path=str(ARTIFACTS / "report-main-figure.png"))
        finally:
            browser.close()
    assert len(widths) == 11 and all(w > 0 for w in widths)
    assert toc >= 11 + 5
    assert XSS_NAME in text  # shown as text, never run
    assert dialogs == []


def test_second_report_reads_the_cache_and_agrees(made, tmp_path, monkeypatch, no_pdf):
    monkeypatch.setenv("GOOGLENET_STUDY_CACHE", str(made["root"] / "cache"))
    assert list((made["root"] / "cache").glob("histories-*.npz"))
    out, t = report.build(report.Request("rep", targets=(50, 60, 80), out=tmp_path / "again", uri=made["uri"]))
    first = pd.read_csv(made["out"] / "summary.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), first)


def test_study_and_parent_run_select_the_sweep_children(tracking_uri, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLENET_STUDY_CACHE", "off")
    c = MlflowClient(tracking_uri)
    exp = c.create_experiment("sw")
    # As sweep.py tags them: the parent (its name may be MLflow's own when `mlflow run` made it) and trials.
    parent = c.create_run(exp, run_name="brave-owl-123", tags={"study_name": "demo", "sweep_role": "parent"}).info.run_id
    kids = [log_run(c, exp, f"trial-{i}", [0.5, 0.6], 3.0, seed=i, aux_weight=a,
                    tags={"mlflow.parentRunId": parent, "study_name": "demo", "trial_number": str(i)})
            for i, a in enumerate((0.0, 1.0, 0.0, 1.0))]
    # A trial with repeats: its own run averages two seed runs nested under it.
    trial = c.create_run(exp, run_name="trial-4", tags={"mlflow.parentRunId": parent, "study_name": "demo"}).info.run_id
    kids += [log_run(c, exp, f"trial-4-seed{s}", [0.4, 0.7], 3.0, seed=10 + s, tags={"mlflow.parentRunId": trial})
             for s in range(2)]
    c.set_terminated(trial, "FINISHED")
    c.set_terminated(parent, "FINISHED")
    outsider = log_run(c, exp, "outsider", [0.9], 1.0)
    for kw in ({"study": "demo"}, {"parent_run": parent}):
        f = fetch.fetch("sw", uri=tracking_uri, **kw)
        assert set(f.runs["run_id"]) == set(kids)
        assert trial in set(f.excluded["run_id"])
        assert sorted(t for t in f.runs["trial"] if t) == ["0", "1", "2", "3"]
    f = fetch.fetch("sw", study="demo", filter_string="params.aux_weight = '1.0'", uri=tracking_uri)
    assert set(f.runs["run_id"]) == {kids[1], kids[3], kids[4], kids[5]}
    assert outsider in set(fetch.fetch("sw", uri=tracking_uri).runs["run_id"])
    out, t = report.build(report.Request("sw", study="demo", uri=tracking_uri))
    assert out == Path("reports/demo") and (out / "report.html").exists()
    # ... and the parent run holds it, to be opened from the MLflow UI.
    assert t["attached_to"] == parent
    assert {"report/report.html", "report/report.pdf", "report/summary.csv"} <= \
        {a.path for a in c.list_artifacts(parent, "report")}


@pytest.mark.parametrize("argv, message", [
    (["--experiment", "nope"], "no experiment named 'nope'"),
    (["--experiment", "rep", "--filter", "params.model = 'resnet'"], "no runs matching --filter"),
    (["--experiment", "rep", "--filter", "params.model === x"], "--filter: MLflow rejected"),
    (["--experiment", "rep", "--study", "missing"], "--study: no sweep named 'missing'"),
    (["--experiment", "rep", "--targets", "50,abc"], "--targets: got '50,abc'"),
    (["--experiment", "rep", "--targets", "0,120"], "--targets"),
    (["--experiment", "only-failed"], "no FINISHED runs"),
    (["--experiment", "rep", "--clock", "wall"], "--clock: got 'wall'; allowed: epoch | train"),
])
def test_bad_input_is_one_line_exit_2_and_no_folder(made, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    rc = cli_main(["report", *argv, "--tracking-uri", made["uri"], "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not Path("reports").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    rc = cli_main(["report", *argv, "--tracking-uri", made["uri"]])  # the default folder is not made either
    assert rc == 2 and not Path("reports").exists()


def test_small_statistics_by_hand():
    assert stats.olympic_mean([1, 2, 3, 4, 100]) == pytest.approx(3.0)
    assert math.isnan(stats.olympic_mean([1, 2, 3, 4]))
    assert robust.prob_better([2, 3], [1, 3], higher_is_better=True) == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert robust.prob_better([10, np.inf], [np.inf], higher_is_better=False) == pytest.approx((1 + 0.5) / 2)
    m, lo, hi = robust.t_interval([1.0])
    assert m == 1.0 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(UserError):
        report.parse_targets("")


@pytest.mark.slow
def test_report_over_a_real_training_run(tracking_uri, monkeypatch, tmp_path):
    from googlenet_study.train import train

    monkeypatch.setenv("GOOGLENET_STUDY_CACHE", "off")
    cfg = RunConfig(model="googlenet", dataset="digits", weights="none", image_size=16, train_size=100,
                    test_size=50, epochs=1, batch_size=50, threads=2, system_metrics=False)
    result = train(cfg, tracking_uri, "real")
    assert result.status == "FINISHED"
    out, t = report.build(report.Request("real", out=tmp_path / "real", uri=tracking_uri))
    html = (out / "report.html").read_text()
    assert 'id="fig-filters"' in html  # figure 8 from the run's own filters.pt artifact
    # One configuration, no inception_v3: no factor plot, no lecture reference, and the report says so.
    assert html.count("data:image/png;base64,") == 8  # 11 less the three below
    assert ("Runs that have reached the ranking target (no ranking target); Effect of each factor (no factor "
            "varies); Lecture reference (inception_v3) (no inception_v3 runs)") in html
    s = pd.read_csv(out / "summary.csv")
    assert s["n_runs"].tolist() == [1] and s["best_test_acc_mean"][0] == pytest.approx(result.summary["best_test_acc"])
    assert len(pd.read_csv(out / "runs.csv")) == 1


@pytest.mark.slow
def test_scale_benchmark_runs_at_its_smallest_setting(tmp_path):
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "report_scale.py"), "--runs", "18",
                        "--epochs", "3", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, PDF_ENV: "off"})  # what it prints, not WeasyPrint's seconds, is tested
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cold (no cache)" in r.stdout and "warm (histories cached)" in r.stdout
    assert len(pd.read_csv(tmp_path / "report" / "summary.csv")) == 18


@pytest.mark.slow
def test_an_mlflow_server_gives_the_same_numbers(made, tmp_path, monkeypatch):
    """Over HTTP the histories come from per-run requests on a thread pool, not the database's bulk read."""
    monkeypatch.setenv("GOOGLENET_STUDY_CACHE", "off")
    targets = (50.0, 60.0, 80.0)
    with mlflow_server(made["uri"], made["root"]) as url:
        over_http, _ = stats.per_run(fetch.fetch("rep", uri=url), targets, EPOCH)
    direct, _ = stats.per_run(fetch.fetch("rep", uri=made["uri"]), targets, EPOCH)
    cols = ["run_id", "best_test_acc", "total_time_s", "epoch_time_s", "time_to_test_acc_50", "time_to_test_acc_80"]
    pd.testing.assert_frame_equal(over_http[cols], direct[cols])
