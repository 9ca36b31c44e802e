"""The STREAM construction: round trips, a canonical layout, and refusal of every kind of tampering."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from itertools import cycle

import pytest

from questboard_backup.crypto.stream import (
    DEFAULT_CHUNK_SIZE,
    HEADER,
    MAX_CHUNK_SIZE,
    TAG_SIZE,
    DecryptingReader,
    EncryptingWriter,
)
from questboard_backup.errors import IntegrityError

KEY = bytes(range(32))
CONTEXT = "questboard_full_20240101_020000/postgres"
SMALL = 64
BLOCK = SMALL + TAG_SIZE
IRREGULAR_WRITES = (1, 7, SMALL - 1, SMALL, SMALL + 1, 3, 2 * SMALL + 5, 200, 13)


def sizes_for(chunk: int) -> list[int]:
    return [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 5]


def plaintext_of(size: int) -> bytes:
    return os.urandom(size)


def pieces(data: bytes, write_sizes: Iterator[int]) -> Iterator[bytes]:
    position = 0
    while position < len(data):
        size = next(write_sizes)
        yield data[position : position + size]
        position += size


def encrypt(
    plaintext: bytes,
    chunk_size: int = SMALL,
    key: bytes = KEY,
    context: str = CONTEXT,
    write_sizes: Iterator[int] | None = None,
) -> bytes:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, key, context, chunk_size)
    for piece in pieces(plaintext, write_sizes or cycle(IRREGULAR_WRITES)):
        assert writer.write(piece) == len(piece)
    writer.close()
    return sink.getvalue()


def decrypt(stream: bytes, key: bytes = KEY, context: str = CONTEXT) -> bytes:
    return DecryptingReader(io.BytesIO(stream), key, context).read()


def decrypt_in_small_reads(stream: bytes, read_size: int = 10) -> bytes:
    reader = DecryptingReader(io.BytesIO(stream), KEY, CONTEXT)
    parts = []
    while part := reader.read(read_size):
        parts.append(part)
    return b"".join(parts)


def expected_length(plaintext_size: int, chunk_size: int) -> int:
    full_chunks, final = divmod(plaintext_size, chunk_size)
    return HEADER.size + full_chunks * (chunk_size + TAG_SIZE) + final + TAG_SIZE


def flip(stream: bytes, position: int) -> bytes:
    tampered = bytearray(stream)
    tampered[position] ^= 0x01
    return bytes(tampered)


def chunk_at(stream: bytes, index: int) -> bytes:
    start = HEADER.size + index * BLOCK
    return stream[start : start + BLOCK]


# A stream of three full chunks and a final chunk of 5 bytes: 32 + 3 * 80 + 21 bytes.
PLAINTEXT = plaintext_of(3 * SMALL + 5)
STREAM = encrypt(PLAINTEXT)
FINAL_START = HEADER.size + 3 * BLOCK


@pytest.mark.parametrize("size", sizes_for(SMALL))
@pytest.mark.parametrize(
    "write_sizes", [(1,), IRREGULAR_WRITES, (10**9,)], ids=["bytewise", "irregular", "whole"]
)
def test_small_chunk_streams_round_trip_whatever_the_write_sizes(
    size: int, write_sizes: tuple[int, ...]
) -> None:
    plaintext = plaintext_of(size)
    stream = encrypt(plaintext, write_sizes=cycle(write_sizes))
    assert decrypt(stream) == plaintext
    assert decrypt_in_small_reads(stream) == plaintext


@pytest.mark.parametrize("size", sizes_for(DEFAULT_CHUNK_SIZE))
def test_default_chunk_streams_round_trip_in_irregular_writes(size: int) -> None:
    plaintext = plaintext_of(size)
    writes = cycle((1, 4093, DEFAULT_CHUNK_SIZE - 1, DEFAULT_CHUNK_SIZE + 7, 65537))
    stream = encrypt(plaintext, chunk_size=DEFAULT_CHUNK_SIZE, write_sizes=writes)
    assert len(stream) == expected_length(size, DEFAULT_CHUNK_SIZE)
    assert decrypt(stream) == plaintext
    assert decrypt_in_small_reads(stream, read_size=100_003) == plaintext


def test_the_default_chunk_size_is_used_when_none_is_given() -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, KEY, CONTEXT)
    writer.write(b"x")
    writer.close()
    assert len(sink.getvalue()) == expected_length(1, DEFAULT_CHUNK_SIZE)
    assert HEADER.unpack(sink.getvalue()[: HEADER.size])[3] == DEFAULT_CHUNK_SIZE


@pytest.mark.parametrize("size", sizes_for(SMALL))
def test_the_layout_is_canonical_whatever_the_write_sizes(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: b"\x5a" * n)  # the same salt for every stream
    plaintext = bytes(range(256)) * 2
    plaintext = plaintext[:size]
    streams = {
        encrypt(plaintext, write_sizes=cycle(writes))
        for writes in [(1,), IRREGULAR_WRITES, (SMALL,), (SMALL + 1,), (10**9,), (SMALL - 1, 2 * SMALL)]
    }
    assert len(streams) == 1
    assert len(streams.pop()) == expected_length(size, SMALL)


def test_each_stream_gets_its_own_key_so_rewriting_a_component_never_reuses_a_nonce() -> None:
    again = encrypt(PLAINTEXT)
    assert again[: HEADER.size] != STREAM[: HEADER.size]
    for index in range(3):  # ciphertexts without their tags: equal ones would mean a reused keystream
        assert chunk_at(again, index)[:SMALL] != chunk_at(STREAM, index)[:SMALL]
    assert again[FINAL_START:-TAG_SIZE] != STREAM[FINAL_START:-TAG_SIZE]


def test_closing_twice_seals_the_final_chunk_once_and_leaves_the_sink_open() -> None:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, KEY, CONTEXT, SMALL)
    writer.write(b"abc")
    writer.close()
    writer.close()
    assert writer.closed
    assert not sink.closed
    assert len(sink.getvalue()) == expected_length(3, SMALL)
    with pytest.raises(ValueError):
        writer.write(b"more")


@pytest.mark.parametrize("chunk_size", [0, -1, MAX_CHUNK_SIZE + 1])
def test_chunk_sizes_out_of_range_are_refused(chunk_size: int) -> None:
    with pytest.raises(ValueError):
        EncryptingWriter(io.BytesIO(), KEY, CONTEXT, chunk_size)


HEADER_FIELDS = {"magic": 0, "version": 8, "algorithm": 9, "chunk size": 12, "reserved": 14, "salt": 20}


@pytest.mark.parametrize("position", HEADER_FIELDS.values(), ids=HEADER_FIELDS.keys())
def test_a_bit_flip_in_each_header_field_is_detected(position: int) -> None:
    with pytest.raises(IntegrityError):
        decrypt(flip(STREAM, position))


TAMPERED_CHUNK_BYTES = {
    **{f"chunk {i} ciphertext": HEADER.size + i * BLOCK + 17 for i in range(3)},
    **{f"chunk {i} tag": HEADER.size + i * BLOCK + SMALL + 3 for i in range(3)},
    "final chunk ciphertext": FINAL_START + 2,
    "final chunk tag": len(STREAM) - 1,
}


@pytest.mark.parametrize("position", TAMPERED_CHUNK_BYTES.values(), ids=TAMPERED_CHUNK_BYTES.keys())
def test_a_bit_flip_in_each_chunk_ciphertext_and_tag_is_detected(position: int) -> None:
    with pytest.raises(IntegrityError):
        decrypt(flip(STREAM, position))


def test_a_bit_flip_at_any_byte_of_the_stream_is_detected() -> None:
    undetected = []
    for position in range(len(STREAM)):
        try:
            decrypt(flip(STREAM, position))
        except IntegrityError:
            continue
        undetected.append(position)
    assert undetected == []


TRUNCATIONS = {
    "empty": 0,
    "inside the magic": 5,
    "inside the salt": HEADER.size - 1,
    "after the header": HEADER.size,
    **{f"after chunk {i}": HEADER.size + (i + 1) * BLOCK for i in range(3)},
    "inside chunk 1": HEADER.size + BLOCK + 40,
    "inside a tag": HEADER.size + 2 * BLOCK + SMALL + 8,
    "inside the final chunk": FINAL_START + 3,
    "one byte short": len(STREAM) - 1,
}


@pytest.mark.parametrize("length", TRUNCATIONS.values(), ids=TRUNCATIONS.keys())
def test_a_truncated_stream_is_detected(length: int) -> None:
    with pytest.raises(IntegrityError):
        decrypt(STREAM[:length])


@pytest.mark.parametrize("plaintext_size", [3 * SMALL + 5, 3 * SMALL], ids=["short final", "empty final"])
def test_removing_the_final_chunk_is_detected(plaintext_size: int) -> None:
    stream = encrypt(plaintext_of(plaintext_size))
    assert len(stream) > FINAL_START
    with pytest.raises(IntegrityError):
        decrypt(stream[:FINAL_START])


def test_swapping_two_chunks_is_detected() -> None:
    chunks = [chunk_at(STREAM, i) for i in range(3)]
    swapped = STREAM[: HEADER.size] + chunks[1] + chunks[0] + chunks[2] + STREAM[FINAL_START:]
    assert len(swapped) == len(STREAM)
    with pytest.raises(IntegrityError):
        decrypt(swapped)


@pytest.mark.parametrize("index", [0, 2])
def test_duplicating_a_chunk_is_detected(index: int) -> None:
    start = HEADER.size + (index + 1) * BLOCK
    duplicated = STREAM[:start] + chunk_at(STREAM, index) + STREAM[start:]
    with pytest.raises(IntegrityError):
        decrypt(duplicated)


@pytest.mark.parametrize("suffix", [b"\x00", b"x" * BLOCK], ids=["one byte", "a whole block"])
def test_bytes_after_the_final_chunk_are_detected(suffix: bytes) -> None:
    with pytest.raises(IntegrityError):
        decrypt(STREAM + suffix)


def test_appending_a_copy_of_the_final_chunk_is_detected() -> None:
    with pytest.raises(IntegrityError):
        decrypt(STREAM + STREAM[FINAL_START:])


def test_a_wrong_data_key_is_detected() -> None:
    with pytest.raises(IntegrityError):
        decrypt(STREAM, key=bytes(32))


@pytest.mark.parametrize(
    "context",
    ["questboard_full_20240102_020000/postgres", "questboard_full_20240101_020000/redis", ""],
    ids=["another backup", "another component", "empty"],
)
def test_a_stream_read_under_another_context_is_detected(context: str) -> None:
    with pytest.raises(IntegrityError):
        decrypt(STREAM, context=context)


def test_chunks_from_a_stream_with_another_salt_are_detected() -> None:
    other = encrypt(PLAINTEXT)  # same key, context and plaintext; a different salt
    assert other[HEADER.size - 16 : HEADER.size] != STREAM[HEADER.size - 16 : HEADER.size]
    with pytest.raises(IntegrityError):
        decrypt(STREAM[: HEADER.size] + other[HEADER.size :])
    with pytest.raises(IntegrityError):
        decrypt(STREAM[: HEADER.size + BLOCK] + chunk_at(other, 1) + STREAM[HEADER.size + 2 * BLOCK :])
    with pytest.raises(IntegrityError):
        decrypt(STREAM[:FINAL_START] + other[FINAL_START:])


def read_until_refused(stream: bytes, read_size: int) -> tuple[bytes, IntegrityError]:
    reader = DecryptingReader(io.BytesIO(stream), KEY, CONTEXT)
    released = bytearray()
    with pytest.raises(IntegrityError) as refused:
        while part := reader.read(read_size):
            released += part
        pytest.fail("read() returned b'' (a clean end) for a tampered stream")
    return bytes(released), refused.value


@pytest.mark.parametrize("read_size", [1, 10, SMALL, 1000])
@pytest.mark.parametrize("chunks_kept", [0, 1, 3])
def test_a_stream_cut_at_a_boundary_releases_only_a_prefix_and_fails_before_its_end(
    read_size: int, chunks_kept: int
) -> None:
    released, _ = read_until_refused(STREAM[: HEADER.size + chunks_kept * BLOCK], read_size)
    assert released == PLAINTEXT[: len(released)]
    assert len(released) <= chunks_kept * SMALL


@pytest.mark.parametrize("read_size", [1, 10, 1000])
def test_bytes_of_a_corrupted_chunk_are_never_released(read_size: int) -> None:
    released, _ = read_until_refused(flip(STREAM, HEADER.size + BLOCK + 5), read_size)
    assert released == PLAINTEXT[: len(released)]
    assert len(released) <= SMALL  # nothing of chunk 1 onwards


def test_refusals_are_one_line_messages_naming_the_stream() -> None:
    reader = DecryptingReader(io.BytesIO(STREAM[:FINAL_START]), KEY, CONTEXT, name="postgres")
    with pytest.raises(IntegrityError) as refused:
        reader.read()
    assert str(refused.value).startswith("postgres: ")
    assert "\n" not in str(refused.value)


def test_readinto_fills_a_buffer_with_plaintext() -> None:
    reader = DecryptingReader(io.BytesIO(STREAM), KEY, CONTEXT)
    buffer = bytearray(len(PLAINTEXT) + 10)
    filled = 0
    while count := reader.readinto(memoryview(buffer)[filled:]):
        filled += count
    assert bytes(buffer[:filled]) == PLAINTEXT
