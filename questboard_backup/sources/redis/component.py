"""Redis: every logical db streamed key by key with SCAN, DUMP and PTTL, restored with RESTORE; no admin commands.

The stream's format, writer and reader are in ``stream.py``; this module talks to the servers.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any, BinaryIO, cast

import redis
from redis.backoff import EqualJitterBackoff
from redis.connection import parse_url
from redis.retry import Retry

from questboard_backup.errors import (
    ConfigurationError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.redaction import redact_url
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StreamOpener
from questboard_backup.sources.redis.stream import Records, StreamWriter, Summary

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 60.0  # one DUMP of a large hash or stream is serialized and sent in one reply
_KEYSPACE_DB = re.compile(r"db(\d+)")


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

    def check_restore_target(self) -> None:
        self.check()

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts:
        """``open_part`` is not used: one stream."""
        with self._errors("dump"):
            with self._connected(self.db) as client:
                version = str(client.info("server")["redis_version"])
                keyspace = client.info("keyspace")
            dbs = sorted(int(m.group(1)) for name in keyspace if (m := _KEYSPACE_DB.fullmatch(str(name))))
            logger.info("redis dump started dbs=%d version=%s", len(dbs), version)
            stream = StreamWriter(out)
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

    def _dump_db(self, db: int, stream: StreamWriter) -> tuple[int, int]:
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
            summary = Summary.read(reader)
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
            for db, key, pttl, payload in Records(reader):
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

    def _verify(self, summary: Summary, targets: Mapping[int, int]) -> None:
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
