"""stop.py's signal handling, in this process: a handler for a block and back after, and a block that a
SIGTERM/SIGINT ends at once (the report, a sweep before its study exists)."""

from __future__ import annotations

import os
import signal

import pytest

from googlenet_study import stop
from googlenet_study.stop import STOP


@pytest.fixture(autouse=True)
def fresh_flag():
    before = {s: signal.getsignal(s) for s in stop.SIGNALS}
    STOP.signum = None
    yield
    STOP.signum = None
    for s, h in before.items():
        signal.signal(s, h)


def test_handling_sets_the_handler_for_the_block_and_restores_the_ones_before_even_on_error():
    seen = []
    before = {s: signal.getsignal(s) for s in stop.SIGNALS}
    with pytest.raises(ValueError):
        with stop.handling(lambda signum, frame: seen.append(signum)):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            raise ValueError
    assert seen == [signal.SIGTERM, signal.SIGINT]
    assert {s: signal.getsignal(s) for s in stop.SIGNALS} == before


@pytest.mark.parametrize("sig", stop.SIGNALS)
def test_stop_at_once_ends_the_block_at_the_signal_and_stop_records_it(sig):
    after = []
    with pytest.raises(KeyboardInterrupt):
        with stop.stop_at_once():
            os.kill(os.getpid(), sig)
            after.append("ran on")
    assert after == [] and STOP.signum == sig


def test_stop_at_once_ends_at_entry_when_a_signal_came_before_it_and_keeps_the_first():
    STOP.install()
    os.kill(os.getpid(), signal.SIGINT)  # STOP's own handler: recorded, nothing cut short
    assert STOP.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        with stop.stop_at_once():
            pytest.fail("the block ran after a signal")
    assert STOP.signum == signal.SIGINT


def test_record_notes_only_the_first_signal():
    with stop.handling(STOP.record):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert STOP.signum == signal.SIGTERM
