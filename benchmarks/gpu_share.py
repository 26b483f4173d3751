"""Part (e) of gpu_check.py: does sharing one device between processes raise the total images/s?

N processes (as N sweep workers on one GPU would be) each build one configuration, warm up, wait for a
common start, then train steps for the same fixed number of seconds, synchronising after every step so
that a step is counted only once it has run. Total images/s = sum over processes of images / seconds.
One pool of max(N) processes serves every N and configuration, so start-up (imports, CUDA context) is
paid once and is never inside a timed window."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import torch

READY_TIMEOUT_S = 300.0  # s: building Inception-v3 and its warm-up steps, 4 processes at once


def _worker(inbox, outbox) -> None:
    """A pool process: for each job build a Stepper, warm up, say ready, wait for go, train for `seconds`."""
    from _common import Stepper
    from googlenet_study.device import sync as _sync
    from googlenet_study.config import RunConfig

    while True:
        job = inbox.get()
        if job is None:
            return
        if job == "go":  # a go meant for a job this process failed to set up
            continue
        try:
            torch.set_num_threads(job["threads"])
            cfg = RunConfig(**job["cfg"]).resolve()
            s = Stepper(cfg)
            for _ in range(job["warmup"]):
                s.train_step()
            _sync(s.device)
        except Exception as e:  # noqa: BLE001 - reported as the scenario's row
            outbox.put(("error", f"{type(e).__name__}: {str(e)[:150]}"))
            continue
        outbox.put(("ready", None))
        inbox.get()  # go
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < job["seconds"]:
            s.train_step()
            _sync(s.device)
            n += 1
        outbox.put(("done", (n * cfg.batch_size, time.monotonic() - t0)))
        del s
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _scenario(inboxes, outbox, job: dict, n: int) -> float:
    """Total images/s of n pool processes running `job` together."""
    for q in inboxes[:n]:
        q.put(job)
    replies = [outbox.get(timeout=READY_TIMEOUT_S) for _ in range(n)]
    errors = [m for kind, m in replies if kind == "error"]
    if errors:
        for q in inboxes[:n]:
            q.put("go")  # release the ones that got ready; their result is read and dropped
        for _ in range(n - len(errors)):
            outbox.get(timeout=job["seconds"] + READY_TIMEOUT_S)
        raise RuntimeError(errors[0])
    for q in inboxes[:n]:
        q.put("go")
    done = [outbox.get(timeout=job["seconds"] + READY_TIMEOUT_S)[1] for _ in range(n)]
    return sum(images / seconds for images, seconds in done)


def share_rows(c, base: dict, workers: tuple[int, ...], seconds: float, warmup: int) -> dict[str, tuple[int, float]]:
    """Rows for c (a gpu_check.Check) per configuration and process count; returns, per backbone,
    (the best process count, its total images/s over one process's)."""
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    outbox, inboxes, procs = ctx.Queue(), [], []
    for _ in range(max(workers)):
        inboxes.append(ctx.Queue())
        procs.append(ctx.Process(target=_worker, args=(inboxes[-1], outbox), daemon=True))
        procs[-1].start()
    cores = len(os.sched_getaffinity(0))
    gains = {}
    try:
        for backbone in ("frozen", "full"):
            ips = {}
            for n in workers:
                threads = max(1, cores // n) if c.device != "cpu" or not c.a.tiny else 1  # as sweep --workers N
                job = {"cfg": {**base, "backbone": backbone, "threads": threads}, "threads": threads,
                       "warmup": warmup, "seconds": seconds}
                try:
                    ips[n] = _scenario(inboxes, outbox, job, n)
                except Exception as e:  # noqa: BLE001 - e.g. out of memory with 4 processes
                    c.row("e", f"{n} process(es) sharing {c.device}, {backbone}, batch {base['batch_size']}", "failed",
                          str(e)[:160])
                    continue
                gain = f"{ips[n] / ips[1]:.2f}x one process" if 1 in ips else ""
                c.row("e", f"{n} process(es) sharing {c.device}, {backbone}, batch {base['batch_size']}",
                      f"{ips[n]:,.0f} img/s total", gain)
            if 1 in ips:
                best = max(ips, key=ips.get)
                gains[backbone] = (best, ips[best] / ips[1])
    finally:
        for q in inboxes:
            q.put(None)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return gains
