"""`googlenet-study sweep FILE --slurm-array N`: the study's workers as a Slurm job array.

A generated sbatch script, not submitit: the user can read it, keep it and resubmit it (it is
written to slurm/<study>.sbatch). Each of the N array tasks runs `googlenet-study sweep FILE
--workers 1`, which joins the study this command created first (its parent run and grid queue
exist before any task starts): the exactly-once and resume guarantees are sweep.py's.

- one GPU per task (`--gres=gpu:1`) where the study asks for CUDA; CPU threads from the task's
  allocation (SLURM_CPUS_PER_TASK, read by sweep.plan_workers);
- preemption: `--signal=B:TERM@120` (the batch shell is the worker itself, by `exec`): it checkpoints
  mid-epoch and ends its run KILLED, the trial goes back in the queue; `--requeue` lets Slurm requeue
  the task, which joins again and resumes that run from its checkpoint (which must be on shared storage);
- refused before anything exists: stores the other nodes cannot reach (an SQLite file, localhost),
  unless `--slurm-option nodes=1`; an option sbatch does not know (sbatch --test-only says so)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from . import tracking
from .config import UserError
from .optuna_storage import default_storage
from .study import StudySpec

PREEMPT_SIGNAL = "B:TERM@120"  # s before the kill: a batch finishes and is checkpointed well within it
OURS = ("array", "signal", "requeue", "no-requeue", "wrap", "parsable", "test-only")  # set by this module
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "")
SCRIPT_DIR = Path("slurm")   # beside the working folder: scripts and task logs
POLL_S = 5.0                 # s between squeue polls with --wait
ENV_STORAGE, ENV_TRACKING = "GOOGLENET_STUDY_STORAGE", "GOOGLENET_STUDY_TRACKING_URI"


def options(pairs: list[str]) -> dict[str, str]:
    """--slurm-option KEY=VALUE ... as sbatch long options {key: value}."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not eq or not key or not value.strip():
            raise UserError(f"--slurm-option: expected KEY=VALUE (an sbatch long option), got {pair!r}")
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
        shown = tracking.redact(url)
        if url.startswith("sqlite"):
            raise UserError(f"{flag} {shown}: an SQLite file is not shared by the array's nodes; use {use}, {keep}")
        if (urlparse(url).hostname or "") in LOCAL_HOSTS:
            raise UserError(f"{flag} {shown}: localhost is a different machine on every node; use {use} "
                            f"with a host name the nodes reach, {keep}")


def wants_gpu(spec: StudySpec) -> bool:
    """The study asks for CUDA: device cuda / cuda:N in base or among the searched values."""
    values = [spec.base.get("device", "auto"), *spec.space.get("device", ())]
    return any(str(v).startswith("cuda") for v in values)


def worker_command(spec: StudySpec, args, storage_url: str, uri: str) -> list[str]:
    """What every array task runs: this study file as one worker (no report: the submitter writes it)."""
    cmd = [sys.executable, "-m", "googlenet_study", "sweep", str(Path(spec.path).resolve()), "--workers", "1",
           "--no-report", "--storage", _ref(storage_url, ENV_STORAGE), "--tracking-uri", _ref(uri, ENV_TRACKING)]
    if spec.checkpoint_dir:
        cmd += ["--checkpoint-dir", str(Path(spec.checkpoint_dir).resolve())]
    if args.n_trials is not None:
        cmd += ["--n-trials", str(args.n_trials)]
    for s in args.set:
        cmd += ["--set", s]
    return cmd


def _ref(url: str, env: str) -> str:
    """The URL as written, or a reference to the environment when it has a password (never in a file)."""
    return url if tracking.redact(url) == url else f'"${{{env}}}"'


def script(spec: StudySpec, args, storage_url: str, uri: str, opts: dict[str, str]) -> str:
    """The sbatch script of the array, to read, keep and resubmit."""
    n = args.slurm_array
    head = {"job-name": spec.name, "array": f"0-{n - 1}", "signal": PREEMPT_SIGNAL, "requeue": None,
            "open-mode": "append", "output": str((SCRIPT_DIR / f"{spec.name}-%A_%a.out").resolve()),
            "chdir": os.getcwd(), **({"gres": "gpu:1"} if wants_gpu(spec) else {}), **opts}
    lines = ["#!/bin/bash",
             f"# googlenet-study: {n} workers of study {spec.name} ({spec.path}), one per array task.",
             f"# storage {tracking.redact(storage_url)}, tracking {tracking.redact(uri)}.",
             "# Preempted (SIGTERM 120 s before the kill) or cancelled with --signal=TERM: the worker",
             "# checkpoints, ends its run KILLED and re-queues its trial; a requeued task resumes it.",
             *[f"#SBATCH --{k}" + ("" if v is None else f"={v}") for k, v in head.items()]]
    if any(u != _ref(u, e) for u, e in ((storage_url, ENV_STORAGE), (uri, ENV_TRACKING))):
        lines.append(f"# {ENV_STORAGE} / {ENV_TRACKING}: set when it was submitted (they hold a password)")
    lines.append("exec " + " ".join(c if c.startswith('"${') else shlex.quote(c)
                                    for c in worker_command(spec, args, storage_url, uri)))
    return "\n".join(lines) + "\n"


def _sbatch(path: Path, env: dict, *extra: str) -> str:
    r = subprocess.run(["sbatch", *extra, str(path)], capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0:
        said = [x for x in (r.stderr + r.stdout).splitlines() if x.strip() and not x.startswith("Try ")]
        first = said[0] if said else f"exit status {r.returncode}"
        raise UserError(f"--slurm-array: sbatch refused the job ({tracking.redact(first)}); nothing submitted")
    return r.stdout.strip()


def main(args, spec: StudySpec) -> int:
    """Check, write the script, create the study, submit; with --wait, wait and conclude like a local sweep."""
    from . import sweep

    if args.slurm_array < 1:
        raise UserError(f"--slurm-array: must be an integer >= 1, got {args.slurm_array}")
    if args.workers != 1:
        raise UserError("--workers: with --slurm-array every array task is one worker; leave --workers out")
    opts = options(args.slurm_option)
    uri = tracking.tracking_uri(args.tracking_uri)
    storage_url = args.storage or default_storage(uri)
    check_reachable(storage_url, uri, opts)
    text = script(spec, args, storage_url, uri, opts)
    if args.dry_run:
        print(text, end="")
        return 0
    if shutil.which("sbatch") is None:
        raise UserError("--slurm-array: sbatch is not on PATH; run this on a Slurm login node")
    SCRIPT_DIR.mkdir(exist_ok=True)
    path = SCRIPT_DIR / f"{spec.name}.sbatch"
    path.write_text(text)
    env = {**os.environ, ENV_STORAGE: storage_url, ENV_TRACKING: uri}
    try:
        _sbatch(path, env, "--test-only")  # an unknown option, partition or account: nothing exists yet
    except UserError:
        path.unlink()
        with contextlib.suppress(OSError):
            SCRIPT_DIR.rmdir()  # only if empty: nothing half-written left behind
        raise
    storage, st, created = sweep.open_study(spec, uri, storage_url)
    parent, experiment = st.user_attrs[sweep.PARENT], st.user_attrs[sweep.EXPERIMENT]
    job = _sbatch(path, env, "--parsable").split(";")[0]
    print(f"[{spec.name}] {'created' if created else 'joined'} study in {tracking.redact(storage_url)}; parent run "
          f"{parent} (experiment {experiment!r}); submitted Slurm job array {job} ({args.slurm_array} tasks, "
          f"script {path}). Follow it: squeue -j {job}; logs {SCRIPT_DIR}/{spec.name}-{job}_*.out", flush=True)
    if not args.wait:
        print(f"[{spec.name}] when it is done: googlenet-study report --experiment {shlex.quote(experiment)} "
              f"--study {spec.name}", flush=True)
        return 0
    wait(job)
    return sweep.conclude(spec, storage, parent, experiment, uri, False, args.no_report)


def wait(job: str) -> None:
    """Until no task of the array is pending or running (a requeued task counts as pending)."""
    while True:
        r = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True, timeout=60)
        if (r.returncode == 0 and not r.stdout.strip()) or "Invalid job id" in r.stderr:
            return  # gone from the queue (an old job's id is forgotten after MinJobAge)
        time.sleep(POLL_S)
