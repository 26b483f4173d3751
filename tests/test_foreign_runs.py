"""Issue 28: the report for any MLflow experiment. Runs are logged here the way other tools log them, through
the real MLflow client into a real SQLite store: Lightning's MLFlowLogger (log_batch of hyperparameters, then
per validation a batch of metrics at the trainer's global step with time.time() in ms, and an `epoch` metric
beside them) and a hand-written loop (mlflow.start_run, mlflow.log_param, mlflow.log_metric). Times are set
explicitly (start_time, each value's timestamp) so every time to target below is checked by hand."""

from __future__ import annotations

import csv
import html
import re

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from googlenet_study import schema
from googlenet_study.cli import main

# Each test builds reports (figures, HTML: 5-15 s); none reads report.pdf, so WeasyPrint is skipped (no_pdf).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_pdf")]

T0 = 1_700_000_000_000  # ms since 1970: every run's start_time here
LR_FAST, LR_SLOW = "0.01", "0.001"
# val_acc (a fraction) per validation, and the seconds after the run's start at which each was logged.
# lr 0.01 reaches 0.8 by its second validation in every seed; lr 0.001 reaches 0.8 only in seed 0 (at its
# fourth) and never in seeds 1 and 2: those are censored at their last value's time.
CURVES = {
    (LR_FAST, 0): ([0.55, 0.82, 0.90, 0.91], [30.0, 61.5, 90.0, 120.0]),
    (LR_FAST, 1): ([0.61, 0.80, 0.88, 0.90], [31.0, 62.0, 93.0, 124.0]),
    (LR_FAST, 2): ([0.45, 0.81, 0.86, 0.89], [29.0, 58.0, 87.0, 116.0]),
    (LR_SLOW, 0): ([0.30, 0.52, 0.70, 0.81], [30.0, 60.0, 90.0, 121.0]),
    (LR_SLOW, 1): ([0.25, 0.49, 0.66, 0.74], [30.5, 61.0, 91.5, 122.0]),
    (LR_SLOW, 2): ([0.28, 0.51, 0.69, 0.77], [29.5, 59.0, 88.5, 118.0]),
}
STEPS_PER_EPOCH = 50  # Lightning logs at the global step: 50, 100, 150, 200


def log_like_lightning(uri: str, experiment: str, curves=CURVES, accuracy: str = "val_acc") -> list[str]:
    """What lightning.pytorch.loggers.MLFlowLogger sends: create_run (a generated name), log_batch of the
    flattened hyperparameters (a per-run log_dir among them), per validation one log_batch of metrics at the
    global step with the wall-clock timestamp (plus Lightning's own `epoch`), set_terminated FINISHED."""
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    eid = exp.experiment_id if exp else c.create_experiment(experiment)
    ids = []
    for i, ((lr, seed), (accs, secs)) in enumerate(sorted(curves.items())):
        run = c.create_run(eid, start_time=T0, run_name=f"lightning-{i}")
        rid = run.info.run_id
        c.log_batch(rid, params=[Param("lr", lr), Param("batch_size", "64"), Param("seed", str(seed)),
                                 Param("log_dir", f"lightning_logs/version_{i}")])
        for e, (a, s) in enumerate(zip(accs, secs)):
            ts = T0 + round(s * 1000)
            step = (e + 1) * STEPS_PER_EPOCH
            c.log_batch(rid, metrics=[Metric(accuracy, a, ts, step), Metric("epoch", float(e), ts, step),
                                      Metric("val_loss", 1.0 - a, ts, step),
                                      Metric("train_loss", 2.0 - a, ts - 500, step - 1)])
        c.set_terminated(rid, "FINISHED", end_time=T0 + round(secs[-1] * 1000) + 1000)
        ids.append(rid)
    return ids


def log_plainly(uri: str, experiment: str, curves=CURVES) -> dict[tuple[str, int], tuple[str, int]]:
    """A hand-written loop with MLflow's fluent API: start_run, log_param, log_metric(step=epoch) with its own
    timestamp and an `elapsed_s` metric of cumulative seconds. Returns {(lr, seed): (run_id, start_time)}."""
    # The experiment by id, not mlflow.set_experiment: that exports MLFLOW_EXPERIMENT_ID to this process's
    # environment, and a later test's `mlflow run --experiment-name` subprocess would inherit it.
    eid = MlflowClient(uri).create_experiment(experiment)
    mlflow.set_tracking_uri(uri)
    out = {}
    try:
        for (lr, seed), (accs, secs) in sorted(curves.items()):
            with mlflow.start_run(experiment_id=eid) as run:
                start = run.info.start_time
                mlflow.log_param("lr", lr)
                mlflow.log_param("seed", seed)
                for e, (a, s) in enumerate(zip(accs, secs), start=1):
                    mlflow.log_metric("acc", a, step=e, timestamp=start + round(s * 1000))
                    mlflow.log_metric("elapsed_s", s, step=e, timestamp=start + round(s * 1000))
            out[(lr, seed)] = (run.info.run_id, start)
    finally:
        mlflow.set_tracking_uri(None)
    return out


def rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def text_of(html_file) -> str:
    """The report's visible text: tags dropped, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", html_file.read_text())))


def report(tmp_path, uri, experiment, *extra, out="rep") -> tuple[int, object]:
    target = tmp_path / out
    rc = main(["report", "--experiment", experiment, "--tracking-uri", uri, "--out", str(target), *extra])
    return rc, target


def first_time_to(accs, secs, p: float) -> float | None:
    """By hand: the first logged value at or above p percent, on the timestamps clock."""
    return next((s for a, s in zip(accs, secs) if a * 100 >= p), None)


@pytest.fixture
def lightning_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = log_like_lightning(uri, "plain")
    return uri, ids


def test_lightning_runs_give_a_report_on_the_timestamps_clock(tmp_path, lightning_store, capsys):
    uri, _ = lightning_store
    rc, out = report(tmp_path, uri, "plain", "--accuracy-metric", "val_acc", "--clock", "timestamps",
                     "--targets", "50,80")
    assert rc == 0, capsys.readouterr().err
    runs = rows(out / "runs.csv")
    per_run = {r["run_name"]: r for r in runs}
    assert len(per_run) == 6
    # configurations by lr alone: batch_size never varies, seed is the seed, log_dir differs in every run
    configs = {r["configuration"] for r in runs}
    assert len(configs) == 2 and all("lr" in c and "log_dir" not in c for c in configs), configs
    for i, ((lr, seed), (accs, secs)) in enumerate(sorted(CURVES.items())):
        r = per_run[f"lightning-{i}"]
        assert r["lr"] == lr and r["seed"] == str(seed)
        for p in (50, 80):
            want = first_time_to(accs, secs, p)
            got = r[schema.time_to_target(p)]
            if want is None:  # never reached: no time, censored at the last accuracy value's time
                assert got == "" and r[f"reached_{p}"] == "False", (i, p, r)
            else:
                assert float(got) == pytest.approx(want, abs=1e-3), (i, p, got, want)
                assert r[f"reached_{p}"] == "True"
        # one row per logged accuracy value, in step order: the k-th validation is "epoch" k
        assert [float(x["val_acc"]) for x in runs if x["run_name"] == f"lightning-{i}"] == accs
    summary = {r["lr"]: r for r in rows(out / "summary.csv")}
    ert = schema.time_to_target(80) + "_ert"
    assert summary[LR_FAST]["rank"] == "1" and summary[LR_SLOW]["rank"] == "2"
    # ERT by hand: the seconds every run spent until it reached 80 % or ended, over the runs that reached it.
    # lr 0.01: 61.5 + 62 + 58 over 3; lr 0.001: seed 0 reached at 121 s, seeds 1 and 2 are censored at their
    # last value's time (122 s, 118 s), so (121 + 122 + 118) / 1.
    assert float(summary[LR_FAST][ert]) == pytest.approx((61.5 + 62 + 58) / 3)
    assert float(summary[LR_SLOW][ert]) == pytest.approx(121 + 122 + 118)
    assert float(summary[LR_SLOW][schema.time_to_target(80) + "_reached"]) == pytest.approx(1 / 3)  # a fraction
    text = text_of(out / "report.html")
    assert "First by ERT to 80 % on the timestamps clock: lr=0.01 (60.5 s" in text
    assert "log-rank p = 0.100" in text  # 3 vs 3, complete separation: the exact permutation p is 2/20
    assert "whose runs 6 runs not logged by googlenet-study" in text, text[:3000]
    assert "accuracy metric val_acc" in text and "clock timestamps" in text
    assert "runs missing some metrics 0" in text  # another tool's runs never had this tool's metrics
    assert "log_dir differs in every run" in text and "--by" in text
    assert "hardware not recorded" in text


def test_by_names_the_configuration_and_seed_param_the_seeds(tmp_path, lightning_store):
    uri, _ = lightning_store
    rc, out = report(tmp_path, uri, "plain", "--accuracy-metric", "val_acc", "--clock", "timestamps",
                     "--by", "lr,batch_size", "--targets", "80")
    assert rc == 0
    assert {r["configuration"] for r in rows(out / "runs.csv")} == {"lr=0.001", "lr=0.01"}
    assert "configurations by --by lr,batch_size" in text_of(out / "report.html")
    # --seed-param lr: lr becomes the seed, so every run is one configuration of (batch_size) ...
    rc, out = report(tmp_path, uri, "plain", "--accuracy-metric", "val_acc", "--clock", "timestamps",
                     "--seed-param", "lr", "--targets", "80", out="rep2")
    assert rc == 0
    runs = rows(out / "runs.csv")
    assert len({r["configuration"] for r in runs}) == 1 and {r["seed"] for r in runs} == {LR_FAST, LR_SLOW}


def test_plain_log_metric_runs_on_a_cumulative_seconds_metric(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logged = log_plainly(uri, "loop")
    rc, out = report(tmp_path, uri, "loop", "--accuracy-metric", "acc", "--clock", "metric:elapsed_s",
                     "--targets", "80")
    assert rc == 0
    by_id = {r["run_id"]: r for r in rows(out / "runs.csv")}
    for key, (rid, _) in logged.items():
        accs, secs = CURVES[key]
        want = first_time_to(accs, secs, 80)
        got = by_id[rid][schema.time_to_target(80)]
        assert (got == "" if want is None else float(got) == pytest.approx(want)), (key, got, want)
    # the same runs on their MLflow timestamps: the same times (logged at start + elapsed_s)
    rc, out2 = report(tmp_path, uri, "loop", "--accuracy-metric", "acc", "--clock", "timestamps",
                      "--targets", "80", out="rep_ts")
    assert rc == 0
    by_id2 = {r["run_id"]: r for r in rows(out2 / "runs.csv")}
    ttt = schema.time_to_target(80)
    assert {k: v[ttt] for k, v in by_id.items()} == {k: v[ttt] for k, v in by_id2.items()}


def test_percent_values_are_invalid_with_a_hint(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pct = {k: ([a * 100 for a in accs], secs) for k, (accs, secs) in CURVES.items()}
    pct.update({k: v for k, v in CURVES.items() if k[0] == LR_FAST})  # the fast lr logs fractions
    log_like_lightning(uri, "pct", curves=pct)
    rc, out = report(tmp_path, uri, "pct", "--accuracy-metric", "val_acc", "--clock", "timestamps",
                     "--targets", "80")
    assert rc == 0
    text = text_of(out / "report.html")
    assert "outside [0, 1]" in text and "percent" in text


BAD = [
    (["--accuracy-metric", "val_accuracy"], "--accuracy-metric", "val_acc"),   # lists the metrics that exist
    (["--accuracy-metric", "val_acc", "--by", "learning_rate"], "--by", "log_dir"),  # lists the params
    (["--accuracy-metric", "val_acc", "--clock", "metric:val_acc"], "--clock", "cumulative"),
    (["--accuracy-metric", "val_acc", "--clock", "metric:val_loss"], "--clock", "goes down"),  # not seconds
    (["--accuracy-metric", "val_acc", "--seed-param", "run_seed"], "--seed-param", "batch_size"),
    (["--accuracy-metric", "val_acc", "--clock", "metric:nope"], "--clock", "nope"),
    (["--accuracy-metric", "val_acc", "--clock", "stopwatch"], "--clock", "timestamps"),
    (["--accuracy-metric", "val_acc"], "elapsed_time_s", "--clock timestamps"),  # this tool's clock: no run has it
]


@pytest.mark.parametrize("extra,field,hint", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, lightning_store, capsys, extra, field, hint):
    uri, _ = lightning_store
    capsys.readouterr()
    rc, out = report(tmp_path, uri, "plain", *extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert field in err and hint in err, err
    assert not out.exists()


def test_a_mixed_experiment_counts_both_kinds(tmp_path, tiny_cfg, capsys):
    """This tool's runs and another tool's in one experiment: on the timestamps clock and test_acc, both count
    and Scope says how many are which."""
    import dataclasses

    from googlenet_study.train import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for seed in (0, 1):
        train(dataclasses.replace(tiny_cfg, seed=seed, epochs=2), uri, "mixed")
    theirs = {k: v for k, v in CURVES.items() if k[0] == LR_FAST and k[1] < 2}
    log_like_lightning(uri, "mixed", curves=theirs, accuracy="test_acc")
    rc, out = report(tmp_path, uri, "mixed", "--clock", "timestamps", "--targets", "10")
    assert rc == 0, capsys.readouterr().err
    text = text_of(out / "report.html")
    assert "2 runs logged by googlenet-study and 2 runs not" in text, text[:3000]
    assert len(rows(out / "summary.csv")) >= 2
