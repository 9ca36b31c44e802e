"""Spare logical dbs for a staged Redis restore: the marker that names a restore's dbs and the few
commands that find, fill, swap and flush them from any process (the steps themselves are in ``swap.py``).

A restore stages each source db in a spare db: an empty db, not a target, taken from the top of the
server's range. Each spare gets the key ``questboard-backup:restore`` holding a JSON ``Marker`` (the
restore's timestamp, its source, target and spare db, the key counts to expect). Just before SWAPDB the
target gets a second marker, flagged ``previous``. SWAPDB exchanges whole dbs, so each marker travels
with its data: the staged marker found in its ``spare`` db means "staged, not swapped"; in its
``target`` db, "swapped in, not settled", the target's previous data then sitting in the spare with the
``previous`` marker. One fixed key name, read with one GET per db, finds every marker without a SCAN of
the application's keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, cast

import redis

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
    #: Written into the target just before SWAPDB, so that it sits with the target's previous data:
    #: in the spare once swapped, still in the target if the swap did not happen or was undone.
    previous: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Marker | None:
        """The marker in ``raw``; None for anything this engine did not write."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            # Flags added later default to False: a marker an earlier version left is still found.
            if not isinstance(data, dict) or not _REQUIRED <= set(data) <= _NAMES:
                return None
            marker = cls(**data)
        except (ValueError, TypeError):
            return None
        numbers = (marker.source, marker.target, marker.spare, marker.keys, marker.persistent)
        if not isinstance(marker.timestamp, str) or not all(type(n) is int for n in numbers):
            return None
        return marker

    def staged_in(self, db: int) -> bool:
        return not self.previous and db == self.spare

    def swapped_into(self, db: int) -> bool:
        return not self.previous and db == self.target

    def left_in_target(self, db: int) -> bool:
        """A ``previous`` marker still in the target: the swap did not happen, or was undone."""
        return self.previous and db == self.target

    def placed_by(self, offset: int) -> bool:
        """Written by a component that puts source db ``k`` into db ``offset + k``."""
        return self.target == self.source + offset

    def is_staging_of(self, restore: Marker) -> bool:
        """This is the staged marker of ``restore``'s db (whatever its other flags)."""
        return self._restore == restore._restore and not self.previous

    def is_previous_of(self, restore: Marker) -> bool:
        """This is the ``previous`` marker of ``restore``'s db."""
        return self._restore == restore._restore and self.previous

    @property
    def _restore(self) -> tuple[str, int, int, int]:
        return (self.timestamp, self.source, self.target, self.spare)

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


_NAMES = {f.name for f in fields(Marker)}
_REQUIRED = {f.name for f in fields(Marker) if f.default is MISSING}


class LogicalDbs:
    """The logical dbs of one server. Only SELECT, GET, SET, DEL, DBSIZE, FLUSHDB and SWAPDB are used
    (SCAN, DUMP, PTTL and RESTORE too where SWAPDB is refused): managed Redis refuses CONFIG, so the
    number of dbs is found by probing SELECT (out of range is an error). ``connect_once`` gives a
    client that never retries a command, for SWAPDB."""

    def __init__(self, connect: Connect, batch_keys: int, connect_once: Connect) -> None:
        self._connect = connect
        self._connect_once = connect_once
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

    def markers(self, dbs: Iterable[int] | None = None) -> dict[int, Marker]:
        """Every db (of ``dbs``, else of the server) holding a marker, with it."""
        found = self._each(range(self.count()) if dbs is None else dbs, "GET", MARKER)
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
        """One SWAPDB, never retried: a retry after a lost reply would swap the dbs back."""
        with self._connect_once(0) as client:
            client.swapdb(first, second)

    def copy(self, source: int, target: int) -> None:
        """Every key of ``source`` but the marker into ``target`` with pipelined DUMP and RESTORE REPLACE."""
        with self._connect(source) as reader, self._connect(target) as writer:
            for batch in dumped_batches(reader, self._batch_keys):
                if batch:
                    out = writer.pipeline(transaction=False)
                    for key, pttl, payload in batch:
                        if payload is not None:
                            out.restore(key, max(pttl, 0), payload, replace=True)
                    out.execute()


def dumped_batches(
    client: redis.Redis, batch_keys: int, keep: Callable[[bytes], bool] = lambda key: True
) -> Iterator[list[tuple[bytes, int, bytes | None]]]:
    """The db walked with SCAN (``batch_keys`` per call), one list per call (empty ones too) of each
    kept key but a restore's marker, its PTTL (-1: no expiry) and DUMP payload, read with one pipeline
    per batch. A key gone meanwhile, or expiring this millisecond (PTTL 0: restored without a TTL it
    would live for ever), has no payload."""
    cursor = 0
    while True:
        cursor, found = client.scan(cursor, count=batch_keys)
        keys = [key for key in cast("list[bytes]", found) if key != MARKER and keep(key)]
        batch: list[tuple[bytes, int, bytes | None]] = []
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.dump(key)
                pipe.pttl(key)
            replies = pipe.execute()
            for key, payload, pttl in zip(keys, replies[::2], replies[1::2], strict=True):
                gone = payload is None or pttl in (-2, 0)
                batch.append((key, int(pttl), None if gone else payload))
        yield batch
        if int(cursor) == 0:
            return
