"""Files restores run as root: a staging folder swapped for a symlink mid-restore redirects nothing, and a
target that is a mount point (which cannot be renamed) is restored into, with the same undo and settle."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from questboard_backup.errors import SourceError
from questboard_backup.sources.base import StreamOpener
from questboard_backup.sources.files.component import FilesComponent, tree_listing
from tests.integration.test_files_component import backup, build_tree, leftovers, opener, owners
from tests.integration.test_files_staged import OPTIONS, TS, killed_at_rename


class _RacingReader:
    """Passes a restore's stream on, running ``race`` once the first bytes were read."""

    def __init__(self, reader: BinaryIO, race: Callable[[], None] | None) -> None:
        self._reader, self._race = reader, race

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        if data and self._race is not None:
            race, self._race = self._race, None
            race()
        return data


def racing(open_stream: StreamOpener, race: Callable[[], None]) -> StreamOpener:
    """The restore's second reading of the stream (the one that extracts) runs ``race`` as it starts."""
    opened = 0

    @contextmanager
    def open_racing(part: int = 0) -> Iterator[BinaryIO]:
        nonlocal opened
        opened += 1
        with open_stream(part) as reader:
            yield cast(BinaryIO, _RacingReader(reader, race if opened == 2 else None))

    return open_racing


def test_a_staging_folder_swapped_for_a_symlink_mid_restore_writes_nothing_outside(tmp_path: Path) -> None:
    uploads, config = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    (uploads / "日本語.txt").write_text("changed since the backup")
    before = {root: (tree_listing(root), owners(root)) for root in (uploads, config)}
    outside = tmp_path / "outside"
    outside.mkdir()
    staging, moved = uploads.parent / f".uploads.restore-{TS}", uploads.parent / "moved-away"
    raced = []

    def replace_staging() -> None:
        assert staging.is_dir() and not any(staging.iterdir())  # made, nothing extracted yet
        staging.rename(moved)
        staging.symlink_to(outside)
        raced.append(True)

    with pytest.raises(SourceError) as raised:
        FilesComponent("files", ()).restore(racing(opener(stored, stats), replace_staging), facts, OPTIONS)

    assert raced and str(raised.value) == (
        f"files: staging folder {staging} was replaced during the restore; nothing was swapped in"
    )
    assert list(outside.iterdir()) == []
    assert {root: (tree_listing(root), owners(root)) for root in (uploads, config)} == before
    # What was written went, through the folder's handle, into the folder moved away, and was removed.
    assert list(moved.iterdir()) == [] and not staging.is_symlink() and not leftovers(tmp_path)


def test_a_staging_folder_replaced_before_the_swap_is_refused_and_not_followed(tmp_path: Path) -> None:
    uploads, config = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    before = {root: tree_listing(root) for root in (uploads, config)}
    FilesComponent("files", ()).stage(opener(stored, stats), facts, OPTIONS)
    staging = uploads.parent / f".uploads.restore-{TS}"
    outside = tmp_path / "outside"
    staging.rename(outside)  # a look-alike staged copy elsewhere, reached through a link
    staging.symlink_to(outside)

    later = FilesComponent("files", [uploads, config])
    with pytest.raises(SourceError, match=f"^files: {staging} is not a private staging folder$"):
        later.swap_in(OPTIONS)
    assert {root: tree_listing(root) for root in (uploads, config)} == before
    later.undo(OPTIONS)
    assert not staging.is_symlink() and outside.is_dir() and not leftovers(tmp_path / "live")


def is_mounted(path: Path) -> bool:
    """Whether the kernel's mount table lists ``path`` (a same-device bind mount fools ``ismount``)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        return str(path) in {line.split(" ")[4] for line in table}


def mount_state(uploads: Path, config: Path) -> dict[str, Any]:
    """The mount point's tree and owners (its rollback copy aside), the config file, what sits beside."""

    def apart(listing: dict[str, Any]) -> dict[str, Any]:
        return {name: value for name, value in listing.items() if not name.startswith(".pre_restore_")}

    return {
        "uploads": (apart(tree_listing(uploads)), apart(owners(uploads))),
        "config": tree_listing(config),
        "beside": sorted(os.listdir(uploads.parent)),
        "mounted": is_mounted(uploads),
    }


def test_a_mount_point_is_restored_into_and_keeps_its_previous_entries_inside(
    tmp_path: Path, mounted_uploads: Path
) -> None:
    uploads, config = build_tree(tmp_path / "live")
    assert uploads == mounted_uploads and is_mounted(uploads)
    original = mount_state(uploads, config)
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    (uploads / "日本語.txt").write_text("changed since the backup")
    (uploads / "added.txt").write_text("new")
    modified = tree_listing(uploads)

    report = FilesComponent("files", ()).restore(opener(stored, stats), facts, OPTIONS)

    previous = uploads / f".pre_restore_{TS}"
    assert report["previous"] == [str(previous), f"{config}.pre_restore_{TS}"]
    assert mount_state(uploads, config) == original
    assert tree_listing(previous) == modified
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("killed", ["never", "moving-aside", "moving-in"])
def test_a_mount_point_swap_undone_or_killed_midway_gives_back_the_original_exactly(
    tmp_path: Path, mounted_uploads: Path, killed: str
) -> None:
    uploads, config = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    (uploads / "日本語.txt").write_text("changed since the backup")
    (uploads / "added.txt").write_text("new")
    before = mount_state(uploads, config)
    current = len(os.listdir(uploads))
    staged = FilesComponent("files", ())
    staged.stage(opener(stored, stats), facts, OPTIONS)
    assert (uploads / f".uploads.restore-{TS}").is_dir()

    # The first renames move the current entries aside, the next ones move the staged entries in.
    if killed == "never":
        staged.swap_in(OPTIONS)
    else:
        killed_at = 3 if killed == "moving-aside" else current + 3
        killed_at_rename(killed_at, lambda: FilesComponent("files", [uploads, config]).swap_in(OPTIONS))
        moved_aside = len(os.listdir(uploads / f".pre_restore_{TS}"))
        assert moved_aside == (2 if killed == "moving-aside" else current)

    lines = FilesComponent("files", [uploads, config]).undo(OPTIONS)

    assert f"files: swap of {uploads} undone" in lines
    assert mount_state(uploads, config) == before
