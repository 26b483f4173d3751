"""A sweep's workers on this machine: planned (cores and GPUs split between them), then run here
(`--workers 1`) or each in a spawned interpreter, supervised by the sweep process, which passes
SIGTERM/SIGINT on so that every worker sees each signal once."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from multiprocessing.connection import wait

from . import outage
from ..config import UserError, cores
from .. import stop
from ..stop import STOP
from .outage import Unavailable
from .study_file import StudySpec
from .worker import AGAIN, Worker, work

# s: before passing a signal on, the time a worker that got it itself (Ctrl-C reaches the whole
# process group) has to count it, so that it does not get it twice (twice = stop at once).
FORWARD_AFTER_S = 0.2


def _worker_main(w: Worker, signals_seen) -> None:
    """A spawned worker: STOP's handlers are in place before its first trial; exits 128 + signal if stopped."""
    STOP.install()  # the trial's run ends KILLED at a batch boundary, the trial goes back in the queue
    _count_signals(signals_seen)
    _thread_lock_for_bars()
    try:
        work(w)
    except UserError as e:
        print(f"googlenet-study sweep: worker {w.index}: error: {e}", file=sys.stderr)
        _exit(2)
    except Unavailable as e:
        print(f"googlenet-study sweep: worker {w.index}: {e}; {AGAIN}", file=sys.stderr)
        _exit(outage.EXIT_STATUS)
    except KeyboardInterrupt:
        pass  # a second signal: the run ended KILLED on the way out, the trial is back in the queue
    _exit(128 + STOP.signum if STOP() else 0)


def _thread_lock_for_bars() -> None:
    """tqdm's default lock is a multiprocessing semaphore, which `_exit` would leak (the resource tracker
    then warns at the end of every sweep); a worker's bars are its own, so a thread lock is enough."""
    import threading

    import tqdm
    import tqdm.auto

    for cls in {tqdm.tqdm, tqdm.auto.tqdm}:
        cls.set_lock(threading.RLock())


def _exit(code: int) -> None:
    """Exit without the interpreter's final garbage collection of the torch/MLflow/Optuna objects (seen
    here: 10-12 s per worker on 2 busy cores, after its last trial). Nothing is pending by now: runs
    ended, store writes committed (MLflow logs synchronously), checkpoints fsynced."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _count_signals(seen) -> None:
    """Count each SIGTERM/SIGINT in memory shared with the supervisor, then hand it to STOP. From the
    third on they are ignored: the second already stops at once, a third would cut short the run's end."""
    stops = {s: signal.getsignal(s) for s in stop.SIGNALS}  # STOP's, installed before

    def count(signum, frame) -> None:
        seen.value += 1
        if seen.value <= 2:
            stops[signum](signum, frame)
    stop.install(count)


def supervise(workers: list[Worker]) -> tuple[list[int], int | None]:
    """Run each worker in its own process until all have exited; returns their exit codes and the
    signal that stopped the sweep (None if none did).

    The k-th SIGTERM/SIGINT this process receives goes on, as the same signal, to every worker that has
    not received k itself (`kill PID` reaches this process only; Ctrl-C in a terminal the whole process
    group): the first ends each worker's trial run KILLED at a batch boundary, the second stops at once."""
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch/MLflow state
    seen = [ctx.RawValue("i", 0) for _ in workers]
    procs = [ctx.Process(target=_worker_main, args=(w, n), name=f"sweep-worker-{w.index}")
             for w, n in zip(workers, seen)]
    received: list[int] = []
    with stop.handling(lambda signum, frame: received.append(signum)):
        for p in procs:
            p.start()
        forwarded = 0
        while alive := [p for p in procs if p.is_alive()]:
            wait([p.sentinel for p in alive], timeout=0.5)
            for k in range(forwarded + 1, len(received) + 1):
                time.sleep(FORWARD_AFTER_S)
                for p, n in zip(procs, seen):
                    if p.is_alive() and n.value < k:
                        os.kill(p.pid, received[k - 1])
                forwarded = k
    return [p.exitcode for p in procs], (received[0] if received else None)


def plan_workers(spec: StudySpec, n: int, storage: str, uri: str, parent: str, experiment: str,
                 created: bool) -> list[Worker]:
    """N workers: CPU cores split between them (unless threads is set), one GPU each where there are GPUs."""
    n_cores = cores()
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():  # a Slurm task: its allocation, not the node's
        n_cores = int(os.environ["SLURM_CPUS_PER_TASK"])
    gpus = 0
    if str(spec.base.get("device", "auto")) in ("auto", "cuda") and "device" not in spec.space:
        import torch
        gpus = torch.cuda.device_count()
    out = []
    for i in range(n):
        fixed = {}
        if "threads" not in spec.base and "threads" not in spec.space:
            fixed["threads"] = max(1, n_cores // n)
        if gpus:
            fixed["device"] = f"cuda:{i % gpus}"
        # Reproducible seeds for the process that created the study; joiners (other machines, resumes)
        # mix in their pid so that two machines do not propose the same first points.
        seed = spec.sampler_seed + i + (0 if created else 1000 * (os.getpid() % 100_000))
        out.append(Worker(spec, storage, uri, parent, experiment, i, seed, tuple(fixed.items())))
    return out


def run(workers: list[Worker]) -> tuple[list[int], int | None]:
    """The workers, run until the study has no work left or a signal stops them: the exit codes of
    worker processes, and that signal (None if none came)."""
    if STOP():  # a signal while the study was being set up
        return [], STOP.signum
    if len(workers) == 1:
        try:
            work(workers[0])  # in this process, under the CLI's STOP handlers
        except Unavailable as e:
            print(f"googlenet-study sweep: {e}; {AGAIN}", file=sys.stderr)
            return [outage.EXIT_STATUS], STOP.signum
        return [], STOP.signum
    return supervise(workers)
