"""Room for the next backup in BACKUP_DIR: the set's size estimated from the last sets stored there, and
a refusal, before any of it is written, when the filesystem has less free space than that; and the
filesystem's free and total bytes, for the metrics.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from questboard_backup.address import (
    TIERS,
    BackupId,
    SetAddress,
    sort_key,
    staged_set_prefix,
)
from questboard_backup.errors import BackupError, InsufficientSpaceError, StorageError
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage

logger = logging.getLogger(__name__)

#: BACKUP_SPACE_MARGIN's default: the next set may be a fifth larger than the largest recent one.
DEFAULT_SPACE_MARGIN = 1.2
#: How many of the newest sets the estimate looks at: enough to ride over one unusually small set,
#: few enough to follow the data as it grows or shrinks.
RECENT_SETS = 3


def human_size(size: float) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1024), as the CLI and the engine's messages show sizes."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TB"


def disk_space(path: Path) -> tuple[int, int]:
    """Free and total bytes of the filesystem holding ``path``; free is what an unprivileged process
    may still write (root's reserved blocks left out). StorageError when ``path`` cannot be read."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as error:
        raise StorageError(f"cannot read the free space of {path}: {error.strerror}") from None
    return usage.free, usage.total


@dataclass(frozen=True)
class SetSize:
    backup_id: str
    kind: str
    stored_bytes: int  # every file of the set, manifest included, as the storage lists it


def set_sizes(storage: Storage) -> list[SetSize]:
    """Every complete set in ``storage`` (one with a manifest) and the bytes its files take, newest
    first. Sizes are the stored files' own, not what a manifest claims."""
    sizes: dict[str, int] = {}
    complete: dict[str, SetAddress] = {}
    for tier in TIERS:
        for key in storage.list_keys(tier):
            prefix = staged_set_prefix(key)
            if prefix is None:
                continue
            try:
                size = storage.size(key)
            except (BackupError, OSError):  # vanished or unreadable: the estimate is a guide, not a check
                size = 0
            sizes[prefix] = sizes.get(prefix, 0) + size
            address = SetAddress.from_manifest_key("", key)
            if address is not None:
                complete[prefix] = address
    found = [
        SetSize(address.backup_id, BackupId.parse(address.backup_id).kind, sizes[prefix])
        for prefix, address in complete.items()
    ]
    return sorted(found, key=lambda found_set: sort_key(found_set.backup_id), reverse=True)


@dataclass(frozen=True)
class SpaceEstimate:
    """What the next set of ``kind`` should need: ``needed_bytes``, and ``basis``, which sets it was
    read from, for the operator."""

    kind: str
    needed_bytes: int
    basis: str


def estimate_next_set(sets: Sequence[SetSize], kind: str, margin: float) -> SpaceEstimate | None:
    """The largest of the newest ``RECENT_SETS`` sets of ``kind`` (else of any type) times ``margin``;
    None when there is no set to go by."""
    same_kind = [found for found in sets if found.kind == kind][:RECENT_SETS]
    recent = same_kind or list(sets[:RECENT_SETS])
    if not recent:
        return None
    largest = max(found.stored_bytes for found in recent)
    if len(recent) == 1:
        basis = f"the last {kind} set's size" if same_kind else "the last set's size"
    else:
        basis = f"the largest of the last {len(recent)} {kind + ' sets' if same_kind else 'sets of any type'}"
    return SpaceEstimate(kind, math.ceil(largest * margin), f"{basis} x {margin:g}")


def check_space(local: LocalStorage, kind: str, margin: float) -> SpaceEstimate | None:
    """Refuse (InsufficientSpaceError) a ``kind`` backup into BACKUP_DIR (``local``) when its filesystem
    has less free space than the estimate; call it before writing any of the set. A ``margin`` of 0
    turns the check off; with no earlier set there is nothing to estimate from, and the backup goes
    ahead. Returns the estimate it checked against."""
    root = local.root
    if margin == 0:
        logger.info("space check off location=%s setting=BACKUP_SPACE_MARGIN", root)
        return None
    estimate = estimate_next_set(set_sizes(local), kind, margin)
    if estimate is None:
        logger.info("space check skipped: no earlier set to estimate from location=%s", root)
        return None
    free, _total = disk_space(root)
    logger.info(
        "space checked location=%s free=%d needed=%d basis=%s",
        root,
        free,
        estimate.needed_bytes,
        estimate.basis,
    )
    if free < estimate.needed_bytes:
        raise InsufficientSpaceError(
            f"BACKUP_DIR {root} has {human_size(free)} free; the next {kind} backup needs about "
            f"{human_size(estimate.needed_bytes)} ({estimate.basis}); nothing was written"
        )
    return estimate
