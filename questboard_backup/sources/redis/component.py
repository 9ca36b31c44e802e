"""Redis: every logical db streamed key by key with SCAN, DUMP and PTTL, restored with RESTORE into spare
dbs and swapped in with SWAPDB; no admin commands.

The stream's format, writer and reader are in ``stream.py``; the spare dbs and their markers in
``spares.py``; swapping in, settling and undoing in ``swap.py``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, BinaryIO

import redis
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.retry import Retry

from questboard_backup.connections import parse_redis, redis_display
from questboard_backup.errors import (
    ConfigurationError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StagedRestore, StreamOpener
from questboard_backup.sources.redis import swap
from questboard_backup.sources.redis.spares import MARKER, LogicalDbs, Marker, dumped_batches
from questboard_backup.sources.redis.stream import Records, StreamWriter, Summary

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 60.0  # one DUMP of a large hash or stream is serialized and sent in one reply
_KEYSPACE_DB = re.compile(r"db(\d+)")


class RedisComponent(StagedRestore):
    """Dump every logical db of the Redis server named by a ``redis://`` or ``rediss://`` URL, and
    restore into the server and db a URL names.

    Managed Redis (ElastiCache, MemoryDB) refuses SYNC, PSYNC, SAVE, BGSAVE, CONFIG and DEBUG, so none is
    used: the dbs holding keys are found with ``INFO keyspace``, each is walked with SCAN (``batch_keys``
    per call) and every batch is read with one pipeline of DUMP and PTTL. A dump needs only PING, INFO,
    SELECT, SCAN, DUMP and PTTL. A restore needs PING, INFO, SELECT, DBSIZE, GET, SET, DEL, RESTORE,
    FLUSHDB (ASYNC) and SWAPDB, and SCAN, DUMP and PTTL where SWAPDB is refused and the keys are copied.

    Consistency: SCAN is not a snapshot. Every key present for the whole dump is stored once; a key
    created, deleted or changed meanwhile may or may not be, and at whichever value DUMP saw. Keys gone
    between SCAN and DUMP (or with no time left to live) are skipped and counted as ``vanished``.

    SCAN may return a key more than once (while Redis resizes a table). The second sighting is dropped,
    so the counts in the facts are exact and checkable after a restore: each db keeps a set of 16-byte
    BLAKE2b digests of the keys seen, about 100 bytes per key (100 MB per million keys in one db). We
    chose that over storing duplicates, which would leave only a lower bound to verify against.

    Memory holds one batch of DUMP replies; a single huge key is held whole, as DUMP returns it whole.
    TTLs are relative: a restored key lives for the time it had left when it was dumped.

    Restore puts source db ``k`` back into db ``k`` (in place), or into db ``N + k`` when the operator
    named another target (``shift_dbs``), ``N`` being the db in its URL. Each source db is staged in a
    spare db (``spares.py``: empty, not a target, from the top of the range), then swapped in whole with
    SWAPDB, so each target db ends up an exact copy of the backup's. ``stage`` reads the stream twice:
    first to the authenticated end, checking the format and the counts against the facts, and only then
    to apply it with pipelined ``RESTORE ... REPLACE``. A target that cannot load the payloads (a Redis
    older than the source) refuses the first batch, and the error names both versions. Each spare db
    must then hold at least as many keys as the backup has keys without expiry there, and no more than
    it has keys (DBSIZE), which catches eviction and writes gone astray. A restore needs as many empty
    dbs besides the targets as the backup has dbs, and the application must not write into dbs it
    leaves empty while a restore runs. Where the server refuses SWAPDB (renamed, denied by an ACL,
    cluster mode), the staged keys are copied over the target instead: not atomic, keys of the target
    that are not in the backup are kept, and a failure while copying cannot be undone; the report
    carries a ``warning``. Just before SWAPDB each target gets a marker of its previous data, which the
    swap carries into the spare; between swap and settle each target db holds the restore's marker key
    ``questboard-backup:restore``. Settling deletes it and flushes each spare marked as holding the
    previous data (kept, it would double the memory and could make Redis evict live keys). SWAPDB is
    sent once, on a client that never retries (a retry after a lost reply would swap back), and where
    each db went is then read from the markers. A spare db is flushed only while it holds a marker of
    the restore in hand: one whose marker is gone (evicted, or the application took the db) is left,
    with a warning. ``clear_leftovers`` settles an earlier restore's unsettled swap forwards (the
    target may have taken writes since), never back; only ``undo`` of the restore in hand swaps back.
    Both touch only markers of restores that place dbs as this instance does (same ``offset``), so a
    drill restoring shifted and a restore in place leave each other alone. A dump never stores the
    marker key, but a dump taken while a restore stages would store the spare dbs.
    """

    name = "redis"
    parallel_streams = False

    def __init__(self, url: str, batch_keys: int = 1000, shift_dbs: bool = False) -> None:
        self.url = url
        params = parse_redis(url)
        self._shown = redis_display(url)
        self._password = str(params.get("password") or "")
        if batch_keys < 1:
            raise ConfigurationError(f"batch_keys must be at least 1, not {batch_keys}")
        self.db = int(params.pop("db", 0))
        #: Added to each source db to give its target db.
        self.offset = self.db if shift_dbs else 0
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
            for batch in dumped_batches(client, self.batch_keys, lambda key: _first_sighting(seen, key)):
                for key, pttl, payload in batch:
                    if payload is None:
                        vanished += 1
                        continue
                    stream.key(key, pttl, payload)
                    dumped += 1
                stream.flush()
        return dumped, vanished

    def stage(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        with open_stream() as reader:
            summary = Summary.read(reader)
        summary.compare(facts)
        source_version = str(facts.get("version", "unknown"))
        targets = {db: self.offset + db for db in sorted(summary.keys)}
        dbs = self._dbs()
        with self._errors("restore"):
            self._check_targets(targets, dbs.count())
            chosen = dbs.choose_spares(len(targets), set(targets.values()))
            if len(chosen) < len(targets):
                raise SourceError(
                    f"cannot stage a restore of {len(targets)} Redis dbs in {self._shown}: it needs as "
                    f"many empty dbs besides the targets, and {len(chosen)} of its {dbs.count()} are"
                )
            staging = dict(zip(targets, chosen, strict=False))
            with self._connected(self.db) as client:
                target_version = str(client.info("server")["redis_version"])
            logger.info(
                "redis staging started dbs=%d keys=%d placement=%s spares=%s",
                len(targets),
                sum(summary.keys.values()),
                _placement(targets),
                ",".join(map(str, chosen)),
            )
            markers = {
                spare: Marker(
                    options.timestamp,
                    source,
                    targets[source],
                    spare,
                    summary.keys[source],
                    summary.persistent[source],
                )
                for source, spare in staging.items()
            }
            marked: list[int] = []
            try:
                for spare, marker in markers.items():
                    if not dbs.mark(spare, marker, only_if_new=True):
                        raise SourceError(f"Redis db {spare} of {self._shown}, chosen to stage in, is in use")
                    marked.append(spare)
                with open_stream() as reader:
                    restored = self._apply(
                        reader, staging, f"{target_version} at {self._shown}", source_version
                    )
                self._verify(dbs, markers)
            except BaseException:
                self._drop_staging(dbs, {spare: markers[spare] for spare in marked})
                raise
        total = sum(restored.values())
        logger.info("redis staged dbs=%d keys=%d placement=%s", len(restored), total, _placement(targets))
        return {
            "dbs": {str(db): {"to": targets[db], "keys": count} for db, count in restored.items()},
            "keys": total,
            "placement": _placement(targets),
        }

    def swap_in(self, options: RestoreOptions) -> Facts:
        with self._errors("swap"):
            return swap.swap_in(self._dbs(), options.timestamp, self.offset)

    def settle(self, options: RestoreOptions) -> None:
        swap.settle(self._dbs(), options.timestamp, self.offset)

    def undo(self, options: RestoreOptions) -> list[str]:
        with self._errors("undo"):
            return swap.undo(self._dbs(), options.timestamp, self.offset)

    def clear_leftovers(self, options: RestoreOptions) -> list[str]:
        """Only markers of restores placing dbs as this one does (``offset``): a drill restoring
        shifted never touches what a restore in place left, nor the other way round."""
        with self._errors("clearing leftovers"):
            return swap.clear_leftovers(self._dbs(), options.timestamp, self.offset)

    def _check_targets(self, targets: Mapping[int, int], count: int) -> None:
        """Every target db must exist before the first key is written."""
        rule = f"db {self.offset}+k" if self.offset else "db k"
        for source, target in targets.items():
            if target >= count:
                raise SourceError(
                    f"cannot restore Redis db {source} into db {target} of {self._shown} "
                    f"(source db k goes to {rule}): it has {count} dbs"
                )

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
                if key == MARKER:
                    raise SourceError(f"the backup holds the key {MARKER!r}, which restores use as a marker")
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

    def _verify(self, dbs: LogicalDbs, markers: Mapping[int, Marker]) -> None:
        """Each spare db holds its marker and as many keys as the backup has there (less those that
        expired meanwhile): this catches eviction and writes gone astray."""
        sizes = dbs.sizes(markers)
        for spare, marker in markers.items():
            if problem := marker.size_problem(sizes[spare]):
                raise RestoreVerificationError(problem)
            if dbs.marker(spare) != marker:
                raise RestoreVerificationError(
                    f"redis db {spare}: the marker of this restore's staging is gone (evicted or removed)"
                )

    def _drop_staging(self, dbs: LogicalDbs, markers: Mapping[int, Marker]) -> None:
        """Flush each spare db that still holds this stage's marker. One without it is left alone, with
        a warning: something else (the application, an operator) may have taken that db."""
        for spare, marker in markers.items():
            try:
                found = dbs.marker(spare)
                if found is not None and found.is_staging_of(marker):
                    dbs.flush(spare)
                else:
                    logger.warning(
                        "redis staging db not flushed, its marker is gone db=%d target=%d",
                        spare,
                        marker.target,
                    )
            except (redis.RedisError, OSError) as error:  # undo finds it by its marker
                logger.warning(
                    "redis staging not dropped db=%d reason=%s", spare, _reason(error, self._password)
                )

    # Restore drills (questboard_backup/drill.py): this instance is the drill target (shifted dbs).

    def drillable(self, options: RestoreOptions) -> bool:
        return True

    def drill_guard(self, production: object, facts: Mapping[str, Any], options: RestoreOptions) -> None:
        """Refuse a drill whose target dbs are production's dbs on the production instance: the dbs
        the backup holds, and the production URL's own db."""
        if not isinstance(production, RedisComponent) or not self._same_instance(production):
            return
        source_dbs = {int(db) for db in facts.get("dbs", {}) if str(db).isdigit()}
        production_dbs = source_dbs | {production.db}
        clash = sorted({self.offset + db for db in source_dbs} & production_dbs)
        if clash:
            raise ConfigurationError(
                f"the drill Redis target {self._shown} is the production instance and would restore into its "
                f"db(s) {', '.join(map(str, clash))}: name a spare instance, or a db above "
                f"{max(production_dbs)} (the backup's db k goes to db N+k)"
            )

    def discard(self, facts: Mapping[str, Any], options: RestoreOptions) -> list[str]:
        """Flush the drill's target dbs (db N+k for each db k of the backup)."""
        flushed: list[str] = []
        with self._errors("the drill's cleanup"):
            for db in sorted(int(db) for db in facts.get("dbs", {}) if str(db).isdigit()):
                with self._connected(self.offset + db) as client:
                    client.flushdb()
                flushed.append(f"flushed db {self.offset + db}")
        return flushed

    def _server_id(self) -> str | None:
        """The server's run_id (unique per Redis process), or None when it cannot be read."""
        try:
            with self._connected(self.db) as client:
                return str(client.info("server").get("run_id") or "") or None
        except (redis.RedisError, OSError):
            return None

    def _same_instance(self, other: RedisComponent) -> bool:
        """Whether both reach one server: by run_id when both answer, else by address (a name that
        resolves to an address of the other, same port; an unresolvable name matches only itself)."""
        mine, theirs = self._server_id(), other._server_id()
        if mine and theirs:
            return mine == theirs
        return same_address(self._params, other._params)

    def _dbs(self) -> LogicalDbs:
        return LogicalDbs(self._connected, self.batch_keys, self._connected_once)

    def _client(self, db: int, retry: Retry | None = None) -> redis.Redis:
        # One pool per db: the URL's own db would override a db given to from_url.
        params = self._params if retry is None else {**self._params, "retry": retry}
        return redis.Redis(connection_pool=redis.ConnectionPool(**params, db=db))

    @contextmanager
    def _connected(self, db: int, retry: Retry | None = None) -> Iterator[redis.Redis]:
        client = self._client(db, retry)
        try:
            yield client
        finally:
            client.connection_pool.disconnect()

    def _connected_once(self, db: int) -> AbstractContextManager[redis.Redis]:
        """A client that sends each command once: for SWAPDB, which a retry would undo."""
        return self._connected(db, Retry(NoBackoff(), 0))

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


def _placement(targets: Mapping[int, int]) -> str:
    """``0->0 3->3``: each source db and the db it is restored into."""
    return " ".join(f"{source}->{target}" for source, target in targets.items()) or "none"


def same_address(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two redis-py connection parameter sets may reach one server (unix sockets by path)."""
    if a.get("path") or b.get("path"):
        return bool(a.get("path")) and a.get("path") == b.get("path")
    if int(a.get("port") or 6379) != int(b.get("port") or 6379):
        return False
    return bool(_addresses(str(a.get("host") or "localhost")) & _addresses(str(b.get("host") or "localhost")))


def _addresses(host: str) -> set[str]:
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {f"unresolved:{host}"}
    # Every loopback address is this machine.
    return {"loopback" if ipaddress.ip_address(a.split("%")[0]).is_loopback else a for a in found}
