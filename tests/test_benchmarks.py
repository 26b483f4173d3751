"""Every benchmark script (benchmarks/) runnable on CPU at its smallest setting.

Timings are never asserted: the benchmarks print them; these tests check that the scripts run and print their
table and ratio line. The speed work they measure is checked where it lives: the frozen-backbone shortcuts in
test_model.py, normalising before the resize in test_data.py."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from helpers import ROOT, new_store


# Each benchmark at its smallest setting: it must run on a CPU and print its table and ratio line.
SMOKE = {
    "harness_vs_bare.py": ["--repeats", "1", "--epochs", "2", "--train-size", "16", "--test-size", "10",
                           "--image-size", "16", "--batch-size", "8"],
    "input_pipeline.py": ["--images", "48", "--repeats", "1", "--batch-size", "16", "--workers", "1",
                          "--real-image-size", "16", "--real-train-size", "16"],
    "frozen_vs_full.py": ["--repeats", "1", "--epochs", "1", "--train-size", "16", "--test-size", "10",
                          "--image-size", "16", "--batch-size", "8"],
    "feature_cache.py": ["--repeats", "1", "--epochs", "2", "--train-size", "16", "--test-size", "10",
                         "--image-size", "16", "--batch-size", "8"],
    "aux_cost.py": ["--repeats", "1", "--steps", "1", "--image-size", "16", "--batch-size", "4",
                    "--inception-steps", "0"],
    "filter_grid.py": ["--repeats", "1", "--filters", "8", "--kernel", "3"],
    "tracking_overhead.py": ["--calls", "2", "--epochs", "1", "--train-size", "16", "--test-size", "10",
                             "--image-size", "16", "--batch-size", "8"],
    "gpu_epoch.py": ["--steps", "1", "--warmup", "0", "--batch-sizes", "2", "--amps", "none", "--channels-last", "off",
                     "--model", "googlenet", "--image-size", "16", "--factorial", "--factorial-batch-sizes", "2",
                     "--factorial-set", "model=googlenet", "--factorial-set", "image_size=16"],
}
# One fresh process runs them all as `__main__`, one after another (torch and mlflow import once).
RUNNER = """
import runpy, sys, traceback
sys.path.insert(0, {bench!r})
for script, argv in {smoke!r}.items():
    print("=== " + script, flush=True)
    sys.argv = [script, *argv]
    try:
        runpy.run_path({bench!r} + "/" + script, run_name="__main__")
    except BaseException:
        print("=== FAILED " + script, flush=True)
        traceback.print_exc()
    sys.stdout.flush()
"""


@pytest.fixture(scope="module")
def smoke_output(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bench")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/unused.db"}
    code = RUNNER.format(bench=str(ROOT / "benchmarks"), smoke=SMOKE)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    sections = re.split(r"^=== (\S+)\n", p.stdout, flags=re.M)[1:]
    out = dict(zip(sections[::2], sections[1::2]))
    return {k: v + (p.stderr[-3000:] if "=== FAILED" in v else "") for k, v in out.items()}


@pytest.mark.slow  # each benchmark script in a fresh process
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_on_cpu_and_prints_its_ratio(script, smoke_output):
    out = smoke_output.get(script, "")
    assert "=== FAILED" not in out, out
    assert re.search(r"^-{3,}  -{3,}", out, re.M), out  # a table
    assert re.search(r"^ratio [^\n]*?\d+(\.\d+)?", out, re.M), out


@pytest.fixture(scope="module")
def gpu_check_tiny(tmp_path_factory) -> dict:
    """benchmarks/gpu_check.sh --tiny, as CI runs it: every part at toy sizes on the CPU."""
    tmp = tmp_path_factory.mktemp("gpu-check")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "PYTHON": sys.executable, "GPU_CHECK_TINY": "1",
           "GPU_CHECK_WHEELS": str(tmp / "no-wheels")}
    p = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp / "out")], capture_output=True,
                       text=True, cwd=tmp, env=env, timeout=400)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    return {"out": tmp / "out", "stdout": p.stdout}


@pytest.mark.slow  # benchmarks/gpu_check.sh
def test_gpu_check_runs_every_part_on_cpu_and_writes_one_table(gpu_check_tiny):
    out, stdout = gpu_check_tiny["out"], gpu_check_tiny["stdout"]
    text = (out / "gpu_check.txt").read_text()
    assert text in stdout  # the table printed is the table written
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("part "))
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[start + 2:]]
    assert {r[0] for r in rows} == set("abcdef"), text
    assert not [r for r in rows if "failed" in r[1:3] or r[1] == "skipped"], text
    # (a) gpu_epoch's grid at the tiny sizes: channels_last off and on at batch 2.
    assert sum(r[0] == "a" for r in rows) == 2
    # (f) the factorial study, its batch sizes shrunk to [2]: 3 seeds x 3 aux weights x 2 backbones, at 466 s an epoch.
    lecture = next(r for r in rows if r[0] == "f" and "lecture" in r[1])
    assert "18 runs x 10 epochs" in lecture[1] and lecture[2] == f"{18 * 10 * 466 / 3600:,.1f} h"
    assert re.search(r"^ratio googlenet-study / lecture's way \(training img/s\): \d", stdout, re.M)
    assert not (out / "checkpoints").exists()  # run checkpoints and feature caches are removed


@pytest.mark.slow
def test_gpu_check_records_real_runs_on_fake_data_in_its_own_mlflow_store(gpu_check_tiny):
    from mlflow import MlflowClient

    from googlenet_study.config import field_names

    c = MlflowClient(f"sqlite:///{gpu_check_tiny['out'] / 'mlflow.db'}")
    names = ["b"] + (["d-off", "d-auto"] if "feature_cache" in field_names() else [])
    for name in names:
        (run,) = c.search_runs([c.get_experiment_by_name(f"gpu-check-{name}").experiment_id])
        p = run.data.params
        assert run.info.status == "FINISHED" and (p["dataset"], p["device"], p["weights"]) == ("fake", "cpu", "none")
        assert p["epochs"] == ("1" if name == "b" else "2") and p["backbone"] == ("full" if name == "b" else "frozen")
        if name != "b":
            assert run.data.tags["feature_cache"] == {"d-off": "off", "d-auto": "built"}[name]


@pytest.mark.slow  # two MLflow stores written
@pytest.mark.parametrize("kind", ["synthetic_runs", "foreign_runs"])
def test_report_scale_fast_log_writes_the_rows_mlflows_client_writes(kind, tmp_path):
    """report_scale.py --fast-log (SQL) and its default (MLflow's client) leave the same rows in every table,
    run ids and the runs' start time aside: the 10,000-run benchmark measures a store MLflow made."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report_scale
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    dumps = []
    for name, log in (("client", report_scale.log_with_client), ("sql", report_scale.log_with_sql)):
        uri = new_store(tmp_path / f"{name}.db")
        log(uri, "scale", getattr(report_scale, kind)(3, 4))  # the generator's seed is fixed: the same curves
        dumps.append(_rows_by_run(tmp_path / f"{name}.db"))
    assert dumps[0] == dumps[1]
    assert len(dumps[0]["metrics"]) == sum(len(r.metrics) for r in getattr(report_scale, kind)(3, 4)) > 3 * 4


def _rows_by_run(db) -> dict[str, list]:
    """Every run table's rows, the run id replaced by the run's name and times made relative to its start."""
    con = sqlite3.connect(db)
    start = {u: (name, t) for u, name, t in con.execute("SELECT run_uuid, name, start_time FROM runs")}
    out = {"runs": sorted((name, st, end - t, art.rsplit("/", 3)[-3], exp) for name, st, end, art, exp, t in con.execute(
        "SELECT name, status, end_time, artifact_uri, experiment_id, start_time FROM runs"))}
    assert len(out["runs"]) == 3 and all(r[3] == str(r[4]) for r in out["runs"])  # mlruns/<experiment>/<run>
    for table, cols in (("tags", "key, value"), ("params", "key, value"),
                        ("metrics", "key, value, timestamp, step, is_nan"),
                        ("latest_metrics", "key, value, timestamp, step, is_nan")):
        rows = []
        for row in con.execute(f"SELECT run_uuid, {cols} FROM {table}"):
            name, t = start[row[0]]
            rows.append((name, *row[1:3], *([row[3] - t, *row[4:]] if table.endswith("metrics") else [])))
        out[table] = sorted(rows)
    con.close()
    return out
