"""Feeding a tool's standard input: every byte arrives, however little each write takes."""

from __future__ import annotations

import io
import os
from typing import IO, cast

import pytest

from questboard_backup.errors import IntegrityError
from questboard_backup.sources.postgres.restore import first_cause
from questboard_backup.sources.postgres.tools import Cancel, Cancelled, feed, split_sections


class ShortWrites(io.RawIOBase):
    """A pipe that takes at most 1000 bytes per write, as an unbuffered pipe may when a signal lands."""

    def __init__(self) -> None:
        self.received = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        taken = bytes(data[:1000])
        self.received += taken
        return len(taken)


def test_short_writes_are_completed() -> None:
    data = os.urandom(3 * 2**20 + 17)
    pipe = ShortWrites()
    assert feed(io.BytesIO(data), cast(IO[bytes], pipe))  # type: ignore[arg-type]
    assert bytes(pipe.received) == data


@pytest.mark.parametrize("read_size", [1, 2, 3, 5, 8, 64])
def test_sections_are_split_at_the_separator_wherever_the_reads_cut_it(read_size: int) -> None:
    separator = b"<SEP>\n"
    stream = b"abc" + separator + b"" + separator + b"de<SE" + separator + b"fg<"
    sections: list[bytes] = [b""]

    def write(view: memoryview) -> None:
        sections[-1] += bytes(view)

    buffer = bytearray(read_size + len(separator))
    held, position = 0, 0
    while position < len(stream):
        chunk = stream[position : position + read_size]
        buffer[held : held + len(chunk)] = chunk
        position += len(chunk)
        held = split_sections(buffer, held + len(chunk), separator, write, lambda: sections.append(b""))
    write(memoryview(buffer)[:held])

    assert sections == [b"abc", b"", b"de<SE", b"fg<"]


def test_cancel_stops_what_it_watches_then_and_later_and_checks_fail_from_then_on() -> None:
    cancel = Cancel()
    stopped: list[str] = []
    cancel.watch("count", lambda: stopped.append("count"))
    cancel.watch("done", lambda: stopped.append("done"))
    cancel.untrack("done")
    cancel.check()

    cancel.cancel()

    assert stopped == ["count"]
    with pytest.raises(Cancelled):
        cancel.check()
    cancel.watch("late", lambda: stopped.append("late"))  # started as the others were being stopped
    assert stopped == ["count", "late"]


def test_a_stop_that_fails_neither_keeps_the_others_from_stopping_nor_hides_the_restores_failure() -> None:
    cancel = Cancel()
    stopped: list[str] = []

    def unreachable() -> None:
        raise OSError("could not send the cancel request")

    cancel.watch("count", unreachable)
    cancel.watch("tool", lambda: stopped.append("tool"))

    cancel.cancel()  # raises nothing: the step's own failure is the one reported

    assert stopped == ["tool"]
    cancel.watch("late", unreachable)  # nor when it is stopped at once


def test_a_failed_restore_reports_the_failure_not_the_steps_it_stopped() -> None:
    damage = IntegrityError("postgres: SHA-256 mismatch")
    stopped = Cancelled("stopped: another step of the restore failed")
    assert first_cause([stopped, damage, Cancelled("again")]) is damage
    assert first_cause([stopped]) is stopped
