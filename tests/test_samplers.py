"""Every `sampler:` a study file may name builds its own, seeded Optuna sampler (sweep/samplers.py)."""

from __future__ import annotations

import optuna
import pytest
import yaml

from googlenet_study.config import UserError
from googlenet_study.sweep import samplers, study_file, worker

# What each name must build. A name the study file accepts without a line here fails the first test.
EXPECTED = {
    "grid": optuna.samplers.RandomSampler,   # never asked: every grid point is an enqueued trial
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}


def spec_with(tmp_path, sampler: str) -> study_file.StudySpec:
    doc = {"name": "s", "base": {"model": "googlenet", "dataset": "digits", "weights": "none", "image_size": 16},
           "space": {"seed": [0, 1]}, "sampler": sampler, "n_trials": 2}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    return study_file.load(str(tmp_path / "s.yaml"))


def test_the_study_file_accepts_exactly_the_samplers_that_have_a_builder():
    assert study_file.SAMPLERS == tuple(samplers.SAMPLERS) == tuple(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_sampler_builds_its_own_optuna_sampler(tmp_path, name):
    made = worker.make_sampler(spec_with(tmp_path, name), seed=7)
    assert type(made) is EXPECTED[name]


def test_tpe_models_the_searched_fields_jointly(tmp_path):
    assert worker.make_sampler(spec_with(tmp_path, "tpe"), seed=7)._multivariate


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "grid"])
def test_each_sampler_is_seeded_by_the_workers_seed(name):
    def first_values(seed: int) -> list[float]:
        st = optuna.create_study(sampler=samplers.make(name, seed), directions=["maximize"] * (2 if name == "nsga2" else 1))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        out = []
        for _ in range(3):
            t = st.ask()
            out.append(t.suggest_float("lr", 1e-5, 1e-2, log=True))
            st.tell(t, [out[-1]] * len(st.directions))
        return out
    assert first_values(3) == first_values(3) != first_values(4)


def test_an_unknown_sampler_is_refused_naming_the_allowed_ones(tmp_path):
    with pytest.raises(UserError, match=r"sampler: got 'cmaes'; allowed: grid \| tpe \| random \| nsga2$"):
        spec_with(tmp_path, "cmaes")
