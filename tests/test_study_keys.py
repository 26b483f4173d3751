"""A study file's keys are defined once (sweep/study_file.py: StudySpec's fields); the docs and the parent
run's params follow them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from googlenet_study import schema, tracking
from googlenet_study.sweep import setup, study_file

SWEEPS_MD = Path(__file__).resolve().parent.parent / "docs" / "sweeps.md"


def test_docs_sweeps_md_shows_every_study_file_key_and_no_other():
    text = SWEEPS_MD.read_text()
    blocks = "\n".join(re.findall(r"```yaml\n(.*?)```", text, flags=re.S))
    top = set(re.findall(r"^#? ?([a-z_]+):", blocks, flags=re.M))  # a key at the start of a line (or commented out)
    nested = set(re.findall(r"^  ([a-z_]+):", blocks, flags=re.M))
    assert top == set(study_file.KEYS)
    assert set(study_file.RACING_KEYS) <= nested


def test_the_parent_run_logs_the_study_file_keys_under_their_own_names(tmp_path, tracking_uri):
    doc = {"name": "k", "base": {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16},
           "space": {"lr": [0.01, 0.1]}, "pruner": "wallclock_median"}
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(doc))
    spec = study_file.load(str(tmp_path / "k.yaml"))
    run_id = tracking.start_parent_run("keys", "k", {}, tracking_uri)
    setup.log_parent_start(spec, run_id, "sqlite:///optuna.db", tracking_uri)
    params = tracking.client(tracking_uri).get_run(run_id).data.params
    own = {k for k in params if not k.startswith((schema.BASE_PREFIX, schema.SPACE_PREFIX))}
    assert own == set(schema.PARENT_PARAMS)
    settings = own - {schema.STUDY_TAG, schema.STORAGE_TAG, schema.STUDY_FILE_PARAM}
    assert settings <= set(study_file.KEYS)  # a setting's param is named as its key in the file
    assert all(params[k] == str(getattr(spec, k)) for k in settings - {"objectives", "pruner_warmup_s"})
