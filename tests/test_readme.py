"""The README is a contract: every command in README.md and docs/*.md is run here, as written, from a fresh
copy of the repository, or is listed below with the reason it cannot run on this machine.

The rule for what is a command:
- A command is a line of a fenced ```bash block (comments stripped, `\\` continuations joined, spaces
  collapsed). Every fenced block must name its language, so a command cannot hide in an unlabelled one:
  output goes in ```text blocks.
- Inline code in prose and tables (`googlenet-study train [--config FILE] ...`) is a synopsis or a reference,
  not a command: it is not run, but like every bash-block command it is checked statically (below).
- Every bash-block command is in exactly one of RUN (run as written; servers are started, polled for HTTP 200
  and stopped, on a free port instead of the documented one), SHRUNK (run with the declared extra
  arguments, because as written it costs minutes) or NOT_RUN (with the reason). A command added to the docs
  and in none of them fails `test_every_documented_command_is_run_or_listed`; an entry whose command left
  the docs fails it too, so the lists cannot rot.
- Static check, for every command and synopsis: a `googlenet-study` command parses with the real argument
  parser (a synopsis: each of its flags exists); `mlflow run` names an entry point and parameters the
  MLproject declares; a repository file it names exists; a script's `--flags` are in that script; `make X`
  is a Makefile target.

The fresh copy is the working tree's tracked and unignored files (`git ls-files -co --exclude-standard`,
i.e. what the next commit holds) plus a link to this venv (what `make setup` would build), with the venv's
bin first on PATH and no MLflow environment variables: the docs' default stores (`sqlite:///mlflow.db`,
`sqlite:///optuna.db`) land in that copy."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from helpers import ROOT, STATE_TIMEOUT_S, free_port
from helpers.servers import NO_JOBS, stop_mlflow_server

from googlenet_study import cli
from googlenet_study.sweep import study_file

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash", "yaml", "text", "python"}  # fenced block languages the docs may use (python: how
#                                                   another tool logs, docs/reports.md "Your own runs")
INLINE_COMMAND = re.compile(r"^(googlenet-study |python -m googlenet_study |mlflow run |make "
                            r"|(\.\./)?\.venv/bin/python |benchmarks/\w+\.py)")
REPORT_FILES = {"report.html", "report.pdf", "runs.csv", "summary.csv"}
PLACEHOLDER = re.compile(r"\[--|\.\.\.|\b[A-Z][A-Z_]{2,}\b")  # [--opt], ..., FILE / RUN_ID / DBHOST

DEMO = "googlenet-study sweep experiments/demo.yaml --workers 2"
# The demo as written trains 6 trials x 2 epochs on all of digits at 32 px (90 s quiet, 5 min loaded, on 2
# cores); shrunk, it still proves the file, the 2-worker path and the report at its end.
SHRUNK = {DEMO: "--set epochs=1 --set train_size=60 --set test_size=30 --set image_size=16 --n-trials 2"}

GPU = "needs a CUDA device, CIFAR-10 and the ImageNet weights (downloads); the lecture, not a test"
NOT_RUN = {
    "googlenet-study report --experiment plain --accuracy-metric val_acc --clock timestamps --targets 50,80 "
    "--tracking-uri sqlite:///mlflow.db": "runs with these flags in tests/test_foreign_runs.py (main([...])) on runs "
    "logged as Lightning's MLFlowLogger logs them; the docs quote that test's verdict",
    "googlenet-study report --experiment loop --accuracy-metric acc --clock metric:elapsed_s --targets 50,80":
        "runs with these flags in tests/test_foreign_runs.py on runs logged by a plain mlflow.log_metric loop",
    "make demo": "is DEMO after `make setup`; the demo itself runs here shrunk (SHRUNK)",
    "make test": "is the whole test suite, this file included: what CI runs",
    "make test-fast": "is the suite's fast tier (pytest -m fast), this file's fast tests included",
    "googlenet-study sweep experiments/lecture37.yaml": GPU,
    "googlenet-study train --device cuda": GPU,
    "MLFLOW_AUTH_CONFIG_PATH=basic_auth.ini mlflow server --app-name basic-auth --backend-store-uri "
    "postgresql://mlflow@db-host/mlflow --artifacts-destination /shared/mlartifacts --host 127.0.0.1 --port 5000":
        "a team server on db-host; tests/test_server.py starts this app on SQLite and checks 401 / login",
    "googlenet-study sweep experiments/factorial.yaml --tracking-uri https://mlflow.example.org ...":
        "a remote tracking server (mlflow.example.org) and 54 runs; `...` stands for the worker's own flags",
    "googlenet-study sweep FILE [--workers N] [--n-trials N] [--storage URL] [--tracking-uri URL] "
    "[--set field=value ...] [--checkpoint-dir DIR] [--no-report]":
        "a synopsis: placeholders, each flag checked against the parser",
    "googlenet-study sweep FILE --slurm-array N [--slurm-option KEY=VALUE ...] [--dry-run] [--wait]":
        "a synopsis (needs a Slurm cluster); docs/cluster.md's --dry-run runs here, tests/test_slurm.py submits",
    "mlflow run . -e sweep -P file=experiments/demo.yaml -P workers=2 --env-manager local":
        "the whole demo through MLflow Projects (minutes); tests/test_mlproject.py runs `-e sweep` on a tiny study",
    "createdb -h DBHOST -U postgres mlflow && createdb -h DBHOST -U postgres optuna":
        "a database host (DBHOST); tests/test_sweep_postgres.py does it on 127.0.0.1",
    "mlflow server --backend-store-uri postgresql://postgres:PASSWORD@DBHOST:5432/mlflow "
    "--artifacts-destination /srv/mlflow-artifacts --host 10.0.0.5 --port 5000":
        "binds a private interface (10.0.0.5) and uses DBHOST; tests/test_sweep_postgres.py runs it on 127.0.0.1",
    "googlenet-study sweep experiments/factorial.yaml --workers 1 --storage "
    "postgresql://postgres:PASSWORD@DBHOST:5432/optuna --tracking-uri http://10.0.0.5:5000":
        "the many-machines worker: needs DBHOST and the server on 10.0.0.5; tests/test_sweep_postgres.py",
    "createdb -h db.cluster -U postgres optuna && createdb -h db.cluster -U postgres mlflow":
        "the cluster's database host (db.cluster); tests/test_sweep_postgres.py makes databases on 127.0.0.1",
    "MLFLOW_AUTH_CONFIG_PATH=basic_auth.ini mlflow server --app-name basic-auth --backend-store-uri "
    "postgresql://mlflow:PASSWORD@db.cluster/mlflow --artifacts-destination /shared/mlartifacts --host 10.1.0.5 "
    "--port 5000": "the cluster's tracking server (db.cluster, 10.1.0.5); tests/test_server.py runs this app",
    "optuna-dashboard postgresql://alice:PASSWORD@db.cluster/optuna --host 127.0.0.1 --port 8080":
        "the cluster's database (db.cluster); the optuna-dashboard line of docs/sweeps.md runs on SQLite",
    ".venv/bin/python benchmarks/gpu_epoch.py --factorial": "a GPU benchmark (H100-sized); "
                                                            "tests/test_benchmarks.py runs it with --steps 1 on CPU",
    ".venv/bin/python benchmarks/gpu_epoch.py --factorial-only --factorial-set amp=bf16 "
    "--factorial-set channels_last=true": "a GPU benchmark; tests/test_benchmarks.py runs the script on CPU",
    "../.venv/bin/python frozen_vs_full.py --profile": "a benchmark: minutes of timing on 2 cores; "
                                                       "tests/test_benchmarks.py runs each script at its smallest",
    "../.venv/bin/python harness_vs_bare.py": "a benchmark (minutes); tests/test_benchmarks.py runs it small",
    "../.venv/bin/python feature_cache.py": "a benchmark (minutes); tests/test_benchmarks.py runs it small",
    "../.venv/bin/python input_pipeline.py": "a benchmark (minutes); tests/test_benchmarks.py runs it small",
    "../.venv/bin/python aux_cost.py": "a benchmark (minutes); tests/test_benchmarks.py runs it small",
    "../.venv/bin/python tracking_overhead.py": "a benchmark (minutes); tests/test_benchmarks.py runs it small",
    "../.venv/bin/python gpu_epoch.py --factorial": "a GPU benchmark; tests/test_benchmarks.py runs it on CPU",
    "python3 -m pip download -d wheels -r benchmarks/gpu_check_requirements.txt":
        "needs a network (PyPI); it fetches the wheels a bare GPU machine lacks",
    "benchmarks/gpu_check.sh": "the GPU check (8 minutes of a CUDA device); tests/test_benchmarks.py runs it tiny",
    "GPU_CHECK_TINY=1 benchmarks/gpu_check.sh":
        "tests/test_benchmarks.py::test_gpu_check_runs_every_part_on_cpu_and_writes_one_table runs exactly this",
}


# ---- extraction ---------------------------------------------------------------------------------------------
def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced block; the language is '' when the fence names none."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence and lang is None:
            lang, lines = fence.group(1), []
        elif fence:
            blocks.append((lang, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def strip_comment(line: str) -> str:
    """The line up to an unquoted `#` that starts a word (shell comment syntax)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def bash_commands(lines: list[str]) -> list[str]:
    """The commands of a bash block: comments dropped, continuations joined, whitespace collapsed."""
    commands, pending = [], ""
    for raw in lines:
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        cmd = " ".join((pending + line).split())
        pending = ""
        if cmd:
            commands.append(cmd)
    return commands


def documented_commands() -> dict[str, str]:
    """Every bash-block command of the docs -> the file it is in."""
    found = {}
    for doc in DOCS:
        for lang, lines in fenced_blocks(doc.read_text()):
            if lang == "bash":
                found.update({c: doc.name for c in bash_commands(lines)})
    return found


def inline_synopses() -> dict[str, str]:
    """Inline code outside fenced blocks that starts like a command -> the file it is in."""
    found = {}
    for doc in DOCS:
        prose = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for span in re.findall(r"`([^`]+)`", prose):
            if INLINE_COMMAND.match(span):
                found[" ".join(span.split())] = doc.name
    return found


# ---- static checks ------------------------------------------------------------------------------------------
def subcommand_flags() -> dict[str, set[str]]:
    """googlenet-study subcommand -> its option strings, from the real parser."""
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: set(p._option_string_actions) for name, p in sub.choices.items()}


def check_googlenet_study(words: list[str], synopsis: bool) -> None:
    words = words[words.index("googlenet_study") + 1:] if "googlenet_study" in words else words[1:]
    if words in ([], ["..."]):  # `python -m googlenet_study ...`: names nothing to check
        return
    sub, flags = words[0], subcommand_flags()
    assert sub in flags, f"no subcommand {sub!r}"
    if synopsis:
        named = {w.strip("[]").split("=")[0] for w in words if re.match(r"^\[?--[a-z]", w)}  # not --FIELD
        assert named <= flags[sub], f"flags the parser lacks: {named - flags[sub]}"
        return
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cli.build_parser().parse_args(words)
    except SystemExit:
        pytest.fail(f"the parser rejects it: {err.getvalue().strip()}")


def check_mlflow_run(words: list[str]) -> None:
    spec = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    entry = words[words.index("-e") + 1] if "-e" in words else "main"
    assert entry in spec, f"MLproject has no entry point {entry!r}"
    given = {words[i + 1].split("=")[0] for i, w in enumerate(words) if w == "-P" and i + 1 < len(words)}
    assert given <= set(spec[entry]["parameters"]), f"undeclared parameters: {given - set(spec[entry]['parameters'])}"


def check_script_flags(words: list[str], cwd: Path) -> None:
    script = next(w for w in words if w.endswith(".py"))
    path = next((p for p in (cwd / script, ROOT / script, ROOT / "benchmarks" / script) if p.exists()), None)
    assert path is not None, f"no script {script}"
    source = path.read_text()
    for flag in (w for w in words if w.startswith("--")):
        assert f'"{flag}"' in source, f"{script} has no flag {flag}"


def static_check(command: str, inline: bool = False) -> None:
    """The checks any documented command or synopsis must pass without running it."""
    synopsis = inline or bool(PLACEHOLDER.search(command))
    for part in command.split("&&"):
        words = shlex.split(part.replace("[", " [").replace("]", "] ")) if synopsis else shlex.split(part)
        words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]  # leading VAR=value assignments
        for w in words:
            if re.match(r"^(experiments|benchmarks|docs|reports)/[\w./-]+\.\w+$", w) and not PLACEHOLDER.search(w):
                assert (ROOT / w).exists(), f"no file {w}"
        if not words:
            continue
        if words[0] == "googlenet-study" or words[:3] == ["python", "-m", "googlenet_study"]:
            check_googlenet_study(words, synopsis)
        elif words[:2] == ["mlflow", "run"]:
            check_mlflow_run(words)
        elif words[0] == "make":
            targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
            assert words[1] in targets, f"no make target {words[1]}"
        elif any(w.endswith(".py") for w in words):
            check_script_flags(words, ROOT)


# ---- running, in a fresh copy -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> dict:
    """A fresh copy of the repository with this venv, and the environment a user's shell would have."""
    d = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():  # a tracked file deleted in the working tree is not in the next commit
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, d / f)
    (d / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PATH=f"{d / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
               GOOGLENET_STUDY_CACHE=str(d / ".cache"), PYTHONUNBUFFERED="1")
    return {"dir": d, "env": env, "uri": f"sqlite:///{d / 'mlflow.db'}"}


def sh(clone: dict, command: str, timeout: int = 540) -> subprocess.CompletedProcess:
    """Run one documented command with bash in the copy; it must succeed. Its own process group, so that a
    timeout also ends what it started (`mlflow run` -> `python -m googlenet_study ...`)."""
    proc = subprocess.Popen(["bash", "-c", command], cwd=clone["dir"], env=clone["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind
        proc.wait()
    assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def demo(clone) -> dict:
    """The demo study in the copy's default stores (shrunk), and its parent run's id."""
    p = sh(clone, f"{DEMO} {SHRUNK[DEMO]}")
    parent = re.search(r"parent run ([0-9a-f]{32})", p.stdout + p.stderr).group(1)
    assert REPORT_FILES <= {f.name for f in (clone["dir"] / "reports" / "demo").iterdir()}  # its report
    # ... timed to the study file's report_targets, not the report's defaults.
    targets = study_file.load(str(clone["dir"] / "experiments" / "demo.yaml")).report_targets
    columns = set(pd.read_csv(clone["dir"] / "reports" / "demo" / "summary.csv").columns)
    assert targets and {f"time_to_test_acc_{p:g}_ert" for p in targets} <= columns
    assert not {f"time_to_test_acc_{p:g}_ert" for p in (50, 60, 70, 80) if p not in targets} & columns
    return {"parent": parent}


def check_demo(clone, command, request) -> None:
    parent = request.getfixturevalue("demo")["parent"]
    c = MlflowClient(clone["uri"])
    exp = c.get_experiment_by_name("googlenet-study")
    runs = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


def report_into(folder: str | None) -> Callable:
    """A report command: it writes report.html and the rest into `folder` (or the folder it prints)."""
    def check(clone, command, request) -> None:
        request.getfixturevalue("demo")
        command = command.replace("RUN_ID", request.getfixturevalue("demo")["parent"])
        if folder:
            shutil.rmtree(clone["dir"] / folder, ignore_errors=True)
        p = sh(clone, command)
        out = folder or re.search(r"report: (\S+)/report\.html", p.stdout).group(1)
        assert REPORT_FILES <= {f.name for f in (clone["dir"] / out).iterdir()}
    return check


def serves(path: str, expect: str) -> Callable:
    """A server command: started on a free port, `path` answers 200 with `expect` in the body, then stopped."""
    def check(clone, command, request) -> None:
        request.getfixturevalue("demo")
        port = free_port()
        command = re.sub(r"--port \d+", f"--port {port}", command)
        log = clone["dir"] / f"server-{port}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=clone["dir"],
                                    env={**clone["env"], **NO_JOBS},  # no GenAI job runner beside it
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            body = poll(f"http://127.0.0.1:{port}{path}", proc, log)
            assert expect in body, body[:1000]
        finally:
            stop_mlflow_server(proc)  # the documented server: its process group, SIGKILL after 20 s
    return check


def poll(url: str, proc: subprocess.Popen, log: Path, limit_s: float = STATE_TIMEOUT_S) -> str:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return r.read().decode()
        except OSError:
            assert proc.poll() is None, f"the server exited {proc.returncode}: {log.read_text()[-2000:]}"
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer 200 in {limit_s} s: {log.read_text()[-2000:]}")


def exports(name: str, pattern: str) -> Callable:
    def check(clone, command, request) -> None:
        value = sh(clone, f"{command}\nprintenv {name}").stdout.strip()
        assert re.fullmatch(pattern, value), value
    return check


def prints_job_script(clone, command, request) -> None:
    """docs/cluster.md's --dry-run: the sbatch script on stdout, the password not in it, nothing made."""
    def made() -> dict:  # the clone is shared with the other commands: the demo's sweep leaves optuna.db there
        return {n: (p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None
                for n, p in ((n, clone["dir"] / n) for n in ("slurm", "optuna.db"))}
    before = made()
    out = sh(clone, command).stdout
    for line in ("#SBATCH --array=0-7", "#SBATCH --gres=gpu:1", "#SBATCH --signal=B:TERM@120", "#SBATCH --requeue",
                 "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=8", '--storage="${GOOGLENET_STUDY_STORAGE}"',
                 "--checkpoint-dir=/shared/alice/checkpoints"):
        assert line in out, out
    assert "PASSWORD" not in out and "alice:" not in out  # the URL is read from the environment
    assert made() == before and before["slurm"] is None  # no job folder, no study: nothing made


def trains(experiment: str) -> Callable:
    """A training command: one FINISHED run that learned (README: about 0.95), with the params it was given."""
    def check(clone, command, request) -> None:
        c = MlflowClient(clone["uri"])
        before = {r.info.run_id for e in c.search_experiments() for r in c.search_runs([e.experiment_id])}
        sh(clone, command)
        exp = c.get_experiment_by_name(experiment).experiment_id
        new = [r for r in c.search_runs([exp]) if r.info.run_id not in before]
        assert len(new) == 1 and new[0].info.status == "FINISHED" and new[0].data.metrics["best_test_acc"] >= 0.9
        given = dict(re.findall(r"-P (\w+)=(\S+)", command)) or {
            k.replace("-", "_"): v for k, v in re.findall(r"--([\w-]+) (\S+)", command)}
        assert {k: new[0].data.params[k] for k in given} == given
    return check


EXPERIMENT_1 = '"experiment_id": "1"'  # README's UI link is #/experiments/1/runs
RUN: dict[str, Callable] = {
    "googlenet-study train --model googlenet --weights none --dataset digits --image-size 32 --epochs 2":
        trains("googlenet-study"),
    "mlflow run . --env-manager local --experiment-name googlenet-study -P model=googlenet -P weights=none "
    "-P dataset=digits -P image_size=32 -P epochs=2": trains("googlenet-study"),
    "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000":
        serves("/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=googlenet-study", EXPERIMENT_1),
    "mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000":
        serves("/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=googlenet-study", EXPERIMENT_1),
    "optuna-dashboard sqlite:///optuna.db --host 127.0.0.1 --port 8080": serves("/api/studies", '"demo"'),
    "export MLFLOW_FLASK_SERVER_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))')":
        exports("MLFLOW_FLASK_SERVER_SECRET_KEY", r"[0-9a-f]{64}"),
    "export MLFLOW_TRACKING_USERNAME=alice MLFLOW_TRACKING_PASSWORD=...":
        exports("MLFLOW_TRACKING_USERNAME", "alice"),
    "googlenet-study report --experiment googlenet-study --study demo": report_into("reports/demo"),
    "googlenet-study report --experiment googlenet-study --parent-run RUN_ID --targets 60,70,80,90":
        report_into(None),
    "googlenet-study report --experiment googlenet-study --filter \"params.model = 'googlenet'\" --out reports/g/":
        report_into("reports/g"),
    "mlflow run . -e report -P study=demo --env-manager local": report_into("reports/demo"),
    "cd benchmarks": lambda clone, command, request: sh(clone, f"{command} && test -f harness_vs_bare.py"),
    "googlenet-study sweep experiments/factorial.yaml --slurm-array 8 --set device=cuda --storage "
    "postgresql://alice:PASSWORD@db.cluster/optuna --tracking-uri https://mlflow.cluster --checkpoint-dir "
    "/shared/alice/checkpoints --slurm-option partition=gpu --slurm-option time=12:00:00 "
    "--slurm-option cpus-per-task=8 --dry-run": prints_job_script,
}
SHRUNK_CHECKS: dict[str, Callable] = {DEMO: check_demo}


# ---- the tests ----------------------------------------------------------------------------------------------
def test_every_fenced_block_names_its_language():
    unnamed = [(d.name, i) for d in DOCS for i, (lang, _) in enumerate(fenced_blocks(d.read_text()))
               if lang not in LANGUAGES]
    assert unnamed == [], f"fenced blocks without one of {sorted(LANGUAGES)} (block index): {unnamed}"


def test_every_documented_command_is_run_or_listed():
    found = documented_commands()
    covered = [*RUN, *SHRUNK, *NOT_RUN]
    assert len(covered) == len(set(covered)), "a command is in more than one list"
    unlisted = {c: f for c, f in found.items() if c not in covered}
    assert unlisted == {}, "documented commands neither run (RUN, SHRUNK) nor listed with a reason (NOT_RUN)"
    gone = sorted(set(covered) - set(found))
    assert gone == [], "listed commands that no longer appear in the docs"


@pytest.mark.slow  # runs make
def test_make_demo_is_the_documented_demo_command():
    """NOT_RUN's reason for `make demo`: it is DEMO, which runs here (shrunk)."""
    recipe = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f".venv/bin/{DEMO}" in recipe.splitlines()


@pytest.mark.parametrize("command", sorted(documented_commands()))
def test_documented_command_names_what_exists(command):
    static_check(command)


@pytest.mark.parametrize("synopsis", sorted(inline_synopses()))
def test_inline_synopsis_names_what_exists(synopsis):
    static_check(synopsis, inline=True)


@pytest.mark.slow
@pytest.mark.parametrize("command", [*RUN, *SHRUNK], ids=lambda c: c[:80])
def test_documented_command_runs_as_written(command, clone, request):
    (RUN.get(command) or SHRUNK_CHECKS[command])(clone, command, request)
