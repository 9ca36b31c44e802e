"""A long dump reports progress and stops itself before its deadline with a clear error."""

from __future__ import annotations

import io

import pytest

from questboard_backup.errors import DeadlineExceededError
from questboard_backup.progress import DeadlineWriter


def test_progress_is_reported_every_so_many_bytes() -> None:
    reports: list[int] = []
    writer = DeadlineWriter(
        io.BytesIO(),
        deadline=100.0,
        what="postgres dump",
        report=reports.append,
        report_every=10,
        clock=lambda: 0.0,
    )
    for _ in range(7):
        writer.write(b"x" * 4)
    assert reports == [12, 20]
    assert writer.written == 28


def test_a_write_after_the_deadline_fails_clearly_and_writes_nothing() -> None:
    now = [0.0]
    sink = io.BytesIO()
    writer = DeadlineWriter(sink, deadline=5.0, what="postgres dump", clock=lambda: now[0])
    writer.write(b"a" * (3 * 2**20))
    now[0] = 5.0
    with pytest.raises(DeadlineExceededError, match=r"postgres dump stopped after 3 MiB"):
        writer.write(b"b")
    assert sink.getvalue() == b"a" * (3 * 2**20)
