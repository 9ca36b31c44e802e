"""Redis: every logical db streamed key by key with SCAN, DUMP and PTTL, restored with RESTORE; no admin commands.

Stream (integers big-endian): ``b"QBREDIS\\x01"``; per db ``b"D"`` u32 db; per key ``b"K"`` u32 length, key,
i64 pttl (-1: no expiry, else ms left at dump time), u32 length, DUMP payload; last ``b"E"`` u64 key count.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn, cast

import redis
from redis.backoff import EqualJitterBackoff
from redis.connection import parse_url
from redis.retry import Retry

from questboard_backup.errors import (
    ConfigurationError,
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.redaction import redact_url
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StreamOpener

logger = logging.getLogger(__name__)

MAGIC = b"QBREDIS"
FORMAT_VERSION = 1
NO_EXPIRY = -1
MAX_LENGTH = 0xFFFFFFFF
CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 60.0  # one DUMP of a large hash or stream is serialized and sent in one reply
WRITE_CHUNK = 1024 * 1024
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_TTL_AND_LENGTH = struct.Struct(">qI")
_KEYSPACE_DB = re.compile(r"db(\d+)")
_DUMP_FOOTER = 10  # every DUMP payload ends with a u16 RDB version and a CRC64


class RedisComponent:
    """Dump every logical db of the Redis server named by a ``redis://`` or ``rediss://`` URL, and
    restore into the server and db a URL names.

    Managed Redis (ElastiCache, MemoryDB) refuses SYNC, PSYNC, SAVE, BGSAVE, CONFIG and DEBUG, so none is
    used: the dbs holding keys are found with ``INFO keyspace``, each is walked with SCAN (``batch_keys``
    per call) and every batch is read with one pipeline of DUMP and PTTL. A dump needs only PING, INFO,
    SELECT, SCAN, DUMP and PTTL; a restore adds RESTORE and DBSIZE.

    Consistency: SCAN is not a snapshot. Every key present for the whole dump is stored once; a key
    created, deleted or changed meanwhile may or may not be, and at whichever value DUMP saw. Keys gone
    between SCAN and DUMP (or with no time left to live) are skipped and counted as ``vanished``.

    SCAN may return a key more than once (while Redis resizes a table). The second sighting is dropped,
    so the counts in the facts are exact and checkable after a restore: each db keeps a set of 16-byte
    BLAKE2b digests of the keys seen, about 100 bytes per key (100 MB per million keys in one db). We
    chose that over storing duplicates, which would leave only a lower bound to verify against.

    Memory holds one batch of DUMP replies; a single huge key is held whole, as DUMP returns it whole.
    TTLs are relative: a restored key lives for the time it had left when it was dumped.

    Restore puts source db ``k`` into db ``N + k``, where ``N`` is the db in the target URL (default 0).
    It reads the stream twice: first to the authenticated end, checking the format and the counts
    against the facts, and only then to apply it with pipelined ``RESTORE ... REPLACE``. A target that
    cannot load the payloads (a Redis older than the source) refuses the first batch whole, so nothing
    is written, and the error names both versions. Keys of the target that are not in the backup are
    left alone: restore into empty dbs for an exact copy. Afterwards each target db must hold at least
    as many keys as the backup has keys without expiry there (DBSIZE), which catches eviction and writes
    gone astray. A failure while applying (a lost connection) leaves the target partly restored.
    """

    name = "redis"
    parallel_streams = False

    def __init__(self, url: str, batch_keys: int = 1000) -> None:
        self.url = url
        self._shown = redact_url(url)
        try:
            params: dict[str, Any] = parse_url(url)
        except ValueError:
            raise ConfigurationError(f"not a valid Redis URL: {self._shown}") from None
        self._password = str(params.get("password") or "")
        if self._password and self._password in self._shown:  # a ?password= parameter survives redact_url
            self._shown = self._shown.split("?", 1)[0]
        if batch_keys < 1:
            raise ConfigurationError(f"batch_keys must be at least 1, not {batch_keys}")
        self.db = int(params.pop("db", 0))
        self.batch_keys = batch_keys
        self._params = {
            **params,
            "decode_responses": False,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "retry": Retry(EqualJitterBackoff(cap=2.0, base=0.2), 2),
            # RESP2 needs no HELLO: it works with every server version and the narrowest ACLs.
            "protocol": 2,
        }

    def check(self) -> None:
        with self._errors("check"), self._connected(self.db) as client:
            client.ping()

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts:
        """``open_part`` is not used: one stream."""
        with self._errors("dump"):
            with self._connected(self.db) as client:
                version = str(client.info("server")["redis_version"])
                keyspace = client.info("keyspace")
            dbs = sorted(int(m.group(1)) for name in keyspace if (m := _KEYSPACE_DB.fullmatch(str(name))))
            logger.info("redis dump started dbs=%d version=%s", len(dbs), version)
            stream = _StreamWriter(out)
            counts: dict[str, int] = {}
            vanished = 0
            for db in dbs:
                stream.db(db)
                counts[str(db)], skipped = self._dump_db(db, stream)
                vanished += skipped
            total = sum(counts.values())
            stream.end(total)
        logger.info(
            "redis dumped dbs=%d keys=%d vanished=%d bytes=%d", len(dbs), total, vanished, stream.written
        )
        return {"version": version, "dbs": counts, "keys": total, "vanished": vanished}

    def _dump_db(self, db: int, stream: _StreamWriter) -> tuple[int, int]:
        seen: set[bytes] = set()
        dumped = vanished = 0
        with self._connected(db) as client:
            cursor = 0
            while True:
                cursor, found = client.scan(cursor, count=self.batch_keys)
                fresh = [key for key in cast("list[bytes]", found) if _first_sighting(seen, key)]
                if fresh:
                    pipe = client.pipeline(transaction=False)
                    for key in fresh:
                        pipe.dump(key)
                        pipe.pttl(key)
                    replies = pipe.execute()
                    for key, payload, pttl in zip(fresh, replies[::2], replies[1::2], strict=True):
                        # PTTL 0 means the key expires this millisecond: restored without a TTL it
                        # would live for ever, so it counts as gone.
                        if payload is None or pttl == -2 or pttl == 0:
                            vanished += 1
                            continue
                        stream.key(key, int(pttl), payload)
                        dumped += 1
                stream.flush()
                if int(cursor) == 0:
                    return dumped, vanished

    def restore(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        with open_stream() as reader:
            summary = _Summary.read(reader)
        summary.compare(facts)
        source_version = str(facts.get("version", "unknown"))
        targets = {db: self.db + db for db in summary.keys}
        with self._errors("restore"):
            self._check_targets(targets)
            with self._connected(self.db) as client:
                target_version = str(client.info("server")["redis_version"])
            logger.info(
                "redis restore started dbs=%d keys=%d target_db=%d",
                len(targets),
                sum(summary.keys.values()),
                self.db,
            )
            with open_stream() as reader:
                restored = self._apply(reader, targets, f"{target_version} at {self._shown}", source_version)
            self._verify(summary, targets)
        total = sum(restored.values())
        logger.info("redis restored dbs=%d keys=%d target_db=%d", len(restored), total, self.db)
        return {"dbs": {str(targets[db]): count for db, count in restored.items()}, "keys": total}

    def _check_targets(self, targets: Mapping[int, int]) -> None:
        """Every target db must exist before the first key is written."""
        for source, target in targets.items():
            try:
                with self._connected(target) as client:
                    client.ping()
            except redis.ResponseError as error:
                raise SourceError(
                    f"cannot restore Redis db {source} into db {target} of {self._shown} "
                    f"(source db k goes to db {self.db}+k): {_reason(error, self._password)}"
                ) from None

    def _apply(
        self, reader: BinaryIO, targets: Mapping[int, int], target: str, source: str
    ) -> dict[int, int]:
        restored = dict.fromkeys(targets, 0)
        batch: list[tuple[bytes, int, bytes]] = []
        with ExitStack() as connections:
            # Clients connect on first use, so one per target db costs nothing up front.
            clients = {db: connections.enter_context(self._connected(to)) for db, to in targets.items()}
            current = -1
            for db, key, pttl, payload in _Records(reader):
                if batch and (db != current or len(batch) >= self.batch_keys):
                    self._restore_batch(clients[current], batch, target, source)
                    batch.clear()
                current = db
                batch.append((key, pttl, payload))
                restored[db] += 1
            if batch:
                self._restore_batch(clients[current], batch, target, source)
        return restored

    def _restore_batch(
        self, client: redis.Redis, batch: list[tuple[bytes, int, bytes]], target: str, source: str
    ) -> None:
        pipe = client.pipeline(transaction=False)
        for key, pttl, payload in batch:
            pipe.restore(key, max(pttl, 0), payload, replace=True)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception):
                raise SourceError(
                    f"Redis {target} refused a key dumped by Redis {source}: {_reason(reply, self._password)}"
                )

    def _verify(self, summary: _Summary, targets: Mapping[int, int]) -> None:
        for db, target in targets.items():
            with self._connected(target) as client:
                size = int(client.dbsize())
            if size < summary.persistent[db]:
                raise RestoreVerificationError(
                    f"redis db {target}: {summary.persistent[db]} keys without expiry restored, "
                    f"but only {size} keys are there"
                )

    def _client(self, db: int) -> redis.Redis:
        # One pool per db: the URL's own db would override a db given to from_url.
        return redis.Redis(connection_pool=redis.ConnectionPool(**self._params, db=db))

    @contextmanager
    def _connected(self, db: int) -> Iterator[redis.Redis]:
        client = self._client(db)
        try:
            yield client
        finally:
            client.connection_pool.disconnect()

    @contextmanager
    def _errors(self, during: str) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise SourceUnreachableError(
                f"cannot connect to Redis at {self._shown}: {_reason(error, self._password)}"
            ) from None
        except redis.RedisError as error:
            raise SourceError(
                f"Redis at {self._shown} failed during {during}: {_reason(error, self._password)}"
            ) from None


def _first_sighting(seen: set[bytes], key: bytes) -> bool:
    digest = hashlib.blake2b(key, digest_size=16).digest()
    if digest in seen:
        return False
    seen.add(digest)
    return True


def _reason(error: Exception, password: str) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text.replace(password, "***") if password else text


class _StreamWriter:
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


class _Records:
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
class _Summary:
    """Per source db: keys in the stream, and those without expiry (which must still exist after a restore)."""

    keys: dict[int, int] = field(default_factory=dict)
    persistent: dict[int, int] = field(default_factory=dict)

    @classmethod
    def read(cls, reader: BinaryIO) -> _Summary:
        summary = cls()
        records = _Records(reader)
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
