"""STREAM-style authenticated encryption over AES-256-GCM for one backup component.

Layout: a 32-byte header (magic, version, algorithm, chunk size, salt), then sealed chunks of
``chunk_size + 16`` bytes, the last one shorter. Each chunk's nonce is ``0^7 || counter || last``, the
per-stream key is HKDF-SHA256(data key, salt, info = "questboard-backup/stream/v1/" + context), and
the header is every chunk's associated data. Reordering, truncation at any point, bit flips, a wrong
key and a stream moved to another backup or component are all detected. The final chunk always
holds fewer than ``chunk_size`` plaintext bytes (possibly none), so a full-size block is never final.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from questboard_backup.errors import IntegrityError

MAGIC = b"QBBKSTRM"
VERSION = 1
ALGORITHM_AES256GCM_HKDF_SHA256 = 1
HEADER = struct.Struct(">8sBBIH16s")  # magic, version, algorithm, chunk size, reserved, salt
TAG_SIZE = 16
DEFAULT_CHUNK_SIZE = 256 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
DATA_KEY_SIZE = 32


def _stream_key(data_key: bytes, salt: bytes, context: str) -> AESGCM:
    if len(data_key) != DATA_KEY_SIZE:
        raise ValueError("data key must be 32 bytes")
    info = b"questboard-backup/stream/v1/" + context.encode("utf-8")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(data_key)
    return AESGCM(key)


def _nonce(counter: int, last: bool) -> bytes:
    if counter >= 2**32:
        raise IntegrityError("stream too long: more than 2^32 chunks")
    return b"\x00" * 7 + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class EncryptingWriter:
    """A write-only file object that seals what it is given into ``sink``.

    ``close()`` seals the final chunk; it does not close ``sink`` (the caller owns it).
    """

    def __init__(
        self, sink: BinaryIO, data_key: bytes, context: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError("chunk size out of range")
        salt = os.urandom(16)
        self._header = HEADER.pack(MAGIC, VERSION, ALGORITHM_AES256GCM_HKDF_SHA256, chunk_size, 0, salt)
        self._aead = _stream_key(data_key, salt, context)
        self._sink = sink
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        sink.write(self._header)

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed encrypting writer")
        view = memoryview(data).cast("B")
        size = len(view)
        if not self._buffer and size >= self._chunk_size:
            # Fast path: seal whole chunks straight from the caller's buffer.
            whole = size - size % self._chunk_size
            if whole == size:
                whole -= self._chunk_size  # keep a remainder so close() can tell the final chunk
            for start in range(0, whole, self._chunk_size):
                self._seal(view[start : start + self._chunk_size], last=False)
            view = view[whole:]
        self._buffer += view
        while len(self._buffer) > self._chunk_size:
            self._seal(memoryview(self._buffer)[: self._chunk_size], last=False)
            del self._buffer[: self._chunk_size]
        return size

    def _seal(self, plaintext: bytes | bytearray | memoryview, last: bool) -> None:
        self._sink.write(self._aead.encrypt(_nonce(self._counter, last), plaintext, self._header))
        self._counter += 1

    def flush(self) -> None:
        """Nothing to flush early: chunks are sealed only when full, to keep the format canonical."""

    def close(self) -> None:
        if self._closed:
            return
        if len(self._buffer) == self._chunk_size:
            self._seal(self._buffer, last=False)
            self._buffer.clear()
        self._seal(self._buffer, last=True)
        self._buffer.clear()
        self._closed = True


class DecryptingReader:
    """A read-only file object returning the authenticated plaintext of a sealed stream.

    Every byte it returns has been authenticated, but a stream cut at a chunk boundary is only
    detected when the end is reached: callers commit nothing before ``read()`` has returned b"".
    """

    def __init__(self, source: BinaryIO, data_key: bytes, context: str, name: str = "stream") -> None:
        self._source = source
        self._data_key = data_key
        self._context = context
        self._name = name
        self._aead: AESGCM | None = None
        self._header = b""
        self._block = 0
        self._counter = 0
        self._pending = b""
        self._finished = False

    def readable(self) -> bool:
        return True

    def _read_exactly(self, size: int) -> bytes:
        parts = []
        remaining = size
        while remaining:
            part = self._source.read(remaining)
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

    def _start(self) -> None:
        header = self._read_exactly(HEADER.size)
        if len(header) < HEADER.size:
            raise IntegrityError(
                f"{self._name}: truncated header (expected {HEADER.size} bytes, got {len(header)})"
            )
        magic, version, algorithm, chunk_size, _reserved, salt = HEADER.unpack(header)
        if magic != MAGIC:
            raise IntegrityError(f"{self._name}: not an encrypted backup stream (bad magic)")
        if version != VERSION or algorithm != ALGORITHM_AES256GCM_HKDF_SHA256:
            raise IntegrityError(f"{self._name}: unsupported stream version {version}/{algorithm}")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise IntegrityError(f"{self._name}: invalid chunk size {chunk_size}")
        self._header = header
        self._block = chunk_size + TAG_SIZE
        self._aead = _stream_key(self._data_key, salt, self._context)

    def _next_chunk(self) -> bytes:
        assert self._aead is not None
        block = self._read_exactly(self._block)
        last = len(block) < self._block
        if last and len(block) < TAG_SIZE:
            raise IntegrityError(
                f"{self._name}: truncated after chunk {self._counter} (stream ended without its final chunk)"
            )
        try:
            plaintext = self._aead.decrypt(_nonce(self._counter, last), block, self._header)
        except InvalidTag:
            raise IntegrityError(
                f"{self._name}: chunk {self._counter} failed authentication "
                "(wrong key, corrupted or truncated data)"
            ) from None
        self._counter += 1
        if last:
            if self._read_exactly(1):
                raise IntegrityError(f"{self._name}: data after the final chunk")
            self._finished = True
        return plaintext

    def read(self, size: int = -1) -> bytes:
        if self._aead is None:
            self._start()
        if size is None or size < 0:
            parts = [self._pending]
            self._pending = b""
            while not self._finished:
                parts.append(self._next_chunk())
            return b"".join(parts)
        while not self._pending and not self._finished:
            self._pending = self._next_chunk()
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._finished = True
