"""What a sweep's parent run holds at the end: best value(s) and params, the trials table and
Optuna's plots (matplotlib, offline). Written by every sweep process whose workers are done; the
one that finds no trial RUNNING or WAITING ends the parent run FINISHED and writes the report."""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import csv_cells, report, tracking
from ..config import UserError
from ..schema import (BEST_PARAM_PREFIX, BEST_RUN_TAG, BEST_TRIAL_NUMBER_TAG, BEST_TRIAL_PREFIX, MLFLOW_RUN_ID_ATTR,
                      N_PARETO_METRIC, N_TRIALS_PREFIX, PARETO_TAG, STOPPED_BY_SIGNAL_ATTR, SURPLUS_ATTR)
from .study_file import StudySpec
from . import setup


def conclude(spec: StudySpec, storage, parent: str, experiment: str, uri: str, bad: bool, no_report: bool) -> int:
    """After the workers: the parent run's results (FINISHED when no trial is left), then the report. A parent
    run deleted meanwhile takes no results: the trials are kept in the study, and one line says how to go on."""
    st = optuna.load_study(study_name=spec.name, storage=storage)
    if tracking.run_deleted(parent, uri):
        n = counts(real_trials(st))
        raise UserError(f"{n.complete} complete, {n.pruned} pruned, {n.fail} failed, {n.running + n.waiting} left; "
                        + setup.parent_deleted(spec.name, parent, uri))
    n = finish(st, spec, parent, uri)
    print(f"[{spec.name}] {n.complete} complete, {n.pruned} pruned, {n.fail} failed"
          + (f" ({n.stopped} of them stopped by a signal and re-queued)" if n.stopped else "")
          + ("" if n.done else f", {n.running} running and {n.waiting} waiting elsewhere"),
          flush=True)
    if bad or not n.done or no_report:
        return 1 if bad else 0
    # The report of the finished study, attached to its parent run; its targets are the study file's.
    targets = tuple(sorted(set(spec.report_targets))) if spec.report_targets else report.DEFAULT_TARGETS
    return report.run(report.Request(experiment, study=spec.name, targets=targets, uri=uri))


def real_trials(st: optuna.Study) -> list:
    """Every trial but the surplus ones (created when the queue ran dry; they never trained)."""
    return [t for t in st.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)]


@dataclass(frozen=True)
class Counts:
    """A study's trials by Optuna state (surplus ones left out)."""
    complete: int
    pruned: int
    fail: int       # of them `stopped`: stopped by a signal and re-queued, not failed
    running: int
    waiting: int
    stopped: int

    @property
    def done(self) -> bool:
        return self.running == 0 and self.waiting == 0


STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)


def counts(trials: list) -> Counts:
    """The trials (real_trials) counted by state."""
    by_state = {s.name.lower(): sum(t.state == s for t in trials) for s in STATES}
    return Counts(**by_state, stopped=sum(t.state == TrialState.FAIL and STOPPED_BY_SIGNAL_ATTR in t.user_attrs
                                          for t in trials))


def finish(st: optuna.Study, spec: StudySpec, parent: str, uri: str) -> Counts:
    """Log results to the parent run (FINISHED when the study is done); returns the trial counts."""
    trials = real_trials(st)
    n = counts(trials)
    metrics = {N_TRIALS_PREFIX + s.name.lower(): getattr(n, s.name.lower()) for s in STATES}
    tags: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        files = [_trials_csv(st, trials, d / "trials.csv")]
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete and len(spec.objectives) == 1:
            best = st.best_trial
            metrics[BEST_TRIAL_PREFIX + spec.metrics[0]] = best.value
            tags.update({BEST_TRIAL_NUMBER_TAG: str(best.number),
                         BEST_RUN_TAG: str(best.user_attrs.get(MLFLOW_RUN_ID_ATTR, "")),
                         **{BEST_PARAM_PREFIX + k: str(v) for k, v in best.params.items()}})
            best_json = [_trial_json(best, spec)]
        elif complete:
            front = st.best_trials
            metrics[N_PARETO_METRIC] = len(front)
            tags[PARETO_TAG] = ",".join(str(t.number) for t in front)
            best_json = [_trial_json(t, spec) for t in front]
        else:
            best_json = []
        (d / "best_trials.json").write_text(json.dumps(best_json, indent=2, default=str))
        files += [d / "best_trials.json"] + _plots(st, spec, complete, d)
        tracking.log_run_data(parent, uri, metrics=metrics, tags=tags, files=files)
    if n.done:
        tracking.end_run(parent, "FINISHED", uri)
    return n


def _trial_json(t, spec: StudySpec) -> dict:
    return {"number": t.number, "values": dict(zip(spec.metrics, t.values)), "params": t.params,
            MLFLOW_RUN_ID_ATTR: t.user_attrs.get(MLFLOW_RUN_ID_ATTR)}


def _trials_csv(st: optuna.Study, trials: list, path: Path) -> Path:
    df = st.trials_dataframe(attrs=("number", "state", "values", "params", "user_attrs", "datetime_start",
                                    "datetime_complete", "duration"))
    if "user_attrs_surplus" in df:
        df = df[df["user_attrs_surplus"] != True].drop(columns="user_attrs_surplus")  # noqa: E712
    csv_cells.write_frame(df, path)  # trial params are text a user chose: no cell is a formula
    return path


def _plots(st: optuna.Study, spec: StudySpec, complete: list, d: Path) -> list[Path]:
    """Optuna's matplotlib plots; a plot Optuna cannot draw for this study is skipped, said on stderr."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vm

    if not complete:
        return []
    jobs = {}
    if len(spec.objectives) == 1:
        jobs["optimization_history.png"] = lambda: vm.plot_optimization_history(st, target_name=spec.metrics[0])
        jobs["param_importances.png"] = lambda: vm.plot_param_importances(st, target_name=spec.metrics[0])
        if spec.prunes:
            jobs["intermediate_values.png"] = lambda: vm.plot_intermediate_values(st)
    else:
        if len(spec.objectives) <= 3:
            jobs["pareto_front.png"] = lambda: vm.plot_pareto_front(st, target_names=spec.metrics)
        for i, m in enumerate(spec.metrics):
            jobs[f"param_importances_{m}.png"] = (
                lambda i=i, m=m: vm.plot_param_importances(st, target=lambda t: t.values[i], target_name=m))
    out = []
    for name, job in jobs.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = job()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.tight_layout()
            fig.savefig(d / name, dpi=110)
            plt.close(fig)
            out.append(d / name)
        except Exception as e:  # noqa: BLE001 - e.g. importances need 2+ trials with varying params
            print(f"[{spec.name}] plot {name} skipped: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
    return out
