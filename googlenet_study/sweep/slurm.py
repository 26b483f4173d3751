"""`googlenet-study sweep FILE --slurm-array N`: the study's workers as a Slurm job array.

A generated sbatch script, not submitit: the user can read it, keep it and resubmit it (it is
written to slurm/<study>.sbatch, or <study>-N.sbatch when a different file has that name: no file is
written over, and a refused submission deletes only the script it created). Each of the N array tasks runs `googlenet-study sweep FILE
--workers 1`, which joins the study this command created first (its parent run and grid queue
exist before any task starts): the exactly-once and resume guarantees are the sweep's (setup.py).

- one GPU per task (`--gres=gpu:1`) where the study asks for CUDA; CPU threads from the task's
  allocation (SLURM_CPUS_PER_TASK, read by processes.plan_workers);
- preemption: `--signal=B:TERM@120` (the batch shell is the worker itself, by `exec`): it checkpoints
  mid-epoch and ends its run KILLED, the trial goes back in the queue; `--requeue` lets Slurm requeue
  the task, which joins again and resumes that run from its checkpoint (which must be on shared storage);
- refused before anything exists: stores the other nodes cannot reach (an SQLite file, localhost),
  unless `--slurm-option nodes=1`; an option sbatch does not know (sbatch --test-only says so);
- the script cannot be hijacked by what it holds: a value with a newline or another unprintable
  character is refused; each value is quoted (shlex.quote in the `exec` line, sbatch's own quoting in
  `#SBATCH` lines); comments hold no value; a URL with a password or query string is written as
  "${GOOGLENET_STUDY_STORAGE}" / "${GOOGLENET_STUDY_TRACKING_URI}", set in sbatch's environment."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .. import tracking
from ..config import UserError, shown
from ..safe_files import create_new
from .study_file import StudySpec
from . import results, setup
from .storage import check_distinct, check_url

PREEMPT_SIGNAL = "B:TERM@120"  # s before the kill: a batch finishes and is checkpointed well within it
OURS = ("array", "signal", "requeue", "no-requeue", "wrap", "parsable", "test-only")  # set by this module
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "")
SCRIPT_DIR = "slurm"         # in the working folder: scripts and task logs
POLL_S = 5.0                 # s between squeue polls with --wait
ENV_STORAGE, ENV_TRACKING = "GOOGLENET_STUDY_STORAGE", "GOOGLENET_STUDY_TRACKING_URI"
OPTION_KEY = re.compile(r"[a-z][a-z0-9-]*")    # an sbatch long option's name
PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # an #SBATCH value that needs no quotes
HET_JOB_WORDS = ("hetjob", "packjob")          # anywhere in an #SBATCH line: a new component of the job
MAX_TASKS = 1000             # Slurm's default MaxArraySize is 1001: array indices 0-1000


@dataclass(frozen=True)
class Array:
    """A job array of `tasks` workers of one study: every value its script holds (checked by prepare)."""
    spec: StudySpec
    tasks: int
    storage_url: str
    uri: str
    options: dict[str, str] = field(default_factory=dict)  # --slurm-option: sbatch long option -> value (options())
    n_trials: int | None = None                  # --n-trials, passed on to every task
    sets: tuple[str, ...] = ()                   # --set field=value, passed on to every task
    cwd: str = field(default_factory=os.getcwd)  # the working folder: the tasks run there
    python: str = sys.executable                 # the interpreter the tasks run (this one)


def prepare(a: Array) -> Array:
    """`a`, once every check that needs neither Slurm nor a store has passed: one line each (exit 2) before
    anything exists."""
    check_tasks(a.spec, a.tasks, a.n_trials)
    check_values(a)
    check_url(a.storage_url)
    check_distinct(a.storage_url, a.uri)  # one SQLite file for both stores: refused before sbatch
    check_reachable(a.storage_url, a.uri, a.options)
    return a


def check_tasks(spec: StudySpec, tasks: int, n_trials: int | None) -> None:
    """At least one task, and no more than the study has trials for (as --workers is capped) or Slurm allows."""
    if tasks < 1:
        raise UserError(f"--slurm-array: must be an integer >= 1, got {tasks}")
    most = min(MAX_TASKS, max_trials(spec, n_trials))
    if tasks > most:
        raise UserError(f"--slurm-array: {tasks} tasks for a study of at most {max_trials(spec, n_trials)} trials; "
                        f"allowed: 1 to {most} (each task is one worker; Slurm arrays hold at most "
                        f"{MAX_TASKS + 1} tasks by default)")


def max_trials(spec: StudySpec, n_trials: int | None) -> int:
    """The most trials the study can run: --n-trials or its own; a race's grid times its max_seeds."""
    if spec.races:
        return max(1, len(spec.grid) * spec.racing.max_seeds)
    return n_trials if n_trials is not None else spec.n_trials


def check_values(a: Array) -> None:
    """Every value the script holds stays one line; none in an #SBATCH line splits the job."""
    for what, value in values(a):
        one_line(what, value)
    for what, value in sbatch_values(a):
        sbatch_safe(what, value)


def one_line(what: str, value: str) -> None:
    """Refuse a value that would not stay one line of text in the script (a newline starts a shell command)."""
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise UserError(f"{what}: holds {bad!r}, which a job script cannot carry; allowed: printable characters "
                        f"(no newline, tab or other control character), got {shown(tracking.redact(value))}")


def sbatch_safe(what: str, value: str) -> None:
    """Refuse what sbatch (and slurmctld) read in an #SBATCH line as the start of another job component."""
    if any(w in value.lower() for w in HET_JOB_WORDS):
        raise UserError(f"{what}: holds {' or '.join(HET_JOB_WORDS)}, which in an #SBATCH line starts another "
                        f"component of a heterogeneous job; got {shown(value)}")


def values(a: Array) -> list[tuple[str, str]]:
    """(what, value) for every value the script holds."""
    out = [("the study's name", a.spec.name), ("the study file's path", a.spec.path),
           ("--storage", a.storage_url), ("--tracking-uri", a.uri), ("the working folder", a.cwd),
           ("the Python interpreter's path", a.python)]
    out += [("--checkpoint-dir", a.spec.checkpoint_dir)] if a.spec.checkpoint_dir else []
    out += [("--set", s) for s in a.sets]
    for k, v in a.options.items():
        out += [("--slurm-option", k), (f"--slurm-option {k}", v)]
    return out


def sbatch_values(a: Array) -> list[tuple[str, str]]:
    """(what, value) for the values in #SBATCH lines."""
    return [("the study's name", a.spec.name), ("the working folder", a.cwd),
            *[(f"--slurm-option {k}", f"{k}={v}") for k, v in a.options.items()]]


def options(pairs: list[str]) -> dict[str, str]:
    """--slurm-option KEY=VALUE ... as sbatch long options {key: value}."""
    out = {}
    for pair in pairs:
        one_line("--slurm-option", pair)
        key, eq, value = pair.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not eq or not key or not value.strip():
            raise UserError(f"--slurm-option: expected KEY=VALUE (an sbatch long option), got {shown(pair)}")
        if not OPTION_KEY.fullmatch(key):
            raise UserError(f"--slurm-option: {shown(key)} is not an sbatch long option's name "
                            "(lowercase letters, digits and '-')")
        if key in OURS:
            raise UserError(f"--slurm-option {key}: set by googlenet-study ({', '.join(OURS)}); leave it out")
        out[key] = value.strip()
    return out


def one_node(opts: dict[str, str]) -> bool:
    """The array stays on one node: nodes=1 (as asked; per task in Slurm) or a nodelist of one host."""
    return opts.get("nodes") == "1" or ("nodelist" in opts and "," not in opts["nodelist"]
                                        and "[" not in opts["nodelist"])


def check_reachable(storage_url: str, uri: str, opts: dict[str, str]) -> None:
    """Refuse, in one line, a store that the array's other nodes cannot reach."""
    if one_node(opts):
        return
    keep = "or --slurm-option nodes=1 to keep the array on one node"
    for flag, url, use in (("--storage", storage_url, "postgresql://USER@DBHOST/DB"),
                           ("--tracking-uri", uri, "http(s)://MLFLOW-HOST:PORT")):
        if url.startswith("sqlite"):
            raise UserError(f"{flag} {tracking.redact(url)}: an SQLite file is not shared by the array's nodes; "
                            f"use {use}, {keep}")
        if _host(flag, url) in LOCAL_HOSTS:
            raise UserError(f"{flag} {tracking.redact(url)}: localhost is a different machine on every node; "
                            f"use {use} with a host name the nodes reach, {keep}")


def _host(flag: str, url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError as e:  # e.g. an unclosed [IPv6 address]
        raise UserError(f"{flag}: not a URL ({e})") from None


def wants_gpu(spec: StudySpec) -> bool:
    """The study asks for CUDA: device cuda / cuda:N in base or among the searched values."""
    values = [spec.base.get("device", "auto"), *spec.space.get("device", ())]
    return any(str(v).startswith("cuda") for v in values)


def has_secret(url: str) -> bool:
    """A URL that may hold a password: user:password@, a query string, or anything redact() would hide."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    return ":" in parts.netloc.rpartition("@")[0] or bool(parts.query) or tracking.redact(url) != url


def _ref(url: str, env: str) -> str:
    """The URL, shell-quoted; or, when it may hold a password, a reference to sbatch's environment."""
    return f'"${{{env}}}"' if has_secret(url) else shlex.quote(url)


def worker_command(a: Array) -> str:
    """What every array task runs, as one shell line: this study file as one worker (no report: the
    submitter writes it). `--flag=value` throughout, so no value is read as a flag of its own."""
    spec = a.spec
    words = [shlex.quote(w) for w in (a.python, "-m", "googlenet_study", "sweep", _absolute(a.cwd, spec.path),
                                       "--workers=1", "--no-report")]
    words += [f"--storage={_ref(a.storage_url, ENV_STORAGE)}", f"--tracking-uri={_ref(a.uri, ENV_TRACKING)}"]
    if spec.checkpoint_dir:
        words.append(shlex.quote(f"--checkpoint-dir={_absolute(a.cwd, spec.checkpoint_dir)}"))
    if a.n_trials is not None:
        words.append(f"--n-trials={int(a.n_trials)}")
    words += [shlex.quote(f"--set={s}") for s in a.sets]
    return " ".join(words)


def _absolute(cwd: str, path: str) -> str:
    """`path` as the tasks see it from any folder (they start in `cwd`)."""
    return os.path.normpath(os.path.join(cwd, path))


def sbatch_word(value: str) -> str:
    """A value as sbatch reads it from an #SBATCH line: plain, or in double quotes with \\ and " escaped."""
    if PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def script(a: Array) -> str:
    """The sbatch script of the array, to read, keep and resubmit."""
    check_values(a)  # as prepare() did: no script is made of unchecked values
    head = {"job-name": a.spec.name, "array": f"0-{a.tasks - 1}", "signal": PREEMPT_SIGNAL, "requeue": None,
            "open-mode": "append", "output": str(Path(a.cwd, SCRIPT_DIR, f"{a.spec.name}-%A_%a.out")),
            "chdir": a.cwd, **({"gres": "gpu:1"} if wants_gpu(a.spec) else {}), **a.options}
    lines = ["#!/bin/bash",
             f"# googlenet-study: {a.tasks} workers of one study (the exec line below), one per array task.",
             "# Preempted (SIGTERM 120 s before the kill) or cancelled with --signal=TERM: the worker",
             "# checkpoints, ends its run KILLED and re-queues its trial; a requeued task resumes it.",
             *[f"#SBATCH --{k}" + ("" if v is None else f"={sbatch_word(v)}") for k, v in head.items()]]
    if has_secret(a.storage_url) or has_secret(a.uri):
        lines.append(f"# {ENV_STORAGE} / {ENV_TRACKING}: set when it was submitted (they may hold a password)")
    lines.append("exec " + worker_command(a))
    return "\n".join(lines) + "\n"


def write_script(folder: Path, name: str, text: str) -> tuple[Path, bool]:
    """(where the script is, whether this call wrote it): <name>.sbatch, or the same script already there,
    else the first free <name>-N.sbatch. Created exclusively (O_EXCL, no link followed): a file someone else
    wrote, or an older script of ours, is never written over."""
    for n in range(1000):
        path = folder / (f"{name}.sbatch" if n == 0 else f"{name}-{n}.sbatch")
        try:
            create_new(path, text)
            return path, True
        except FileExistsError:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if not path.is_symlink() and path.is_file() and path.read_text(encoding="utf-8") == text:
                    return path, False  # this very script, from an earlier submission: submitted as it is
    raise UserError(f"--slurm-array: {folder} already holds {name}.sbatch and 999 more of its name; "
                    f"move the old scripts away")


def _sbatch(path: Path, env: dict, *extra: str) -> str:
    r = subprocess.run(["sbatch", *extra, str(path)], capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0:
        said = [x for x in (r.stderr + r.stdout).splitlines() if x.strip() and not x.startswith("Try ")]
        first = said[0] if said else f"exit status {r.returncode}"
        raise UserError(f"--slurm-array: sbatch refused the job ({tracking.redact(first)}); nothing submitted")
    return r.stdout.strip()


def submit(a: Array, wait: bool = False, no_report: bool = False) -> int:
    """Write the script, create the study, submit; with `wait`, wait and conclude like a local sweep."""
    text = script(a)
    if shutil.which("sbatch") is None:
        raise UserError("--slurm-array: sbatch is not on PATH; run this on a Slurm login node")
    spec = a.spec
    storage = setup.connect(spec, a.uri, a.storage_url)  # every store checked before a file is written
    folder = Path(a.cwd, SCRIPT_DIR)
    made_folder = not folder.exists()
    folder.mkdir(exist_ok=True)
    path, wrote = write_script(folder, spec.name, text)
    env = {**os.environ, ENV_STORAGE: a.storage_url, ENV_TRACKING: a.uri}
    try:
        _sbatch(path, env, "--test-only")  # an unknown option, partition or account: nothing exists yet
        st, created = setup.open_study(spec, a.uri, a.storage_url, storage)
    except BaseException:  # refused, or stopped by a signal before the study was ready: no script either
        if wrote:  # only the file this call created, and the folder only if this call made it (and it is empty)
            path.unlink()
            if made_folder:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    parent, experiment = st.user_attrs[setup.PARENT], st.user_attrs[setup.EXPERIMENT]
    job = _sbatch(path, env, "--parsable").split(";")[0]
    shown_path = Path(SCRIPT_DIR, path.name)
    print(f"[{spec.name}] {'created' if created else 'joined'} study in {tracking.redact(a.storage_url)}; parent run "
          f"{parent} (experiment {experiment!r}); submitted Slurm job array {job} ({a.tasks} tasks, "
          f"script {shown_path}). Follow it: squeue -j {job}; logs {SCRIPT_DIR}/{spec.name}-{job}_*.out", flush=True)
    if not wait:
        print(f"[{spec.name}] when it is done: googlenet-study report --experiment {shlex.quote(experiment)} "
              f"--study {spec.name}", flush=True)
        return 0
    wait_for_array(job)
    return results.conclude(spec, storage, parent, experiment, a.uri, False, no_report)


def wait_for_array(job: str) -> None:
    """Until no task of the array is pending or running (a requeued task counts as pending)."""
    while True:
        r = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True, timeout=60)
        if (r.returncode == 0 and not r.stdout.strip()) or "Invalid job id" in r.stderr:
            return  # gone from the queue (an old job's id is forgotten after MinJobAge)
        time.sleep(POLL_S)
