"""Progress and deadlines for long streams: report every so many bytes, stop cleanly before a time limit.

A Lambda is killed silently at its timeout; a dump wrapped in ``DeadlineWriter`` instead fails with a
DeadlineExceededError that names how far it got, while there is still time to clean up and alert.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from questboard_backup.errors import DeadlineExceededError


class _Writable(Protocol):
    def write(self, data: bytes) -> int: ...


class DeadlineWriter:
    def __init__(
        self,
        inner: _Writable,
        deadline: float,
        what: str,
        report: Callable[[int], None] | None = None,
        report_every: int = 256 * 2**20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._deadline = deadline
        self._what = what
        self._report = report
        self._report_every = report_every
        self._next_report = report_every
        self._clock = clock
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        if self._clock() >= self._deadline:
            raise DeadlineExceededError(
                f"{self._what} stopped after {self.written / 2**20:.0f} MiB: the time limit is near; "
                "this source is too large for this path (see docs/serverless.md)"
            )
        written = self._inner.write(data)
        self.written += len(data)
        if self._report is not None and self.written >= self._next_report:
            self._report(self.written)
            self._next_report += self._report_every
        return written
