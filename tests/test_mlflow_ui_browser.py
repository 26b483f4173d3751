"""The MLflow UI, the way users see it: a real `mlflow server` and headless Debian chromium show the
sweep's parent run with its trials nested under it. The screenshots are kept in test-artifacts/."""

from __future__ import annotations

import pytest
import yaml
from mlflow import MlflowClient

from conftest import ARTIFACTS
from test_sweep_postgres import mlflow_server

from googlenet_study import cli

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.mark.browser
@pytest.mark.slow
def test_mlflow_ui_lists_the_parent_run_with_its_trials_nested(tmp_path, tracking_uri, chromium, capsys):
    from playwright.sync_api import sync_playwright

    study = tmp_path / "ui.yaml"
    study.write_text(yaml.safe_dump({
        "name": "ui-study", "base": {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16,
                                     "epochs": 1, "train_size": 100, "test_size": 50, "system_metrics": False,
                                     "threads": 1},
        "space": {"aux_weight": [0.0, 0.3]}}, sort_keys=False))
    assert cli.main(["sweep", str(study), "--no-report"]) == 0, capsys.readouterr().err
    c = MlflowClient(tracking_uri)
    exp_id = c.get_experiment_by_name("googlenet-study").experiment_id
    children = sorted(r.info.run_name for r in c.search_runs([exp_id]) if "mlflow.parentRunId" in r.data.tags)
    assert children == ["ui-study-t0", "ui-study-t1"]

    ARTIFACTS.mkdir(exist_ok=True)
    with mlflow_server(tracking_uri, tmp_path / "artifacts") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{url}/#/experiments/{exp_id}/runs")
            parent = page.get_by_role("link", name="ui-study", exact=True)
            parent.wait_for(timeout=90_000)
            # Children are collapsed under their parent: none is a row of its own before expanding.
            assert page.get_by_role("link", name="ui-study-t0", exact=True).count() == 0
            page.screenshot(path=str(ARTIFACTS / "mlflow_ui_sweep_collapsed.png"))
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
            for name in children:
                page.get_by_role("link", name=name, exact=True).wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow_ui_sweep_expanded.png"))
            assert page.get_by_role("link", name="ui-study", exact=True).count() == 1  # one parent
        finally:
            browser.close()
    assert (ARTIFACTS / "mlflow_ui_sweep_expanded.png").stat().st_size > 10_000
