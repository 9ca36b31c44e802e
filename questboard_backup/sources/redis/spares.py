"""Spare logical dbs for a staged Redis restore: the marker that names them, finding them again from any
process, swapping them in with SWAPDB (or copying where the server refuses it), settling and undoing.

A restore stages each source db in a spare db: an empty db, not a target, taken from the top of the
server's range. Each spare gets the key ``questboard-backup:restore`` holding a JSON ``Marker`` (the
restore's timestamp, its source, target and spare db, the key counts to expect). SWAPDB exchanges whole
dbs, so the marker travels with the staged data: found in its ``spare`` db it means "staged, not
swapped"; found in its ``target`` db, "swapped in, not settled" (the target's previous data then sits
in the spare). One fixed key name, read with one GET per db, finds every marker without a SCAN of the
application's keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, cast

import redis

from questboard_backup.errors import RestoreVerificationError

logger = logging.getLogger(__name__)

MARKER = b"questboard-backup:restore"
#: Probing stops here: a server configured with more dbs is treated as having this many.
_MOST_DBS = 1 << 16

#: Connects to one logical db of the server; leaving the block disconnects.
Connect = Callable[[int], AbstractContextManager[redis.Redis]]


@dataclass(frozen=True)
class Marker:
    timestamp: str
    source: int
    target: int
    spare: int
    #: Keys staged, and those without expiry (which must all still be there when it is swapped in).
    keys: int
    persistent: int
    #: SWAPDB was refused: the staged keys are being copied over the target, which cannot be undone.
    copying: bool = False
    #: Swapped in and kept: the previous data in the spare is being dropped (finish, never swap back).
    settling: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Marker | None:
        """The marker in ``raw``; None for anything this engine did not write."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
                return None
            marker = cls(**data)
        except (ValueError, TypeError):
            return None
        numbers = (marker.source, marker.target, marker.spare, marker.keys, marker.persistent)
        if not isinstance(marker.timestamp, str) or not all(type(n) is int for n in numbers):
            return None
        return marker

    def staged_in(self, db: int) -> bool:
        return db == self.spare

    def swapped_into(self, db: int) -> bool:
        return db == self.target

    def size_problem(self, size: int) -> str | None:
        """What is wrong with a spare db holding this marker and ``size`` keys, if anything."""
        if size - 1 < self.persistent:
            return (
                f"redis db {self.target}: {self.persistent} keys without expiry restored (staged in db "
                f"{self.spare}), but only {max(size - 1, 0)} keys are there"
            )
        if size - 1 > self.keys:
            return (
                f"redis db {self.target}: {self.keys} keys restored (staged in db {self.spare}), but "
                f"{size - 1} keys are there: something else writes into that db"
            )
        return None


class LogicalDbs:
    """The logical dbs of one server. Only PING-level commands plus SELECT, GET, SET, DEL, DBSIZE,
    FLUSHDB and SWAPDB are used: managed Redis refuses CONFIG, so the number of dbs is found by
    probing SELECT (out of range is an error)."""

    def __init__(self, connect: Connect, batch_keys: int) -> None:
        self._connect = connect
        self._batch_keys = batch_keys
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            with self._connect(0) as client:  # SELECT moves this connection: it is used for nothing else

                def selectable(db: int) -> bool:
                    try:
                        client.execute_command("SELECT", db)
                    except redis.exceptions.NoPermissionError:
                        raise
                    except redis.ResponseError:
                        return False
                    return True

                # Known: count >= low (db low - 1 answers) and count < high (db high - 1 does not).
                low, high = 1, 16
                while low < _MOST_DBS and selectable(high - 1):
                    low, high = high, high * 2
                while high - low > 1 and low < _MOST_DBS:
                    middle = (low + high) // 2
                    low, high = (middle, high) if selectable(middle - 1) else (low, middle)
                self._count = low
        return self._count

    def _each(self, dbs: Iterable[int], *command: Any) -> dict[int, Any]:
        """``command``'s reply in each of ``dbs``, in one round trip."""
        dbs = list(dbs)
        if not dbs:
            return {}
        with self._connect(0) as client:
            pipe = client.pipeline(transaction=False)
            for db in dbs:
                pipe.execute_command("SELECT", db)
                pipe.execute_command(*command)
            replies = pipe.execute()
        return dict(zip(dbs, replies[1::2], strict=True))

    def sizes(self, dbs: Iterable[int]) -> dict[int, int]:
        return {db: int(size) for db, size in self._each(dbs, "DBSIZE").items()}

    def markers(self) -> dict[int, Marker]:
        """Every db holding a marker, with it."""
        found = self._each(range(self.count()), "GET", MARKER)
        return {db: marker for db, raw in found.items() if (marker := Marker.decode(raw)) is not None}

    def choose_spares(self, needed: int, targets: set[int]) -> list[int]:
        """``needed`` empty dbs that are not targets, from the top of the range down."""
        candidates = [db for db in reversed(range(self.count())) if db not in targets]
        sizes = self.sizes(candidates)
        return [db for db in candidates if sizes[db] == 0][:needed]

    def mark(self, db: int, marker: Marker, only_if_new: bool = False) -> bool:
        with self._connect(db) as client:
            return bool(client.set(MARKER, marker.encode(), nx=only_if_new))

    def marker(self, db: int) -> Marker | None:
        with self._connect(db) as client:
            return Marker.decode(cast("bytes | None", client.get(MARKER)))

    def unmark(self, db: int) -> None:
        with self._connect(db) as client:
            client.delete(MARKER)

    def flush(self, db: int) -> None:
        # ASYNC: the keyspace empties at once, the memory is freed without blocking the server.
        with self._connect(db) as client:
            client.flushdb(asynchronous=True)

    def swap(self, first: int, second: int) -> None:
        with self._connect(0) as client:
            client.swapdb(first, second)

    def copy(self, source: int, target: int) -> None:
        """Every key of ``source`` but the marker into ``target`` with pipelined DUMP and RESTORE REPLACE."""
        with self._connect(source) as reader, self._connect(target) as writer:
            cursor = 0
            while True:
                cursor, found = reader.scan(cursor, count=self._batch_keys)
                keys = [key for key in cast("list[bytes]", found) if key != MARKER]
                if keys:
                    pipe = reader.pipeline(transaction=False)
                    for key in keys:
                        pipe.dump(key)
                        pipe.pttl(key)
                    replies = pipe.execute()
                    out = writer.pipeline(transaction=False)
                    for key, payload, pttl in zip(keys, replies[::2], replies[1::2], strict=True):
                        if payload is not None and pttl not in (-2, 0):
                            out.restore(key, max(int(pttl), 0), payload, replace=True)
                    out.execute()
                if int(cursor) == 0:
                    return


def _ours(markers: dict[int, Marker], timestamp: str) -> list[tuple[int, Marker]]:
    return sorted((db, m) for db, m in markers.items() if m.timestamp == timestamp)


def swap_in(dbs: LogicalDbs, timestamp: str) -> dict[str, Any]:
    """Swap every db staged by the restore ``timestamp`` into its target; on failure swap back those
    done and raise. Where the server refuses SWAPDB, copy instead and say so in ``warning``."""
    staged = sorted(
        ((db, m) for db, m in _ours(dbs.markers(), timestamp) if m.staged_in(db)), key=lambda s: s[1].target
    )
    if not staged:  # an empty backup: nothing was staged
        return {"swap": "none"}
    sizes = dbs.sizes(db for db, _ in staged)
    for db, marker in staged:
        if problem := marker.size_problem(sizes[db]):
            raise RestoreVerificationError(problem)
    swapped: list[Marker] = []
    try:
        for _db, marker in staged:
            try:
                dbs.swap(marker.target, marker.spare)
            except redis.ResponseError as error:
                if swapped:
                    raise
                return _copy_in(dbs, [m for _, m in staged], _reason(error))
            swapped.append(marker)
    except BaseException:
        for marker in reversed(swapped):
            try:
                dbs.swap(marker.target, marker.spare)
            except redis.RedisError as error:  # the markers let undo finish it
                logger.warning("redis swap back failed db=%d reason=%s", marker.target, _reason(error))
        raise
    logger.info("redis swapped in dbs=%d", len(swapped))
    return {"swap": "SWAPDB"}


def _copy_in(dbs: LogicalDbs, staged: list[Marker], reason: str) -> dict[str, Any]:
    targets = ", ".join(str(marker.target) for marker in staged)
    logger.warning("redis swapdb refused, copying instead targets=%s reason=%s", targets, reason)
    for marker in staged:
        dbs.mark(marker.spare, replace(marker, copying=True))
        dbs.copy(marker.spare, marker.target)
        size = dbs.sizes([marker.target])[marker.target]
        if size < marker.persistent:
            raise RestoreVerificationError(
                f"redis db {marker.target}: {marker.persistent} keys without expiry copied in, "
                f"but only {size} keys are there"
            )
    return {
        "swap": "copy",
        "warning": (
            f"Redis refused SWAPDB ({reason}): the staged keys were copied into db {targets} with DUMP "
            "and RESTORE instead, which is not atomic; keys there that are not in the backup were kept"
        ),
    }


def settle(dbs: LogicalDbs, timestamp: str) -> None:
    """Keep what the restore ``timestamp`` swapped in: drop its markers and its spare dbs, which now
    hold the previous data (kept, they would double the memory and could make Redis evict live keys).
    Logs, never raises."""
    try:
        markers = dbs.markers()
        for db, marker in _ours(markers, timestamp):
            if marker.swapped_into(db):
                _finish_settling(dbs, markers, marker)
            elif marker.staged_in(db):
                if not marker.copying:
                    logger.warning("redis staged db was never swapped in db=%d target=%d", db, marker.target)
                dbs.flush(db)
    except (redis.RedisError, OSError) as error:
        logger.warning("redis settle failed timestamp=%s reason=%s", timestamp, _reason(error))


def _finish_settling(dbs: LogicalDbs, markers: dict[int, Marker], marker: Marker) -> str:
    # Marked first, so that a kill before the marker is gone is finished forwards, never swapped back
    # with a flushed spare.
    dbs.mark(marker.target, replace(marker, settling=True))
    other = markers.get(marker.spare)
    if other is not None and other.staged_in(marker.spare):
        logger.warning("redis spare db holds another restore's staging db=%d", marker.spare)
    else:
        dbs.flush(marker.spare)
    dbs.unmark(marker.target)
    return f"redis db {marker.target}: kept what restore {marker.timestamp} swapped in, db {marker.spare} flushed"


def undo(dbs: LogicalDbs, timestamp: str) -> list[str]:
    """Undo the restore ``timestamp``, whatever step it reached in whichever process."""
    return _undo(dbs, lambda marker: marker.timestamp == timestamp)


def clear_leftovers(dbs: LogicalDbs, timestamp: str) -> list[str]:
    """Undo what every other restore than ``timestamp`` left behind."""
    return _undo(dbs, lambda marker: marker.timestamp != timestamp)


def _undo(dbs: LogicalDbs, chosen: Callable[[Marker], bool]) -> list[str]:
    lines = []
    markers = dbs.markers()
    # SWAPDB is atomic per pair: each target either holds its marker (swapped) or does not.
    for db, marker in sorted(markers.items()):
        if not chosen(marker) or not marker.swapped_into(db):
            continue
        if marker.settling:
            lines.append(_finish_settling(dbs, markers, marker))
            continue
        other = markers.get(marker.spare)
        if other is not None and other.staged_in(marker.spare):
            lines.append(
                f"redis db {marker.target}: not swapped back, its previous data's db {marker.spare} now "
                f"holds restore {other.timestamp}'s staging"
            )
            continue
        dbs.swap(marker.target, marker.spare)
        lines.append(f"redis db {marker.target}: swapped back the data restore {marker.timestamp} replaced")
    for db, marker in sorted(dbs.markers().items()):
        if not chosen(marker) or not marker.staged_in(db):
            continue
        dbs.flush(db)
        if marker.copying:
            lines.append(
                f"redis db {marker.target}: restore {marker.timestamp} copied into it (SWAPDB refused), "
                f"perhaps in part, so its previous data cannot be put back; spare db {db} flushed"
            )
        else:
            lines.append(f"redis db {db}: flushed restore {marker.timestamp}'s staging of db {marker.target}")
    return lines


def _reason(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
