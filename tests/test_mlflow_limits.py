"""MLflow's limits are written once, in schema.py, and match the installed MLflow's own."""

from __future__ import annotations

from mlflow.utils import validation

from googlenet_study import schema


def test_schema_limits_are_the_installed_mlflows():
    assert schema.MLFLOW_MAX_PARAM_CHARS == validation.MAX_PARAM_VAL_LENGTH
    assert schema.MLFLOW_MAX_PARAMS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH


def test_a_parent_param_longer_than_mlflows_limit_is_cut_to_it(tracking_uri):
    from googlenet_study import tracking

    run_id = tracking.start_parent_run("limits", "p", {}, tracking_uri)
    many = {f"p{i}": "x" * (schema.MLFLOW_MAX_PARAM_CHARS + 5) for i in range(schema.MLFLOW_MAX_PARAMS_PER_BATCH + 3)}
    tracking.log_run_data(run_id, tracking_uri, params=many)  # two batches, each value cut
    params = tracking.client(tracking_uri).get_run(run_id).data.params
    assert len(params) == len(many)
    assert {len(v) for v in params.values()} == {schema.MLFLOW_MAX_PARAM_CHARS}
