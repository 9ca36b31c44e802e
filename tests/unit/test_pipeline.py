"""The component pipeline: zstd then STREAM encryption, with stats the manifest records and checks."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from itertools import cycle

import pytest
import zstandard

from questboard_backup.crypto.stream import DEFAULT_CHUNK_SIZE, HEADER, TAG_SIZE, EncryptingWriter
from questboard_backup.errors import IntegrityError
from questboard_backup.pipeline import ComponentReader, ComponentWriter, StreamStats

KEY = bytes(range(32))
CONTEXT = "questboard_full_20240101_020000/files"
ODD_WRITES = (1, 4093, 65537, 3, 1024 * 1024 + 3, 777)
ODD_READS = (7, 8191, 1, 300_001, 65536)


def pieces(data: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    position, size_of = 0, cycle(sizes)
    while position < len(data):
        size = next(size_of)
        yield data[position : position + size]
        position += size


def store(plaintext: bytes, key: bytes = KEY, context: str = CONTEXT) -> tuple[bytes, StreamStats]:
    sink = io.BytesIO()
    writer = ComponentWriter(sink, key, context)
    for piece in pieces(plaintext, ODD_WRITES):
        assert writer.write(piece) == len(piece)
    stats = writer.finish()
    assert not sink.closed
    return sink.getvalue(), stats


def restore(
    stored: bytes,
    stats: StreamStats | None = None,
    key: bytes = KEY,
    context: str = CONTEXT,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
) -> bytes:
    reader = ComponentReader(
        io.BytesIO(stored),
        key,
        context,
        "files",
        expected_size if expected_size is not None else stats and stats.stored_bytes,
        expected_sha256 if expected_sha256 is not None else stats and stats.sha256,
    )
    parts, read_size = [], cycle(ODD_READS)
    while part := reader.read(next(read_size)):
        parts.append(part)
    reader.finish()
    reader.close()
    return b"".join(parts)


def mixed_data(size: int) -> bytes:
    """Half random, half repetitive, so both zstd's raw and compressed blocks are exercised."""
    half = size // 2
    return os.urandom(half) + (b"quest board " * (size // 12 + 1))[: size - half]


def flip(data: bytes, position: int) -> bytes:
    tampered = bytearray(data)
    tampered[position] ^= 0x01
    return bytes(tampered)


SIZES = {"empty": 0, "one byte": 1, "a few KiB": 5000, "multi-MiB": 3 * 1024 * 1024 + 12345}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_components_round_trip_through_odd_write_and_read_sizes(size: int) -> None:
    plaintext = mixed_data(size)
    stored, stats = store(plaintext)
    assert restore(stored, stats) == plaintext


def test_a_component_can_be_read_in_one_call() -> None:
    plaintext = mixed_data(600_000)
    stored, stats = store(plaintext)
    reader = ComponentReader(io.BytesIO(stored), KEY, CONTEXT, "files", stats.stored_bytes, stats.sha256)
    assert reader.read() == plaintext
    reader.finish()


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_stats_count_raw_and_stored_bytes_and_hash_what_is_stored(size: int) -> None:
    plaintext = mixed_data(size)
    stored, stats = store(plaintext)
    assert stats.raw_bytes == size
    assert stats.stored_bytes == len(stored)
    assert stats.sha256 == hashlib.sha256(stored).hexdigest()


def test_stored_bytes_are_encrypted_not_plain_zstd() -> None:
    stored, _ = store(b"quest board secret " * 1000)
    assert b"quest board secret" not in stored
    assert not stored.startswith(zstandard.FRAME_HEADER)


def test_compressible_data_is_stored_smaller() -> None:
    plaintext = b"quest board adventure log line\n" * 100_000
    _, stats = store(plaintext)
    assert stats.stored_bytes < stats.raw_bytes // 20


def test_finish_refuses_a_size_other_than_the_manifest_records() -> None:
    stored, stats = store(mixed_data(5000))
    with pytest.raises(IntegrityError):
        restore(stored, expected_size=stats.stored_bytes + 1, expected_sha256=stats.sha256)


def test_finish_refuses_a_sha256_other_than_the_manifest_records() -> None:
    stored, stats = store(mixed_data(5000))
    with pytest.raises(IntegrityError):
        restore(stored, expected_size=stats.stored_bytes, expected_sha256="0" * 64)


def test_finish_accepts_a_stream_when_no_expectations_are_given() -> None:
    plaintext = mixed_data(5000)
    stored, _ = store(plaintext)
    assert restore(stored) == plaintext


PLAINTEXT = mixed_data(1_200_000)
STORED, STATS = store(PLAINTEXT)
FIRST_BOUNDARY = HEADER.size + DEFAULT_CHUNK_SIZE + TAG_SIZE
assert len(STORED) > FIRST_BOUNDARY + DEFAULT_CHUNK_SIZE  # so a cut there loses whole chunks


@pytest.mark.parametrize(
    "position",
    [0, HEADER.size - 1, HEADER.size + 10, len(STORED) // 2, len(STORED) - 1],
    ids=["magic", "salt", "first chunk", "middle", "last byte"],
)
def test_a_flipped_byte_is_refused(position: int) -> None:
    with pytest.raises(IntegrityError):
        restore(flip(STORED, position))  # without expectations: authentication alone must catch it


@pytest.mark.parametrize(
    "length",
    [0, HEADER.size, HEADER.size + 1000, FIRST_BOUNDARY, len(STORED) - 1],
    ids=["empty", "header only", "inside the first chunk", "at a chunk boundary", "one byte short"],
)
def test_a_truncated_component_is_refused(length: int) -> None:
    with pytest.raises(IntegrityError):
        restore(STORED[:length])


def test_bytes_after_the_sealed_end_are_refused() -> None:
    with pytest.raises(IntegrityError):
        restore(STORED + b"\x00")


def test_a_component_read_with_the_wrong_key_or_context_is_refused() -> None:
    with pytest.raises(IntegrityError):
        restore(STORED, key=bytes(32))
    with pytest.raises(IntegrityError):
        restore(STORED, context="questboard_full_20240101_020000/redis")


def test_authentic_bytes_that_are_not_zstd_are_refused_as_an_integrity_error() -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, KEY, CONTEXT)
    writer.write(b"this was never compressed" * 10)
    writer.close()
    with pytest.raises(IntegrityError):
        restore(sink.getvalue())


def read_exactly(reader: ComponentReader, size: int) -> bytes:
    parts, remaining = [], size
    while remaining and (part := reader.read(min(remaining, 100_000))):
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def test_finish_verifies_the_whole_stream_when_reading_stopped_at_the_plaintext_length() -> None:
    reader = ComponentReader(io.BytesIO(STORED), KEY, CONTEXT, "files", STATS.stored_bytes, STATS.sha256)
    assert read_exactly(reader, len(PLAINTEXT)) == PLAINTEXT
    reader.finish()


def test_finish_refuses_trailing_bytes_when_reading_stopped_at_the_plaintext_length() -> None:
    reader = ComponentReader(io.BytesIO(STORED + b"\x00"), KEY, CONTEXT, "files")
    with pytest.raises(IntegrityError):
        assert read_exactly(reader, len(PLAINTEXT)) == PLAINTEXT
        reader.finish()


def sealed_frame_filling_whole_chunks(chunks: int) -> tuple[bytes, bytes]:
    """A zstd frame exactly ``chunks`` chunks long, sealed: the stream ends with an empty final chunk."""
    compressor = zstandard.ZstdCompressor(write_checksum=True)
    target = chunks * DEFAULT_CHUNK_SIZE
    size = target
    for _ in range(10):  # incompressible input: the frame is the input plus a near-constant overhead
        plaintext = os.urandom(size)
        frame = compressor.compress(plaintext)
        if len(frame) == target:
            break
        size += target - len(frame)
    assert len(frame) == target
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, KEY, CONTEXT)
    writer.write(frame)
    writer.close()
    return plaintext, sink.getvalue()


def test_finish_refuses_a_stream_missing_its_empty_final_chunk_after_all_plaintext_was_read() -> None:
    plaintext, stored = sealed_frame_filling_whole_chunks(2)
    assert len(stored) == HEADER.size + 2 * (DEFAULT_CHUNK_SIZE + TAG_SIZE) + TAG_SIZE
    assert restore(stored) == plaintext
    reader = ComponentReader(io.BytesIO(stored[:-TAG_SIZE]), KEY, CONTEXT, "files")
    with pytest.raises(IntegrityError):
        assert read_exactly(reader, len(plaintext)) == plaintext
        reader.finish()
