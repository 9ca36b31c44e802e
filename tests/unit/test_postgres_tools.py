"""Feeding a tool's standard input: every byte arrives, however little each write takes."""

from __future__ import annotations

import io
import os
from typing import IO, cast

from questboard_backup.sources.postgres_tools import feed


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
