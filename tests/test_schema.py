"""One schema: every metric, param and tag a run records is named in googlenet_study/schema.py and
documented in docs/reference.md's "What MLflow holds for every run"; the engine's per-epoch keys are the schema's."""

from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient

from googlenet_study import schema

from helpers.reference import FIELDS, MLFLOW_SECTION, reference_section, undocumented

def schema_names() -> dict[str, set[str]]:
    """Every name schema.py defines, by kind: names, prefixes (end in . or _), suffixes (start with _)."""
    out = {"name": set(), "prefix": set(), "suffix": set()}
    for attr, v in vars(schema).items():
        if attr.startswith("_") or not isinstance(v, (str, tuple, frozenset)):
            continue
        for n in ([v] if isinstance(v, str) else v):
            kind = "suffix" if n.startswith("_") else "prefix" if n.endswith((".", "_")) else "name"
            out[kind].add(n)
    return out


def test_every_name_in_the_schema_is_documented_in_the_reference():
    names = schema_names()
    assert not undocumented(names["name"])
    tokens = re.findall(r"`([^`\n]+)`", reference_section(MLFLOW_SECTION))
    assert {p for p in names["prefix"] if not any(t.startswith(p) for t in tokens)} == set()
    assert {s for s in names["suffix"] if not any(t.endswith(s) for t in tokens)} == set()


def test_the_documentation_check_fails_for_a_name_it_does_not_document():
    assert undocumented(["test_acc", "time_to_test_acc_70", "resolved.device", "n_trials_fail"]) == set()
    assert undocumented(["test_accuracy", "time_to_test_acc_x", "resolved.nonsense", "n_trials_lost",
                         "best_param.color"]) == {"test_accuracy", "time_to_test_acc_x", "resolved.nonsense",
                                                  "n_trials_lost", "best_param.color"}


@pytest.mark.slow  # reads conftest's shared_run
def test_a_real_run_records_only_names_the_schema_defines_and_the_reference_documents(shared_run):
    cfg, result = shared_run["cfg"], shared_run["result"]
    assert (cfg.backbone, cfg.target_accs) == ("frozen", (10, 99))  # frozen: the speed tags too; 99 % unreached
    assert set(result.history[0]) == set(schema.EPOCH_METRICS)  # engine.fit's keys are the schema's
    run = MlflowClient(shared_run["uri"]).get_run(result.run_id)
    metrics = {k for k in run.data.metrics if not k.startswith("system/")}
    params, tags = set(run.data.params), {k for k in run.data.tags if not k.startswith("mlflow.")}
    assert metrics == {*schema.EPOCH_METRICS, *schema.SUMMARY_METRICS, schema.time_to_target(10),
                       schema.FEATURE_CACHE_BUILD_S}  # frozen: trained on cached features
    assert params == {*FIELDS, *schema.MODEL_PARAMS}
    assert set(schema.SPEED_TAGS) <= tags <= {*schema.PROVENANCE_TAGS, *schema.RUN_TAGS, *schema.SPEED_TAGS,
                                              *schema.FEATURE_CACHE_TAGS}
    assert undocumented(metrics | params | tags) == set()
