"""Signals around the steps a restore must not be cut in the middle of.

The CLI turns SIGTERM and SIGHUP into an interrupt for the whole restore (``stopping_cleanly``), so
its undo runs; the engine holds interrupts for the few statements that must happen together
(``interrupts_held``: a staging database created and marked as this restore's). Both act only in the
main thread, the one Python runs signal handlers in.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stopping_cleanly() -> Iterator[None]:
    """SIGTERM and SIGHUP (``timeout``, a closed SSH session, systemd stopping a unit) interrupt like
    Ctrl-C while a restore runs, so its undo runs instead of the process dying between two renames."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait (pending) until the block ends, then interrupt as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python's signal handlers
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
