"""The Redis dump stream: its writer, its reader (refusing anything the writer cannot have produced), and
the per-db key counts a restore checks before it writes anything.

Format (integers big-endian): ``b"QBREDIS\\x01"``; per db ``b"D"`` u32 db; per key ``b"K"`` u32 length,
key, i64 pttl (-1: no expiry, else ms left at dump time), u32 length, DUMP payload; last ``b"E"`` u64 key
count.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn

from questboard_backup.errors import IntegrityError, RestoreVerificationError, SourceError
from questboard_backup.pipeline import READ_SIZE

MAGIC = b"QBREDIS"
FORMAT_VERSION = 1
NO_EXPIRY = -1
MAX_LENGTH = 0xFFFFFFFF
WRITE_CHUNK = 1024 * 1024
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_TTL_AND_LENGTH = struct.Struct(">qI")
_DUMP_FOOTER = 10  # every DUMP payload ends with a u16 RDB version and a CRC64


class StreamWriter:
    """Buffers records into writes of about a megabyte."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._buffer = bytearray(MAGIC + bytes([FORMAT_VERSION]))
        self.written = 0

    def db(self, db: int) -> None:
        self._buffer += b"D" + _U32.pack(db)

    def key(self, key: bytes, pttl: int, payload: bytes) -> None:
        if len(payload) > MAX_LENGTH:
            raise SourceError(f"a Redis key's DUMP is {len(payload)} bytes, over the format's 4 GiB limit")
        self._buffer += b"K" + _U32.pack(len(key)) + key + _TTL_AND_LENGTH.pack(pttl, len(payload))
        self._buffer += payload
        if len(self._buffer) >= WRITE_CHUNK:
            self.flush()

    def end(self, total: int) -> None:
        self._buffer += b"E" + _U64.pack(total)
        self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._out.write(self._buffer)
            self.written += len(self._buffer)
            self._buffer = bytearray()


class Records:
    """Iterates a stream's keys as ``(db, key, pttl, payload)``; ``dbs`` lists every db record, in order.

    Raises IntegrityError on anything the writer cannot have produced, including a missing end record."""

    def __init__(self, reader: BinaryIO) -> None:
        self._reader = reader
        self.dbs: list[int] = []

    def __iter__(self) -> Iterator[tuple[int, bytes, int, bytes]]:
        header = self._read(len(MAGIC) + 1)
        if header[:-1] != MAGIC:
            _damaged("it does not start with the Quest Board Redis header")
        if header[-1] != FORMAT_VERSION:
            _damaged(f"its format version is {header[-1]}, this engine reads {FORMAT_VERSION}")
        total = 0
        while True:
            tag = self._reader.read(1)
            if tag == b"K":
                if not self.dbs:
                    _damaged("a key comes before any db record")
                key = self._read(_U32.unpack(self._read(4))[0])
                pttl, length = _TTL_AND_LENGTH.unpack(self._read(_TTL_AND_LENGTH.size))
                if pttl != NO_EXPIRY and pttl <= 0:
                    _damaged(f"a key has a time to live of {pttl} ms")
                if length < _DUMP_FOOTER:
                    _damaged(f"a DUMP payload of {length} bytes is too short")
                total += 1
                yield self.dbs[-1], key, pttl, self._read(length)
            elif tag == b"D":
                db = _U32.unpack(self._read(4))[0]
                if self.dbs and db <= self.dbs[-1]:
                    _damaged(f"db {db} follows db {self.dbs[-1]}")
                self.dbs.append(db)
            elif tag == b"E":
                recorded = _U64.unpack(self._read(8))[0]
                if recorded != total:
                    _damaged(f"its end record counts {recorded} keys, {total} were read")
                if self._reader.read(1):
                    _damaged("data follows its end record")
                return
            elif not tag:
                _damaged("it ends before its end record")
            else:
                _damaged(f"unknown record type {tag!r}")

    def _read(self, size: int) -> bytes:
        parts: list[bytes] = []
        missing = size
        while missing:
            # Bounded reads: a length field is never trusted with one huge allocation.
            chunk = self._reader.read(min(missing, READ_SIZE))
            if not chunk:
                _damaged(f"it ends {missing} bytes short inside a record")
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)


def _damaged(problem: str) -> NoReturn:
    raise IntegrityError(f"redis: the stream is damaged: {problem}")


@dataclass
class Summary:
    """Per source db: keys in the stream, and those without expiry (which must still exist after a restore)."""

    keys: dict[int, int] = field(default_factory=dict)
    persistent: dict[int, int] = field(default_factory=dict)

    @classmethod
    def read(cls, reader: BinaryIO) -> Summary:
        summary = cls()
        records = Records(reader)
        for db, _key, pttl, _payload in records:
            summary.keys[db] = summary.keys.get(db, 0) + 1
            summary.persistent[db] = summary.persistent.get(db, 0) + (pttl == NO_EXPIRY)
        for db in records.dbs:
            summary.keys.setdefault(db, 0)
            summary.persistent.setdefault(db, 0)
        return summary

    def compare(self, facts: Mapping[str, Any]) -> None:
        recorded = facts.get("dbs")
        if not isinstance(recorded, Mapping):
            raise RestoreVerificationError("redis: the manifest records no per-db key counts")
        expected = {int(db): int(count) for db, count in recorded.items()}
        for db in sorted(expected.keys() | self.keys.keys()):
            if expected.get(db) != self.keys.get(db):
                raise RestoreVerificationError(
                    f"redis db {db}: {expected.get(db, 0)} keys expected, {self.keys.get(db, 0)} found"
                )
        if facts.get("keys") != sum(self.keys.values()):
            raise RestoreVerificationError(
                f"redis: {facts.get('keys')} keys expected, {sum(self.keys.values())} found"
            )
