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
    """Ctrl-C, SIGTERM and SIGHUP wait until the block ends, then interrupt as usual.

    The Python-level handlers are swapped for one that only notes the signal: the kernel may deliver a
    signal to any thread (a worker that does not block it), but Python always runs the handler in the
    main thread, at its next instruction, which may be inside the block. Blocking the signal in the
    main thread alone (pthread_sigmask) would not hold it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python's signal handlers
        return
    noted: list[int] = []

    def note(signum: int, _frame: object) -> None:
        noted.append(signum)

    held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {number: signal.signal(number, note) for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if noted:
            signal.raise_signal(noted[0])  # now handled as it would have been
