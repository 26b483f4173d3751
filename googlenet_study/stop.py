"""The process's stop flag: SIGTERM/SIGINT ask the loop to finish its batch, checkpoint and end the
run KILLED. Torch-free and import-free, so the command line, the loop and the sweep's workers all
read the one flag without importing one another."""

from __future__ import annotations

import signal


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes its batch, then stops. A second signal stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        def handler(signum, frame):
            if self.signum is not None:
                raise KeyboardInterrupt  # the second signal: unwind now (runs still end KILLED)
            self.signum = signum
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, handler)


STOP = StopFlag()  # the process's flag; the CLI (and each sweep worker) installs its handlers
