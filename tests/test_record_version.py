"""Issue 27, item 9: the epoch record is named, and a metric added later is "not recorded by this version" for
the runs logged before it, never "missing". Runs are logged into a real SQLite MLflow store and read back by the
report's own fetch. The later metric is throughput_img_s, declared (for the test) to have arrived in the version
after the current one, NEW: the store's runs never log it. The tests hold whatever RECORD_VERSION is: a metric
added to the schema needs no edit here, only its METRIC_SINCE entry."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from googlenet_study import engine, schema, tracking
from googlenet_study.config import RunConfig
from googlenet_study.report import fetch, stats, text
from googlenet_study.statistics.clock import EPOCH

from helpers import new_store
from helpers.runs import H100, TARGETS, log_run

LATER = schema.THROUGHPUT  # plays a metric that record version NEW added
OLD, NEW = schema.RECORD_VERSION, schema.RECORD_VERSION + 1
# The metrics version 1 recorded, as it shipped: one added to the schema later is not here, and needs a
# METRIC_SINCE entry (else the runs logged before it would be listed as missing it).
VERSION_1 = {"train_loss", "train_aux_loss", "train_total_loss", "train_acc", "test_loss", "test_acc",
             "epoch_time_s", "train_time_s", "eval_time_s", "data_time_s", "elapsed_time_s", "throughput_img_s",
             "best_test_acc", "final_test_acc", "total_time_s"}


@pytest.fixture
def version_1(monkeypatch):
    """The schema with no metric newer than version 1 (as when the record_version tag arrived)."""
    monkeypatch.setattr(schema, "METRIC_SINCE", {})
    monkeypatch.setattr(schema, "RECORD_VERSION", 1)


@pytest.fixture
def version_new(monkeypatch):
    """The schema as it would be once LATER arrived in record version NEW."""
    monkeypatch.setattr(schema, "METRIC_SINCE", {**schema.METRIC_SINCE, LATER: NEW})
    monkeypatch.setattr(schema, "RECORD_VERSION", NEW)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three FINISHED runs of one configuration, none with LATER: one logged before the record_version tag
    existed (version 1; it lacks data_time_s too), one of today's version OLD, one of version NEW (its code
    should have logged LATER). Each logs the metrics added since version 1 (log_run knows version 1's)."""
    uri = new_store(tmp_path_factory.mktemp("record-version") / "mlflow.db")
    c = MlflowClient(uri)
    exp = c.create_experiment("versions")
    since_1 = {m: [1.0] * 3 for m in schema.EPOCH_METRICS if m not in VERSION_1}
    for i, (name, tags, drop) in enumerate((("untagged", {}, (LATER, schema.DATA_TIME)),
                                             ("old", {schema.RECORD_VERSION_TAG: str(OLD)}, (LATER,)),
                                             ("new", {schema.RECORD_VERSION_TAG: str(NEW)}, (LATER,)))):
        log_run(c, exp, name, [0.4, 0.6, 0.8], 10.0, H100, seed=i, tags=tags, drop=drop, per_epoch=since_1,
                summary={m: 1.0 for m in schema.SUMMARY_METRICS if m not in VERSION_1})
    return uri


def _missing(f) -> dict[str, list[str]]:
    return {r.run_name: r.missing.split(", ") for r in f.incomplete.itertuples()}


def test_a_metric_newer_than_a_runs_version_is_not_recorded_by_it_and_not_missing(store, version_new):
    f = fetch.fetch("versions", uri=store, cache_dir="off")
    assert _missing(f) == {"untagged": [schema.DATA_TIME],  # a version-1 metric it lacks is still missing
                           "new": [LATER]}                  # its version logs LATER: lacking it is a gap
    older = f.not_recorded.set_index("run_name")
    assert set(older.index) == {"untagged", "old"}
    assert dict(zip(older.index, older["not_recorded"])) == {"untagged": LATER, "old": LATER}
    assert dict(zip(older.index, older[schema.RECORD_VERSION_TAG])) == {"untagged": 1, "old": OLD}


def test_the_report_says_once_in_scope_and_lists_them_apart_from_the_missing(store, version_new):
    f = fetch.fetch("versions", uri=store, cache_dir="off")
    n = stats.numbers(f, TARGETS, EPOCH)
    facts = dict(text.scope_facts(n))
    assert facts["not recorded by this version"] == (
        f"{LATER} (added in record version {NEW}) by 2 runs: logged by an older version, so not counted as missing "
        "(listed in the appendix)")
    assert facts["runs missing some metrics"] == "2"
    appendix = {t.id: t.frame for t in text.tables(n)[1]}
    assert set(appendix["not-recorded"]["run_name"]) == {"untagged", "old"}
    assert dict(zip(appendix["incomplete"]["run_name"], appendix["incomplete"]["missing"])) == \
        {"untagged": schema.DATA_TIME, "new": LATER}


def test_with_no_metric_newer_than_the_runs_a_lacking_one_is_missing_and_the_report_is_as_before(store, version_1):
    f = fetch.fetch("versions", uri=store, cache_dir="off")
    assert _missing(f) == {"untagged": [schema.DATA_TIME, LATER], "old": [LATER], "new": [LATER]}
    assert f.not_recorded.empty
    n = stats.numbers(f, TARGETS, EPOCH)
    assert "not recorded by this version" not in dict(text.scope_facts(n))
    assert "not-recorded" not in {t.id for t in text.tables(n)[1]}


def test_every_metric_added_after_version_1_says_which_version_brought_it():
    metrics = set(schema.EPOCH_METRICS) | set(schema.SUMMARY_METRICS)
    assert {m for m in metrics - VERSION_1 if schema.METRIC_SINCE.get(m, 1) < 2} == set(), \
        "give each new metric its record version in schema.METRIC_SINCE (the current RECORD_VERSION + 1)"
    assert set(schema.METRIC_SINCE) <= metrics - VERSION_1
    assert schema.RECORD_VERSION == max(schema.METRIC_SINCE.values(), default=1)


@pytest.mark.parametrize("tag, version", [(None, 1), ("1", 1), (str(NEW), NEW), ("70", 70), ("0", NEW),
                                          ("two", NEW), ("-2", NEW), ("²", NEW)])
def test_a_runs_record_version_is_its_tag_else_one_and_a_tag_not_ours_excuses_nothing(tag, version, version_new):
    tags = {} if tag is None else {schema.RECORD_VERSION_TAG: tag}
    assert schema.record_version(tags) == version  # "0", "two": not ours, read as the current version


def test_the_epoch_record_is_named_a_metric_a_pass_adds_is_one_more_key():
    train = {schema.TRAIN_TIME: 3.0, "peak_memory_mb": 512.0}  # a metric train_one_epoch might measure one day
    ev = {schema.ACCURACY: 0.5, schema.EVAL_TIME: 1.0}
    first = engine.epoch_metrics(train, ev, [])
    assert first == {schema.TRAIN_TIME: 3.0, "peak_memory_mb": 512.0, schema.ACCURACY: 0.5, schema.EVAL_TIME: 1.0,
                     schema.EPOCH_TIME: 4.0, schema.CLOCK: 4.0}
    assert engine.epoch_metrics(train, ev, [first])[schema.CLOCK] == 8.0


@pytest.mark.slow  # MlflowRun.log_start runs pip freeze (a process)
def test_a_run_is_tagged_with_its_record_version_at_start_and_a_resume_keeps_the_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under the working folder
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    uri = new_store(tmp_path / "mlflow.db")
    cfg = RunConfig(model="googlenet", dataset="digits", weights="none", epochs=1, system_metrics=False)
    filters = torch.zeros(4, 3, 3, 3)

    def start(run_id=None) -> str:
        run = tracking.MlflowRun(cfg, uri, "versions", run_name="r", run_id=run_id)
        run.log_start(cfg.to_params(), {}, [], filters)
        run.end("KILLED")
        return run.run_id

    rid = start()
    c = MlflowClient(uri)
    first = str(schema.RECORD_VERSION)
    assert c.get_run(rid).data.tags[schema.RECORD_VERSION_TAG] == first
    monkeypatch.setattr(schema, "RECORD_VERSION", schema.RECORD_VERSION + 1)  # resumed by newer code
    start(rid)
    assert c.get_run(rid).data.tags[schema.RECORD_VERSION_TAG] == first  # its first epochs are that version's
    old = c.create_run(c.get_experiment_by_name("versions").experiment_id, run_name="before the tag").info.run_id
    start(old)  # a run logged before the tag existed stays untagged: version 1
    assert schema.RECORD_VERSION_TAG not in c.get_run(old).data.tags
    assert c.get_run(start()).data.tags[schema.RECORD_VERSION_TAG] == str(schema.RECORD_VERSION)  # a new run
