"""Where an s3uploads restore keeps things, and swapping a staged copy in, settling it, undoing it.

Every name derives from the target prefix and the restore's timestamp, so any process finds them again.
For the target ``s3://bucket/uploads/`` and timestamp ``ts``:

- ``uploads.restore-{ts}/`` is the staging prefix, beside the target (never under it): its record
  ``staging.json`` (written first, removed last: the prefix is the engine's own while it is there), the
  staged objects under ``tree/``, and while a swap is unsettled its mark ``swapping.json``.
- ``uploads.pre-restore-{ts}/`` receives a copy of the target's objects when a swap begins: the previous
  copy a swap keeps, as the files component keeps ``{path}.pre_restore_{ts}``.

S3 has no rename, so a swap is copies, in steps the mark records: ``aside`` (the target copied to the
previous copy, the target untouched), ``replacing`` (staged objects copied over the target, then the
target's objects the backup does not hold deleted), ``swapped``. Putting back (undo, or a failed swap)
copies the previous copy over the target and deletes what it did not hold, from ``replacing`` on; in
``aside`` it only drops the partial copy. A later restore settles a ``swapped`` mark (the target may
have taken writes since) and puts back any other.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from questboard_backup.address import TIMESTAMP_PATTERN
from questboard_backup.errors import BackupError, SourceError
from questboard_backup.sources.s3uploads.bucket import Bucket, Listed, ordered_key

logger = logging.getLogger(__name__)

RECORD, MARKER, TREE = "staging.json", "swapping.json", "tree/"
ASIDE, REPLACING, SWAPPED = "aside", "replacing", "swapped"


@dataclass(frozen=True)
class Place:
    """One restore of one target prefix (ending in ``/``): its names, from the prefix and timestamp."""

    prefix: str
    timestamp: str

    @property
    def base(self) -> str:
        return self.prefix[:-1]

    @property
    def staging(self) -> str:
        return f"{self.base}.restore-{self.timestamp}/"

    @property
    def tree(self) -> str:
        return self.staging + TREE

    @property
    def record(self) -> str:
        return self.staging + RECORD

    @property
    def marker(self) -> str:
        return self.staging + MARKER

    @property
    def previous(self) -> str:
        return f"{self.base}.pre-restore-{self.timestamp}/"


def missing_from(
    current: Iterator[Listed], current_prefix: str, wanted: Iterator[Listed], wanted_prefix: str
) -> Iterator[str]:
    """The keys of ``current`` whose name below ``current_prefix`` has no match below ``wanted_prefix``:
    a merge of the two key-ordered listings, in constant memory."""
    pending = next(wanted, None)
    for item in current:
        name = ordered_key(item.key[len(current_prefix) :])
        while pending is not None and ordered_key(pending.key[len(wanted_prefix) :]) < name:
            pending = next(wanted, None)
        if pending is None or ordered_key(pending.key[len(wanted_prefix) :]) != name:
            yield item.key


def _copy_all(bucket: Bucket, source: str, target: str) -> int:
    count = 0
    for item in bucket.objects(source):
        bucket.copy(item, target + item.key[len(source) :])
        count += 1
    return count


def _make_like(bucket: Bucket, target: str, source: str) -> tuple[int, int]:
    """Copy everything under ``source`` over ``target``, then delete from ``target`` what ``source`` does
    not hold: ``target`` then holds exactly ``source``'s objects. Returns (copied, deleted)."""
    copied = _copy_all(bucket, source, target)
    deleted = bucket.delete(missing_from(bucket.objects(target), target, bucket.objects(source), source))
    return copied, deleted


def is_ours(bucket: Bucket, uri: str, place: Place) -> bool:
    record = bucket.read_json(place.record)
    return record is not None and record.get("target") == uri


def swap_in(bucket: Bucket, uri: str, place: Place) -> dict[str, Any]:
    """Put the staged copy in the target's place, the target's objects kept under the previous copy; on
    failure the target gets its objects back and the error is raised."""
    label = bucket.label
    if not is_ours(bucket, uri, place):
        raise SourceError(f"{label}: nothing staged for {uri}")
    if bucket.read_json(place.marker) is not None:
        raise SourceError(f"{label}: {uri} is already swapped in and not settled")
    if not bucket.is_empty(place.previous):
        raise SourceError(f"{label}: {bucket.location(place.previous)} already exists; remove it first")
    bucket.refuse_too_large(place.prefix)
    bucket.refuse_too_large(place.tree)
    bucket.write_json(place.marker, {"target": uri, "state": ASIDE})
    try:
        kept = _copy_all(bucket, place.prefix, place.previous)
        bucket.write_json(place.marker, {"target": uri, "state": REPLACING})
        copied, deleted = _make_like(bucket, place.prefix, place.tree)
        bucket.write_json(place.marker, {"target": uri, "state": SWAPPED})
    except BaseException:
        try:
            put_back(bucket, uri, place)
        except BackupError as error:
            logger.error("swap not undone component=%s target=%s error=%s", label, uri, error)
        raise
    previous = bucket.location(place.previous) if kept else None
    logger.info(
        "objects swapped in component=%s target=%s objects=%d removed=%d previous=%s",
        label,
        uri,
        copied,
        deleted,
        previous,
    )
    return {"previous": previous, "objects": copied, "removed": deleted}


def put_back(bucket: Bucket, uri: str, place: Place) -> list[str]:
    """Undo an unsettled swap (the staged copy stays staged); nothing when there is no mark."""
    mark = bucket.read_json(place.marker)
    if mark is None:
        return []
    line = f"swap of {uri} undone (it had not begun changing the target)"
    if mark.get("state") != ASIDE:
        copied, deleted = _make_like(bucket, place.prefix, place.previous)
        line = f"swap of {uri} undone: {copied} objects put back, {deleted} restored ones removed"
    bucket.remove_prefix(place.previous)
    bucket.delete([place.marker])
    return [line]


def remove_staging(bucket: Bucket, uri: str, place: Place) -> list[str]:
    """Remove the staging prefix when it is the engine's own for this target (its record says so); one
    line on what was done, none when there was nothing."""
    location = bucket.location(place.staging)
    if not is_ours(bucket, uri, place):
        if bucket.is_empty(place.staging):
            return []
        logger.warning("prefix under a staging name is not ours; left location=%s", location)
        return [f"{location} is not a staging prefix of this engine; left in place"]
    bucket.delete([place.marker])
    bucket.remove_prefix(place.staging, last=place.record)
    return [f"staging {location} removed"]


def settle(bucket: Bucket, uri: str, place: Place) -> None:
    """Make the swap final: its mark and the staging go, the previous copy stays. Logs, never raises."""
    try:
        remove_staging(bucket, uri, place)
    except BackupError as error:
        logger.error("swap not settled component=%s target=%s error=%s", bucket.label, uri, error)


def undo(bucket: Bucket, uri: str, place: Place) -> list[str]:
    """Put back an unsettled swap of this restore and remove its staging; idempotent."""
    if not is_ours(bucket, uri, place):
        return remove_staging(bucket, uri, place)
    return put_back(bucket, uri, place) + remove_staging(bucket, uri, place)


def clear_leftovers(bucket: Bucket, uri: str, place: Place) -> list[str]:
    """What restores of other timestamps left beside the target: a swap that went all the way in is
    settled, any other is put back, and their staging removed. Previous copies stay (the operator's)."""
    pattern = re.escape(f"{place.base}.restore-") + f"({TIMESTAMP_PATTERN})/"
    lines: list[str] = []
    for folder in bucket.folders(f"{place.base}.restore-"):
        found = re.fullmatch(pattern, folder, re.ASCII)
        if found is None or found.group(1) == place.timestamp:
            continue
        earlier = dataclasses.replace(place, timestamp=found.group(1))
        if not is_ours(bucket, uri, earlier):
            lines.extend(remove_staging(bucket, uri, earlier))
            continue
        mark = bucket.read_json(earlier.marker)
        if mark is not None and mark.get("state") == SWAPPED:
            remove_staging(bucket, uri, earlier)
            lines.append(f"settled the swap of an earlier restore ({earlier.timestamp}) into {uri}")
        else:
            lines.extend(put_back(bucket, uri, earlier) + remove_staging(bucket, uri, earlier))
    return lines
