"""Riding out an outage of the study's database or of the tracking server: a call that fails for a
reason that passes (connection refused, server restarting) is retried with exponential backoff, each
wait said on one line on stderr, until it succeeds or the outage has lasted `timeout_s`; then it
raises `Unavailable`, which ends the run KILLED (never FAILED: the run did nothing wrong) and leaves
the trial for a retry. No MLflow or Optuna here: sweep/storage.py and tracking/ say what is transient."""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600.0  # s: the study key storage_timeout_s; a few minutes of outage are ridden out
FIRST_WAIT_S = 1.0         # s: the first wait; each next one doubles ...
MAX_WAIT_S = 10.0          # s: ... up to this, so a restarted server is found again within 10 s


EXIT_STATUS = 75  # EX_TEMPFAIL: a sweep that gave up on an outage; the same command later resumes it


class Unavailable(RuntimeError):
    """A store stayed unreachable for longer than its timeout."""
    PREFIX = "outage: "  # how the end_reason tag of a run it ended starts (sweep/worker.py looks for it)

    def __init__(self, what: str, waited_s: float, timeout_s: float, reason: str) -> None:
        super().__init__(f"{what} unreachable for {waited_s:.0f} s (storage_timeout_s = {timeout_s:g}): {reason}")
        self.end_reason = f"{self.PREFIX}{self}; the trial is left for a retry, which resumes this run"


def first_line(e: BaseException) -> str:
    """The first line of the exception's root cause (Optuna's StorageInternalError wraps the driver's
    OperationalError), shortened: what a log line or a tag shows of it."""
    seen = set()
    while e.__cause__ is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__
    lines = str(getattr(e, "orig", None) or e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:200]


class Patience:
    """Retries of one store (the Optuna storage, the tracking server), shared by the threads that call it."""

    def __init__(self, what: str, transient: Callable[[BaseException], bool], timeout_s: float = DEFAULT_TIMEOUT_S,
                 log: Callable[[str], None] | None = None) -> None:
        self.what, self.transient, self.timeout_s = what, transient, float(timeout_s)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._inside = threading.local()  # a retried call that makes retried calls: only the outer one waits
        self.gave_up = False  # after one Unavailable, fail fast until a call succeeds again
        self.down_since: float | None = None  # time.monotonic() of the outage's first failed call
        self.back_at: float | None = None     # time.monotonic() when the last outage ended

    def call(self, fn: Callable[[], T]) -> T:
        """fn(), retried while it fails transiently, for at most timeout_s since its first failure."""
        if getattr(self._inside, "active", False):
            return fn()
        self._inside.active = True
        try:
            return self._retry(fn)
        finally:
            self._inside.active = False

    def _retry(self, fn: Callable[[], T]) -> T:
        t0, wait, attempt = None, FIRST_WAIT_S, 0
        while True:
            try:
                out = fn()
                if t0 is not None:
                    self.back_at = time.monotonic()
                    self.log(f"googlenet-study: {self.what} is back after {self.back_at - t0:.0f} s")
                self.gave_up, self.down_since = False, None
                return out
            except BaseException as e:
                if not isinstance(e, Exception) or not self.transient(e):
                    raise
                now = time.monotonic()
                t0 = now if t0 is None else t0
                self.down_since = self.down_since or t0
                waited = now - t0
                if self.gave_up or waited >= self.timeout_s:
                    self.gave_up = True
                    raise Unavailable(self.what, now - self.down_since, self.timeout_s, first_line(e)) from e
                attempt += 1
                pause = min(wait, self.timeout_s - waited)
                self.log(f"googlenet-study: {self.what} unreachable ({first_line(e)}); retry {attempt} in "
                         f"{pause:.0f} s, {waited:.0f} s of storage_timeout_s = {self.timeout_s:g} gone")
                time.sleep(pause)
                wait = min(wait * 2, MAX_WAIT_S)
