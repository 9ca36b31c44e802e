"""Held interrupts hold even when the signal reaches another thread: the block runs to its end, then
the interrupt comes (a staging database is never created without being marked as this restore's)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, signal, threading, time
    from questboard_backup.interrupts import interrupts_held, stopping_cleanly

    go, sent = threading.Event(), threading.Event()

    def worker():
        # Started before the block (as the restore's listing thread is), so this thread does not block
        # SIGTERM however the main thread holds it: the kernel may hand the signal to it.
        go.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)
        sent.set()

    threading.Thread(target=worker).start()
    with stopping_cleanly():
        try:
            with interrupts_held():
                go.set()
                sent.wait(10)
                deadline = time.monotonic() + 0.5
                while time.monotonic() < deadline:  # plenty of bytecode: the handler gets its chance
                    pass
                print("block completed", flush=True)
            print("no interrupt after the block", flush=True)
        except KeyboardInterrupt as stop:
            print(f"interrupted after: {stop}", flush=True)
    """
)


def test_a_signal_delivered_to_another_thread_waits_for_the_held_block_to_end() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.splitlines() == ["block completed", "interrupted after: stopped by signal SIGTERM"], (
        done.stdout + done.stderr
    )
