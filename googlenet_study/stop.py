"""The process's stop flag: SIGTERM/SIGINT ask the loop to finish its batch, checkpoint and end the
run KILLED. Torch-free and import-free, so the command line, the loop and the sweep's workers all
read the one flag without importing one another. Every SIGTERM/SIGINT handler of the package is set
here: `install` (for good), `handling` (for a block, then the handlers before it come back) and
`stop_at_once` (a block that a signal ends at once)."""

from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what `kill PID`, Slurm's scancel and Ctrl-C send
Handler = Callable[[int, object], None]    # handler(signum, frame), as signal.signal takes it


def install(handler: Handler, signals: tuple[int, ...] = SIGNALS) -> dict[int, object]:
    """`handler` for each of `signals`; returns the handlers it replaced, by signal."""
    return {s: signal.signal(s, handler) for s in signals}


@contextlib.contextmanager
def handling(handler: Handler, signals: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """`handler` for `signals` while the block runs; the handlers before it come back after, however it ends."""
    before = install(handler, signals)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes its batch, then stops. A second signal stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def record(self, signum: int, frame: object = None) -> None:
        """A handler that only notes the signal (the first one stays): nothing is cut short."""
        self.signum = self.signum or signum

    def install(self) -> None:
        def handler(signum, frame):
            if self.signum is not None:
                raise KeyboardInterrupt  # the second signal: unwind now (runs still end KILLED)
            self.signum = signum
        install(handler)


STOP = StopFlag()  # the process's flag; the CLI (and each sweep worker) installs its handlers


@contextlib.contextmanager
def stop_at_once() -> Iterator[None]:
    """SIGTERM/SIGINT end the block at once with KeyboardInterrupt (the CLI exits 128 + signal: 143, 130),
    for work with no run to end and nothing to checkpoint (a report; a sweep before its study exists), so
    nothing is gained by finishing a step first. STOP records the signal; one that came before the block
    ends it on entry."""
    def end_now(signum, frame):
        STOP.record(signum)
        raise KeyboardInterrupt

    with handling(end_now):
        if STOP():
            raise KeyboardInterrupt
        yield
