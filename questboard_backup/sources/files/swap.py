"""Swapping staged files restores in, settling them, and undoing them from any process.

Beside its target (the usual case) a swap is two renames: target -> ``{target}.pre_restore_{ts}``, then
``.{name}.restore-{ts}/tree`` -> target. A mount point cannot be renamed, so its entries move instead:
the current ones into ``{target}/.pre_restore_{ts}``, then the staged ones into the target. Before the
first move a mark, ``swapping`` in the staging folder, records the swap; while it is there the swap is
unsettled. This restore's ``undo`` then puts everything back, whichever move a killed process stopped at.
A later restore's ``clear_leftovers`` settles a swap that went in (the target may have taken writes
since) and completes backwards only one stopped before the staged copy was in place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from questboard_backup.address import TIMESTAMP_PATTERN
from questboard_backup.errors import SourceError
from questboard_backup.sources.files import handles
from questboard_backup.sources.files.staging import (
    MARKER,
    PARENTS,
    ROOT,
    TREE,
    Home,
    Place,
    apply_metadata,
    home_of,
    metadata,
    open_own_staging,
    read_file,
    remove_made,
    remove_staging,
    write_file,
)

logger = logging.getLogger(__name__)


def swap_in(label: str, places: Sequence[Place]) -> list[str]:
    """Swap every staged root in; on failure put back every root already moved and raise.
    Returns the previous copies kept."""
    kept: list[str] = []
    marked: list[Place] = []
    where = ""
    try:
        for place in places:
            where = place.target
            previous = _swap_place(label, place, marked)
            if previous is not None:
                kept.append(previous)
    except BaseException as error:
        for place in reversed(marked):
            try:
                _with_staging(place, _put_back)
            except OSError:
                logger.exception("swap not undone path=%s", place.target)
        if isinstance(error, OSError):
            raise SourceError(f"{label}: cannot swap {where}: {error.strerror}") from None
        raise
    for place, previous in zip(places, kept, strict=False):
        logger.info("previous copy kept path=%s previous=%s", place.target, previous)
    return kept


def settle(label: str, places: Sequence[Place]) -> None:
    """Remove each root's mark and its emptied staging folder; the previous copies stay. Never raises."""
    for place in places:
        try:
            with home_of(place) as home:
                if home is not None:
                    _remove_staging(place, home, "restored")
        except (OSError, ValueError) as error:
            logger.error("swap not settled component=%s path=%s error=%s", label, place.target, error)


def undo(label: str, places: Sequence[Place]) -> list[str]:
    """Put back any unsettled swap and remove this restore's staging; one line per thing done."""
    return _finish(label, places, settle_swapped=False)


def clear_leftovers(label: str, places: Sequence[Place]) -> list[str]:
    """Finish what restores of other timestamps left beside (or inside) each target: a swap that went in is
    settled, one stopped before the staged copy was in place is completed backwards, staging is removed.
    Previous copies stay; only names carrying a restore's timestamp are looked at."""
    lines: list[str] = []
    for place in places:
        try:
            with home_of(place) as home:
                if home is None:
                    continue
                names = os.listdir(home.fd)
        except OSError as error:
            raise SourceError(
                f"{label}: cannot look for leftovers beside {place.target}: {error.strerror}"
            ) from None
        pattern = re.escape(f".{place.base}.restore-") + f"({TIMESTAMP_PATTERN})"
        for name in sorted(names):
            found = re.fullmatch(pattern, name, re.ASCII)
            if found and found.group(1) != place.timestamp:
                earlier = dataclasses.replace(place, timestamp=found.group(1))
                lines.extend(_finish(label, [earlier], settle_swapped=True))
    return lines


def _finish(label: str, places: Sequence[Place], settle_swapped: bool) -> list[str]:
    lines: list[str] = []
    made: list[str] = []
    for place in places:
        try:
            lines.extend(_undo_place(label, place, made, settle_swapped))
        except (OSError, ValueError) as error:
            # A damaged record (ValueError) is as much a reason to stop here as a failed rename.
            reason = error.strerror if isinstance(error, OSError) else "damaged staging record"
            logger.error("restore not undone component=%s path=%s error=%s", label, place.target, reason)
            lines.append(f"{label}: cannot undo the restore of {place.target}: {reason}")
    remove_made(made)
    return lines


def _swap_place(label: str, place: Place, marked: list[Place]) -> str | None:
    with home_of(place) as home:
        if home is None:
            raise SourceError(f"{label}: nothing staged for {place.target}")
        staging = _open_staging(label, place, home)
        if staging is None:
            raise SourceError(f"{label}: nothing staged for {place.target}")
        try:
            if read_file(staging, MARKER) is not None:
                raise SourceError(f"{label}: {place.target} is already swapped in and not settled")
            if handles.entry(staging, TREE) is None:
                raise SourceError(f"{label}: nothing staged for {place.target}")
            if home.mount:
                return _swap_mount(place, home, staging, marked)
            return _swap_beside(place, home, staging, marked)
        finally:
            os.close(staging)


def _swap_beside(place: Place, home: Home, staging: int, marked: list[Place]) -> str | None:
    previous = place.previous_name(False) if handles.entry(home.fd, place.base) is not None else None
    write_file(staging, MARKER, json.dumps({"target": place.target, "previous": previous}).encode())
    marked.append(place)
    if previous is not None:
        handles.rename_noreplace(home.fd, place.base, home.fd, previous)
    handles.rename_noreplace(staging, TREE, home.fd, place.base)
    os.fsync(home.fd)
    return None if previous is None else place.previous_path(False)


def _swap_mount(place: Place, home: Home, staging: int, marked: list[Place]) -> str:
    previous = place.previous_name(True)
    tree = handles.open_folder(staging, TREE)
    try:
        staged = sorted(os.listdir(tree))
        current = sorted(set(os.listdir(home.fd)) - {place.staging_name, previous})
        before = read_file(staging, ROOT) or metadata(os.fstat(home.fd))
        restored = metadata(os.fstat(tree))
        mark = {
            "target": place.target,
            "previous": previous,
            "staged": staged,
            "root": before,
            "restored": restored,
        }
        write_file(staging, MARKER, json.dumps(mark).encode())
        marked.append(place)
        os.mkdir(previous, 0o700, dir_fd=home.fd)
        kept = handles.open_folder(home.fd, previous)
        try:
            for name in current:
                handles.rename_noreplace(home.fd, name, kept, name)
            for name in staged:
                handles.rename_noreplace(tree, name, home.fd, name)
            # The target keeps its own folder; it takes the staged root's owner, mode and time.
            apply_metadata(kept, before)
            apply_metadata(home.fd, restored)
            os.fsync(kept)
        finally:
            os.close(kept)
        os.fsync(home.fd)
    finally:
        os.close(tree)
    return place.previous_path(True)


def _open_staging(label: str, place: Place, home: Home) -> int | None:
    """This restore's staging folder, opened; None when there is none. Refuses one this user could not
    have made private (a link or someone else's folder under the staging name)."""
    found = handles.entry(home.fd, place.staging_name)
    if found is None:
        return None
    if not handles.is_private_folder(found):
        raise SourceError(f"{label}: {place.staging_path(home.mount)} is not a private staging folder")
    fd = handles.open_folder(home.fd, place.staging_name)
    if not handles.same(os.fstat(fd), found):
        os.close(fd)
        raise SourceError(f"{label}: {place.staging_path(home.mount)} was replaced")
    return fd


def _with_staging(place: Place, action: Callable[[Place, Home, int], list[str]]) -> list[str]:
    with home_of(place) as home:
        staging = open_own_staging(home.fd, place.staging_name) if home is not None else None
        if home is None or staging is None:
            return []
        try:
            return action(place, home, staging)
        finally:
            os.close(staging)


def _read_mark(staging: int) -> dict[str, Any] | None:
    try:
        mark = read_file(staging, MARKER)
    except ValueError:
        # The mark is renamed into place whole, after its content is synced: a torn one was never used.
        return None
    return mark if isinstance(mark, dict) else None


def _went_in(place: Place, home: Home, staging: int) -> bool:
    """Whether a marked swap put its staged copy in place, so the target may have taken writes since:
    beside, the staged tree was renamed to the target; a mount point, every staged entry moved in (a
    swap of an empty staged folder is never taken as in: putting it back moves nothing out)."""
    mark = _read_mark(staging)
    if mark is None:
        return False
    if not home.mount:
        return handles.entry(staging, TREE) is None and handles.entry(home.fd, place.base) is not None
    staged = mark.get("staged")
    if not isinstance(staged, list) or not staged:
        return False
    if handles.entry(staging, TREE) is None:
        return True
    tree = handles.open_folder(staging, TREE)
    try:
        return all(handles.entry(tree, name) is None for name in staged)
    finally:
        os.close(tree)


def _put_back(place: Place, home: Home, staging: int) -> list[str]:
    """Undo an unsettled swap, leaving the staged copy in its staging folder; nothing when unmarked."""
    mark = _read_mark(staging)
    if mark is None:
        return []
    if home.mount:
        _put_back_mount(place, home, staging, mark)
    else:
        if handles.entry(staging, TREE) is None and handles.entry(home.fd, place.base) is not None:
            handles.rename_noreplace(home.fd, place.base, staging, TREE)
        previous = mark.get("previous")
        vacant = handles.entry(home.fd, place.base) is None
        if isinstance(previous, str) and vacant and handles.entry(home.fd, previous) is not None:
            handles.rename_noreplace(home.fd, previous, home.fd, place.base)
    os.fsync(home.fd)
    os.unlink(MARKER, dir_fd=staging)
    os.fsync(staging)
    return [f"swap of {place.target} undone"]


def _put_back_mount(place: Place, home: Home, staging: int, mark: dict[str, Any]) -> None:
    # A staged name still in the staging tree was not moved yet; one that is not is in the target.
    if handles.entry(staging, TREE) is None:
        os.mkdir(TREE, 0o700, dir_fd=staging)
    tree = handles.open_folder(staging, TREE)
    try:
        for name in mark.get("staged", []):
            if handles.entry(tree, name) is None and handles.entry(home.fd, name) is not None:
                handles.rename_noreplace(home.fd, name, tree, name)
    finally:
        os.close(tree)
    previous = place.previous_name(True)
    if handles.entry(home.fd, previous) is not None:
        kept = handles.open_folder(home.fd, previous)
        try:
            for name in os.listdir(kept):
                handles.rename_noreplace(kept, name, home.fd, name)
        finally:
            os.close(kept)
        os.rmdir(previous, dir_fd=home.fd)
    apply_metadata(home.fd, mark["root"])


def _undo_place(label: str, place: Place, made: list[str], settle_swapped: bool) -> list[str]:
    """Undo one root, or with ``settle_swapped`` settle it when its swap went in; the folders its stage
    created above the target are added to ``made`` (unless settled: the target is in them)."""
    with home_of(place) as home:
        if home is None:
            return []
        found = handles.entry(home.fd, place.staging_name)
        if found is None:
            return []
        path = place.staging_path(home.mount)
        lines, keep = [], "root"
        staging = open_own_staging(home.fd, place.staging_name)
        if staging is not None:
            try:
                if settle_swapped and _went_in(place, home, staging):
                    keep = "current"
                    lines = [
                        f"{label}: settled the swap of an earlier restore ({place.timestamp}) into {place.target}"
                    ]
                else:
                    made.extend(read_file(staging, PARENTS) or [])
                    lines = [f"{label}: {line}" for line in _put_back(place, home, staging)]
            finally:
                os.close(staging)
        # A link or file under this restore's staging name is unlinked; a folder not ours is left unentered.
        if _remove_staging(place, home, keep):
            if keep == "root":
                lines.append(f"{label}: staging {path} removed")
        else:
            lines.append(f"{label}: {path} is not a private staging folder; left in place")
    return lines


def _remove_staging(place: Place, home: Home, keep: str) -> bool:
    """Remove the place's staging folder; False when the folder under its name is not ours (left). A mount
    point then gets back the owner, mode and mtime the staging folder disturbed: the restored root's once
    settled (``keep="restored"``), its own from before the stage when undone (``keep="root"``), or what
    it has now when an earlier restore is settled late (``keep="current"``)."""
    recorded = None
    if home.mount:
        staging = open_own_staging(home.fd, place.staging_name)
        if staging is not None:
            try:
                if keep == "restored":
                    mark = _read_mark(staging)
                    recorded = mark.get("restored") if mark is not None else None
                elif keep == "root":
                    recorded = read_file(staging, ROOT)
                else:
                    recorded = metadata(os.fstat(home.fd))
            finally:
                os.close(staging)
    if not remove_staging(home.fd, place.staging_name, place.staging_path(home.mount)):
        return False
    if recorded is not None:
        apply_metadata(home.fd, recorded)
    os.fsync(home.fd)
    return True
