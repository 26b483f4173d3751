"""The MLflow UI, the way users see it: a real `mlflow server` and headless Debian chromium show the
sweep's parent run with its trials nested under it, and draw `test_acc` against `elapsed_time_s` by the
steps docs/reference.md's "Open the UI" gives. The screenshots are kept in test-artifacts/."""

from __future__ import annotations

import pytest
import yaml
from mlflow import MlflowClient

from helpers import ARTIFACTS, new_store
from helpers.servers import mlflow_server

from googlenet_study import cli

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TRIALS = ["ui-study-t0", "ui-study-t1"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A two-trial sweep of three epochs each (so every trial draws a line) behind a real `mlflow server`."""
    d = tmp_path_factory.mktemp("ui")
    uri = new_store(d / "mlflow.db")
    study = d / "ui.yaml"
    study.write_text(yaml.safe_dump({
        "name": "ui-study", "base": {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16,
                                     "epochs": 3, "train_size": 100, "test_size": 50, "system_metrics": False,
                                     "threads": 1},
        "space": {"aux_weight": [0.0, 0.3]}}, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        assert cli.main(["sweep", str(study), "--no-report", "--tracking-uri", uri,
                         "--storage", f"sqlite:///{d / 'optuna.db'}"]) == 0
    c = MlflowClient(uri)
    exp_id = c.get_experiment_by_name("googlenet-study").experiment_id
    children = sorted(r.info.run_name for r in c.search_runs([exp_id]) if "mlflow.parentRunId" in r.data.tags)
    assert children == TRIALS
    ARTIFACTS.mkdir(exist_ok=True)
    with mlflow_server(uri, d) as url:
        yield f"{url}/#/experiments/{exp_id}/runs"


@pytest.fixture
def page(ui, chromium):
    """A fresh browser (no chart settings remembered from another test) on the experiment's runs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(ui)
            page.get_by_role("link", name="ui-study", exact=True).wait_for(timeout=90_000)
            yield page
        finally:
            browser.close()


def expand_parent(page) -> None:
    """Click the + left of the parent run's name; its trials become rows of their own."""
    page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for name in TRIALS:
        page.get_by_role("link", name=name, exact=True).wait_for(timeout=30_000)


@pytest.mark.browser
@pytest.mark.slow
def test_mlflow_ui_lists_the_parent_run_with_its_trials_nested(page):
    # Children are collapsed under their parent: none is a row of its own before expanding.
    assert page.get_by_role("link", name="ui-study-t0", exact=True).count() == 0
    page.screenshot(path=str(ARTIFACTS / "mlflow_ui_sweep_collapsed.png"))
    expand_parent(page)
    page.screenshot(path=str(ARTIFACTS / "mlflow_ui_sweep_expanded.png"))
    assert page.get_by_role("link", name="ui-study", exact=True).count() == 1  # one parent
    assert (ARTIFACTS / "mlflow_ui_sweep_expanded.png").stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.slow
def test_mlflow_ui_draws_test_acc_against_elapsed_time_s_as_readme_says(page):
    # docs/reference.md step 2: the chart view (its button's tooltip says "Chart view").
    page.locator("label:has(input[name=runs-view-mode][value=CHART])").click()
    page.get_by_placeholder("Search metric charts").fill("test_acc")
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    test_acc = cards.filter(has=page.get_by_text("test_acc", exact=True))
    # Collapsed, only the parent is drawn: its own metrics have charts, the trials' per-epoch test_acc has none.
    cards.filter(has=page.get_by_text("best_trial.best_test_acc", exact=True)).wait_for(timeout=30_000)
    assert test_acc.count() == 0
    expand_parent(page)  # step 1
    test_acc.get_by_text("Step", exact=True).wait_for(timeout=30_000)  # x-axis by default: the epoch
    for name in TRIALS:
        test_acc.get_by_text(f"{name} (test_acc)").wait_for()  # one line per trial

    # Step 3: the chart's ⋮ -> Configure -> X-axis type Metric -> elapsed_time_s -> Save changes.
    test_acc.get_by_test_id("experiment-view-compare-runs-card-menu").click()
    page.get_by_role("menuitem", name="Configure").click()
    dialog = page.get_by_role("dialog")
    for choice in ("Step", "Time (wall)", "Time (relative)", "Metric"):  # what docs/reference.md says the UI offers
        dialog.get_by_role("radio", name=choice).wait_for()
    dialog.get_by_role("radio", name="Metric").check()
    metric = dialog.get_by_role("combobox").first  # "Select metric", under the Metric choice
    metric.click()
    metric.fill("elapsed_time_s")
    page.get_by_role("option", name="elapsed_time_s", exact=True).wait_for(state="attached")
    page.keyboard.press("Enter")
    dialog.get_by_role("button", name="Save changes").click()
    dialog.wait_for(state="detached")

    test_acc.get_by_text("elapsed_time_s", exact=True).wait_for(timeout=30_000)  # the x-axis title
    assert test_acc.get_by_text("Step", exact=True).count() == 0
    for name in TRIALS:
        assert test_acc.get_by_text(f"{name} (test_acc)").count() == 1
    test_acc.screenshot(path=str(ARTIFACTS / "mlflow_ui_test_acc_vs_elapsed_time_s.png"))
    page.screenshot(path=str(ARTIFACTS / "mlflow_ui_charts_elapsed_time_s.png"))
