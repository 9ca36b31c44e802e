"""The component stream pipeline: source bytes -> zstd -> STREAM encryption -> storage, and back.

Memory stays bounded by a few chunk buffers whatever the component size. Writers count the raw and
stored bytes and hash what is stored (SHA-256), which the manifest records; readers check the hash and
size once the stream has been read to its authenticated end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard

from questboard_backup.crypto.stream import DecryptingReader, EncryptingWriter
from questboard_backup.errors import IntegrityError

ZSTD_LEVEL = 1
ZSTD_THREADS = 2
READ_SIZE = 1024 * 1024


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


@dataclass(frozen=True)
class StreamStats:
    raw_bytes: int
    stored_bytes: int
    sha256: str


class _HashingSink:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._sink.write(bytes(data))
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class ComponentWriter:
    """Write plaintext; ``finish()`` seals the stream and returns its stats. The sink is not closed."""

    def __init__(
        self, sink: Sink, data_key: bytes, context: str, level: int = ZSTD_LEVEL, threads: int = ZSTD_THREADS
    ) -> None:
        """``threads``: zstd worker threads (0: compress on the writing thread, the cheapest in CPU, for
        components that write several streams at once)."""
        self._hashing = _HashingSink(sink)
        self._encrypting = EncryptingWriter(self._hashing, data_key, context)  # type: ignore[arg-type]
        compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        self._compressing = compressor.stream_writer(
            self._encrypting,  # type: ignore[arg-type]
            closefd=False,
            write_return_read=True,
        )
        self.raw_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        written = self._compressing.write(data)
        self.raw_bytes += len(data)
        return int(written)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Compression frames are flushed only at the end (``finish``)."""

    def finish(self) -> StreamStats:
        self._compressing.flush(zstandard.FLUSH_FRAME)
        self._compressing.close()
        self._encrypting.close()
        return StreamStats(self.raw_bytes, self._hashing.size, self._hashing.hexdigest())


class _HashingSource:
    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class ComponentReader:
    """Read a component's plaintext. Every byte returned is authenticated; ``finish()`` must be
    called after the last read: it drains the stream to its sealed end and checks size and SHA-256
    against ``expected`` (from the manifest). Nothing may be committed before ``finish()`` returned."""

    def __init__(
        self,
        source: BinaryIO,
        data_key: bytes,
        context: str,
        name: str,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> None:
        self._name = name
        self._hashing = _HashingSource(source)
        self._decrypting = DecryptingReader(self._hashing, data_key, context, name)  # type: ignore[arg-type]
        self._decompressing = zstandard.ZstdDecompressor().stream_reader(
            self._decrypting,  # type: ignore[arg-type]
            read_size=READ_SIZE,
            closefd=False,
        )
        self._expected_size = expected_size
        self._expected_sha256 = expected_sha256

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._decompressing.read(size)
        except zstandard.ZstdError as error:
            raise IntegrityError(f"{self._name}: cannot decompress ({error})") from None

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Like ``read`` into a caller's buffer (reused buffers spare the allocations of large reads)."""
        try:
            return int(self._decompressing.readinto(buffer))
        except zstandard.ZstdError as error:
            raise IntegrityError(f"{self._name}: cannot decompress ({error})") from None

    def finish(self) -> None:
        while self.read(READ_SIZE):
            pass
        if self._decrypting.read(1):
            raise IntegrityError(f"{self._name}: unexpected data after the compressed frame")
        if self._expected_size is not None and self._hashing.size != self._expected_size:
            raise IntegrityError(
                f"{self._name}: size mismatch (expected {self._expected_size} bytes, got {self._hashing.size})"
            )
        if self._expected_sha256 is not None and self._hashing.hexdigest() != self._expected_sha256:
            raise IntegrityError(f"{self._name}: SHA-256 mismatch with the manifest")

    def close(self) -> None:
        self._decompressing.close()
