"""Component streams sealed in memory for the source tests: the real pipeline, no storage."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, cast

from questboard_backup.pipeline import ComponentReader, StreamStats
from questboard_backup.sources.base import StreamOpener


def opener(stored: bytes, stats: StreamStats, key: bytes, context: str, name: str) -> StreamOpener:
    """Opens ``stored`` as a restore would: authenticated, checked against ``stats`` at its end."""

    @contextmanager
    def open_stream() -> Iterator[BinaryIO]:
        reader = ComponentReader(io.BytesIO(stored), key, context, name, stats.stored_bytes, stats.sha256)
        yield cast(BinaryIO, reader)
        reader.finish()

    return open_stream
