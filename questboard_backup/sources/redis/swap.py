"""The steps of a staged Redis restore over its spare dbs (``spares.py``): swap in with SWAPDB (or copy
where the server refuses it), settle, undo, and finish what earlier restores left.

Nothing is flushed unless a marker says it is the restore's in hand: its staging, or the previous data
of a target it swapped into. SWAPDB is not idempotent (a second one swaps back), so it is sent once,
never retried, and where the data went is then read from the markers, not from the reply, which a
broken connection may have lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis

from questboard_backup.errors import RestoreVerificationError, SourceError
from questboard_backup.sources.redis.spares import LogicalDbs, Marker

logger = logging.getLogger(__name__)


def _placed(
    markers: dict[int, Marker], offset: int, chosen: Callable[[Marker], bool]
) -> list[tuple[int, Marker]]:
    """The ``chosen`` markers a component placing db ``k`` into db ``offset + k`` wrote, by db."""
    return sorted((db, m) for db, m in markers.items() if m.placed_by(offset) and chosen(m))


def _of(timestamp: str) -> Callable[[Marker], bool]:
    return lambda marker: marker.timestamp == timestamp


def _not_of(timestamp: str) -> Callable[[Marker], bool]:
    return lambda marker: marker.timestamp != timestamp


def swap_in(dbs: LogicalDbs, timestamp: str, offset: int) -> dict[str, Any]:
    """Swap every db staged by the restore ``timestamp`` into its target; on failure swap back those
    done and raise. Where the server refuses SWAPDB, copy instead and say so in ``warning``."""
    staged = sorted(
        ((db, m) for db, m in _placed(dbs.markers(), offset, _of(timestamp)) if m.staged_in(db)),
        key=lambda s: s[1].target,
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
            dbs.mark(marker.target, replace(marker, previous=True))
            error = _swap_once(dbs, marker)
            if _swapped_in(dbs, marker):
                if error is not None:
                    logger.warning(
                        "redis swapdb reply lost, swapped db=%d reason=%s", marker.target, _reason(error)
                    )
                swapped.append(marker)
                continue
            _drop_previous_mark(dbs, marker)
            if error is None:
                raise SourceError(
                    f"redis db {marker.target}: SWAPDB answered OK, yet restore {timestamp}'s staging is "
                    f"still in db {marker.spare} (swapped twice?)"
                )
            if isinstance(error, redis.ResponseError) and not swapped:
                return _copy_in(dbs, [m for _, m in staged], _reason(error))
            raise error
    except BaseException:
        for marker in reversed(swapped):
            try:
                _swap_back(dbs, marker)
            except (redis.RedisError, SourceError) as error:  # the markers let undo finish it
                logger.warning("redis swap back failed db=%d reason=%s", marker.target, _reason(error))
        raise
    logger.info("redis swapped in dbs=%d", len(swapped))
    return {"swap": "SWAPDB"}


def _swap_once(dbs: LogicalDbs, marker: Marker) -> redis.RedisError | None:
    """SWAPDB ``marker``'s target and spare; the error, if any: the swap may have happened all the same."""
    try:
        dbs.swap(marker.target, marker.spare)
    except redis.RedisError as error:
        return error
    return None


def _swapped_in(dbs: LogicalDbs, marker: Marker) -> bool:
    """Whether the staging of ``marker`` is in its target now, read from where its marker is."""
    found = dbs.markers([marker.target, marker.spare])
    if (in_target := found.get(marker.target)) is not None and in_target.is_staging_of(marker):
        return True
    if (in_spare := found.get(marker.spare)) is not None and in_spare.is_staging_of(marker):
        return False
    raise SourceError(
        f"redis db {marker.target}: restore {marker.timestamp}'s staging marker is in neither db "
        f"{marker.target} nor db {marker.spare}, so where its data is cannot be told"
    )


def _swap_back(dbs: LogicalDbs, marker: Marker) -> None:
    """Put back the previous data of a target ``marker``'s restore swapped into, checked as swap_in is."""
    error = _swap_once(dbs, marker)
    if _swapped_in(dbs, marker):
        raise error or SourceError(
            f"redis db {marker.target}: SWAPDB answered OK, yet restore {marker.timestamp}'s data is "
            "still swapped in (swapped twice?)"
        )
    if error is not None:
        logger.warning("redis swapdb reply lost, swapped back db=%d reason=%s", marker.target, _reason(error))
    _drop_previous_mark(dbs, marker)


def _drop_previous_mark(dbs: LogicalDbs, marker: Marker) -> None:
    """Delete the ``previous`` marker of ``marker``'s restore from its target, where the previous data is."""
    if (found := dbs.marker(marker.target)) is not None and found.is_previous_of(marker):
        dbs.unmark(marker.target)


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


def settle(dbs: LogicalDbs, timestamp: str, offset: int) -> None:
    """Keep what the restore ``timestamp`` swapped in: drop its markers and the spare dbs marked as
    holding the previous data (kept, they would double the memory and could make Redis evict live
    keys). A staged db still in its spare means the swap did not happen: it is kept for undo, loudly.
    Logs, never raises."""
    try:
        markers = dbs.markers()
        for db, marker in _placed(markers, offset, _of(timestamp)):
            if marker.swapped_into(db):
                _finish_settling(dbs, markers, marker)
            elif marker.staged_in(db) and marker.copying:
                dbs.flush(db)
            elif marker.staged_in(db):
                logger.error(
                    "redis swap did not happen, staging kept for undo db=%d target=%d timestamp=%s",
                    db,
                    marker.target,
                    timestamp,
                )
    except (redis.RedisError, OSError) as error:
        logger.warning("redis settle failed timestamp=%s reason=%s", timestamp, _reason(error))


def _finish_settling(dbs: LogicalDbs, markers: dict[int, Marker], marker: Marker) -> str:
    """Keep what ``marker``'s restore swapped into its target: flush the spare only if it is marked as
    holding that target's previous data, then delete the target's marker."""
    # Marked first, so that a kill before the marker is gone is finished forwards, never swapped back
    # with a flushed spare.
    dbs.mark(marker.target, replace(marker, settling=True))
    held = markers.get(marker.spare)
    line = f"redis db {marker.target}: kept what restore {marker.timestamp} swapped in"
    if held is not None and held.is_previous_of(marker):
        dbs.flush(marker.spare)
        line += f", db {marker.spare} (its previous data) flushed"
    elif held is None and dbs.sizes([marker.spare])[marker.spare] == 0:
        line += f", db {marker.spare} empty"
    else:
        holder = "no marker" if held is None else f"restore {held.timestamp}'s marker"
        logger.warning(
            "redis spare db kept, not marked as previous data db=%d holds=%s", marker.spare, holder
        )
        line += (
            f"; db {marker.spare} kept, not flushed: it holds {holder}, not the mark of this db's "
            "previous data"
        )
    dbs.unmark(marker.target)
    return line


def undo(dbs: LogicalDbs, timestamp: str, offset: int) -> list[str]:
    """Undo the restore ``timestamp``, whatever step it reached in whichever process: a target it
    swapped into gets its previous data back (unless it was being settled: that is finished)."""
    lines = []
    markers = dbs.markers()
    for db, marker in _placed(markers, offset, _of(timestamp)):
        if not marker.swapped_into(db):
            continue
        if marker.settling:
            lines.append(_finish_settling(dbs, markers, marker))
            continue
        held = markers.get(marker.spare)
        if held is not None and not held.is_previous_of(marker):
            lines.append(
                f"redis db {marker.target}: not swapped back, its previous data's db {marker.spare} now "
                f"holds restore {held.timestamp}'s marker"
            )
            continue
        _swap_back(dbs, marker)
        lines.append(f"redis db {marker.target}: swapped back the data restore {marker.timestamp} replaced")
    return lines + _drop_leftovers(dbs, offset, _of(timestamp))


def clear_leftovers(dbs: LogicalDbs, timestamp: str, offset: int) -> list[str]:
    """Finish what other restores than ``timestamp`` of the same targets left: a swap in not settled
    is settled forwards (the target may have taken writes since; it is never swapped back), staging
    never swapped in is flushed."""
    other = _not_of(timestamp)
    lines = []
    markers = dbs.markers()
    for db, marker in _placed(markers, offset, other):
        if marker.swapped_into(db):
            lines.append(_finish_settling(dbs, markers, marker))
    return lines + _drop_leftovers(dbs, offset, other)


def _drop_leftovers(dbs: LogicalDbs, offset: int, chosen: Callable[[Marker], bool]) -> list[str]:
    """Flush the ``chosen`` restores' staging never swapped in; delete their ``previous`` markers left in
    targets that hold their own data (swap not done, or undone)."""
    lines = []
    for db, marker in _placed(dbs.markers(), offset, chosen):
        if marker.left_in_target(db):
            dbs.unmark(db)
            lines.append(
                f"redis db {db}: deleted restore {marker.timestamp}'s marker, the data there was never "
                "swapped out"
            )
        elif not marker.staged_in(db):
            continue
        elif marker.copying:
            dbs.flush(db)
            lines.append(
                f"redis db {marker.target}: restore {marker.timestamp} copied into it (SWAPDB refused), "
                f"perhaps in part, so its previous data cannot be put back; spare db {db} flushed"
            )
        else:
            dbs.flush(db)
            lines.append(f"redis db {db}: flushed restore {marker.timestamp}'s staging of db {marker.target}")
    return lines


def _reason(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
