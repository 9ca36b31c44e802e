"""Component streams sealed in memory for the source tests: the real pipeline, no storage."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO, cast

from questboard_backup.errors import IntegrityError
from questboard_backup.pipeline import ComponentReader, StreamStats
from questboard_backup.sources.base import StreamOpener


def opener(
    stored: bytes,
    stats: StreamStats,
    key: bytes,
    context: str,
    name: str,
    parts: Sequence[tuple[bytes, StreamStats]] = (),
) -> StreamOpener:
    """Opens ``stored`` (part 0) or one of ``parts`` (1, 2...) as a restore would: authenticated, checked
    against its stats at its end, a part under its own context (``{context}/part{n}``)."""
    streams = [(stored, stats), *parts]

    @contextmanager
    def open_stream(part: int = 0) -> Iterator[BinaryIO]:
        if not 0 <= part < len(streams):
            raise IntegrityError(f"{name}: no part {part}")
        data, expected = streams[part]
        reader = ComponentReader(
            io.BytesIO(data),
            key,
            context if part == 0 else f"{context}/part{part}",
            name,
            expected.stored_bytes,
            expected.sha256,
        )
        yield cast(BinaryIO, reader)
        reader.finish()

    return open_stream
