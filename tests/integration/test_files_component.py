"""The files component: round trips through the real pipeline, hostile archives, damaged streams, checks."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from questboard_backup.errors import (
    ConfigurationError,
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.pipeline import ComponentWriter, StreamStats
from questboard_backup.sources.base import RestoreOptions, StreamOpener
from questboard_backup.sources.files.component import FilesComponent, tree_listing
from tests import sealed
from tests.dataset import tree_state

KEY = os.urandom(32)
CONTEXT = "questboard_full_20240101_020000/files"
PAST_NS = 1_500_000_000_123_456_789
BIG = 3 * 1024 * 1024


def build_tree(root: Path) -> tuple[Path, Path]:
    """An uploads folder with the awkward cases, and a single config file; returns both."""
    uploads = root / "srv" / "uploads"
    deepest = uploads / "nested" / "deeper" / "deepest"
    deepest.mkdir(parents=True)
    (uploads / "empty folder").mkdir()
    (uploads / "日本語.txt").write_text("冒険の記録\n", encoding="utf-8")
    (uploads / "🐉 dragon.bin").write_bytes(bytes(range(256)) * 16)
    (uploads / "empty.txt").write_bytes(b"")
    (uploads / "large.bin").write_bytes(os.urandom(BIG))
    (deepest / "note.md").write_text("deep\n")
    for name, mode in (("private.key", 0o600), ("shared.txt", 0o640), ("run.sh", 0o755), ("tool", 0o4755)):
        (uploads / name).write_bytes(os.urandom(100))
        (uploads / name).chmod(mode)
    (uploads / "latest.txt").symlink_to("日本語.txt")
    (uploads / "passwd").symlink_to("/etc/passwd")
    (uploads / "dangling").symlink_to("missing/nowhere")
    (uploads / "nested").chmod(0o750)
    if os.geteuid() == 0:
        os.chown(uploads / "shared.txt", 12345, 54321)
        os.lchown(uploads / "latest.txt", 23456, 65432)
    config = root / "etc" / "questboard" / "app.env"
    config.parent.mkdir(parents=True)
    config.write_text("QUESTBOARD_MODE=production\n")
    config.chmod(0o640)
    # Deepest first, so setting a child's time does not disturb its folder's afterwards.
    entries = sorted([*uploads.rglob("*"), uploads, config], key=lambda path: -len(path.parts))
    for offset, path in enumerate(entries):
        os.utime(path, ns=(PAST_NS + offset * 1111, PAST_NS + offset * 1111), follow_symlinks=False)
    return uploads, config


def owners(root: Path) -> dict[str, tuple[int, int]]:
    stats = {name: os.lstat(root / name) for name in tree_listing(root)}
    return {name: (st.st_uid, st.st_gid) for name, st in stats.items()}


def backup(
    component: FilesComponent, sink: Callable[[ComponentWriter], Any] | None = None
) -> tuple[dict[str, Any], bytes, StreamStats]:
    stored = io.BytesIO()
    writer = ComponentWriter(stored, KEY, CONTEXT)
    facts = component.dump(cast(BinaryIO, sink(writer) if sink else writer))
    stats = writer.finish()
    return facts, stored.getvalue(), stats


def opener(stored: bytes, stats: StreamStats) -> StreamOpener:
    return sealed.opener(stored, stats, KEY, CONTEXT, "files")


def restore(
    stored: bytes,
    stats: StreamStats,
    facts: dict[str, Any],
    files_root: Path | None = None,
    timestamp: str = "20240101_020000",
) -> dict[str, Any]:
    return FilesComponent("files", ()).restore(
        opener(stored, stats), facts, RestoreOptions(timestamp, files_root)
    )


def leftovers(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".restore-" in path.name or path.name.startswith(".qb-")]


def test_a_tree_and_a_single_file_round_trip_into_another_root_identically(tmp_path: Path) -> None:
    uploads, config = build_tree(tmp_path / "live")
    component = FilesComponent("files", [uploads, config])
    component.check()
    facts, stored, stats = backup(component)

    assert json.loads(json.dumps(facts)) == facts
    assert facts == {
        "roots": [str(uploads), str(config)],
        "files": 10,
        "dirs": 5,
        "symlinks": 3,
        "bytes": len("冒険の記録\n".encode()) + 4096 + BIG + 5 + 400 + len("QUESTBOARD_MODE=production\n"),
        "skipped": 0,
        "changed_during_backup": 0,
    }
    restored_root = tmp_path / "restored"
    report = restore(stored, stats, facts, restored_root)

    for root in (uploads, config):
        copy = restored_root / root.relative_to("/")
        assert tree_state(copy) == tree_state(root)
        assert owners(copy) == owners(root)
    listing = tree_listing(restored_root / uploads.relative_to("/"))
    assert (
        listing["tool"][1] == 0o4755 and listing["private.key"][1] == 0o600 and listing["nested"][1] == 0o750
    )
    assert listing["passwd"][4] == "/etc/passwd" and listing["dangling"][4] == "missing/nowhere"
    assert listing["日本語.txt"][2] % 1_000_000_000 and listing["empty folder"][0] == "dir"
    assert report == {
        "roots": [str(restored_root / r.relative_to("/")) for r in (uploads, config)],
        "files": 10,
        "dirs": 5,
        "symlinks": 3,
        "previous": [],
    }
    assert not leftovers(restored_root)


def test_an_in_place_restore_replaces_a_modified_tree_and_keeps_the_previous_one(tmp_path: Path) -> None:
    uploads, config = build_tree(tmp_path / "live")
    original = {root: tree_listing(root) for root in (uploads, config)}
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    (uploads / "日本語.txt").write_text("overwritten")
    (uploads / "added.txt").write_text("new")
    (uploads / "empty.txt").unlink()
    (uploads / "run.sh").chmod(0o700)
    config.write_text("QUESTBOARD_MODE=broken\n")
    modified = {root: tree_listing(root) for root in (uploads, config)}

    report = restore(stored, stats, facts, timestamp="20240102_030000")

    previous = [Path(f"{root}.pre_restore_20240102_030000") for root in (uploads, config)]
    assert report["previous"] == [str(path) for path in previous]
    for root, kept in zip((uploads, config), previous, strict=True):
        assert tree_listing(root) == original[root]
        assert tree_listing(kept) == modified[root]
    assert not leftovers(tmp_path / "live")


def test_a_fifo_is_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "live" / "data"
    folder.mkdir(parents=True)
    (folder / "kept.txt").write_text("kept")
    os.mkfifo(folder / "pipe")
    facts, stored, stats = backup(FilesComponent("files", [folder]))
    assert (facts["files"], facts["skipped"]) == (1, 1)
    restore(stored, stats, facts, tmp_path / "restored")
    assert set(tree_listing(tmp_path / "restored" / folder.relative_to("/"))) == {".", "kept.txt"}


class _ChangingSink:
    """Passes the tar stream on, changing the file being archived at the first write (mid-file)."""

    def __init__(self, writer: ComponentWriter, change: Callable[[], None]) -> None:
        self._writer, self._change = writer, change

    def write(self, data: bytes) -> int:
        change, self._change = self._change, lambda: None
        change()
        return self._writer.write(data)


@pytest.mark.parametrize("change", ["shrinks", "grows"])
def test_a_file_changing_while_it_is_read_is_stored_at_its_listed_size_and_counted(
    tmp_path: Path, change: str
) -> None:
    big = tmp_path / "live" / "big.bin"
    big.parent.mkdir()
    content = os.urandom(BIG)
    big.write_bytes(content)

    def alter() -> None:
        if change == "shrinks":
            os.truncate(big, 100)
        else:
            with open(big, "ab") as handle:
                handle.write(b"x" * 1000)

    facts, stored, stats = backup(FilesComponent("files", [big]), lambda w: _ChangingSink(w, alter))
    assert facts["changed_during_backup"] == 1 and facts["bytes"] == BIG
    restore(stored, stats, facts, tmp_path / "restored")
    restored = (tmp_path / "restored" / big.relative_to("/")).read_bytes()
    assert len(restored) == BIG
    if change == "grows":
        assert restored == content
    else:
        assert restored[:100] == content[:100] and restored.endswith(bytes(1024 * 1024))


def _entry(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data), link
    info.mode, info.mtime = (0o755 if kind == tarfile.DIRTYPE else 0o644), 1_600_000_000
    return info, data


def _seal(entries: list[tuple[tarfile.TarInfo, bytes]]) -> tuple[bytes, StreamStats]:
    stored = io.BytesIO()
    writer = ComponentWriter(stored, KEY, CONTEXT)
    with tarfile.open(fileobj=cast(BinaryIO, writer), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data else None)
    stats = writer.finish()
    return stored.getvalue(), stats


HOSTILE: dict[str, Callable[[Path], tuple[str, list[tuple[tarfile.TarInfo, bytes]]]]] = {
    "dot-dot": lambda out: (
        "0/../escape",
        [_entry("0", tarfile.DIRTYPE), _entry("0/../escape", data=b"pwned")],
    ),
    "absolute": lambda out: (
        str(out / "abs"),
        [_entry("0", tarfile.DIRTYPE), _entry(str(out / "abs"), data=b"pwned")],
    ),
    "through-a-link": lambda out: (
        "0/link/file",
        [
            _entry("0", tarfile.DIRTYPE),
            _entry("0/link", tarfile.SYMTYPE, link=str(out)),
            _entry("0/link/file", data=b"pwned"),
        ],
    ),
    "hard-link": lambda out: (
        "0/b",
        [
            _entry("0", tarfile.DIRTYPE),
            _entry("0/a", data=b"data"),
            _entry("0/b", tarfile.LNKTYPE, link="0/a"),
        ],
    ),
    "unknown-root": lambda out: ("7/x", [_entry("0", tarfile.DIRTYPE), _entry("7/x", data=b"pwned")]),
    "device": lambda out: ("0/null", [_entry("0", tarfile.DIRTYPE), _entry("0/null", tarfile.CHRTYPE)]),
    "duplicate": lambda out: (
        "0/a",
        [_entry("0", tarfile.DIRTYPE), _entry("0/a", data=b"1"), _entry("0/a", data=b"2")],
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_naming_the_entry_before_anything_is_written(
    tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target, _ = build_tree(tmp_path / "live")
    bad_name, entries = HOSTILE[case](outside)
    stored, stats = _seal(entries)
    kinds = [info.type for info, _ in entries]
    facts = {
        "roots": [str(target)],
        "files": kinds.count(tarfile.REGTYPE),
        "dirs": kinds.count(tarfile.DIRTYPE),
        "symlinks": kinds.count(tarfile.SYMTYPE),
        "bytes": sum(info.size for info, _ in entries),
    }
    before = tree_listing(tmp_path)

    for files_root in (None, tmp_path / "restored"):
        with pytest.raises(IntegrityError) as raised:
            restore(stored, stats, facts, files_root)
        assert bad_name in str(raised.value) and "\n" not in str(raised.value)
        assert tree_listing(tmp_path) == before


@pytest.mark.parametrize("damage", ["flipped-byte", "truncated"])
def test_a_damaged_stream_is_refused_and_leaves_the_targets_untouched(tmp_path: Path, damage: str) -> None:
    uploads, config = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    (uploads / "日本語.txt").write_text("changed since the backup")
    if damage == "flipped-byte":
        damaged = bytearray(stored)
        damaged[len(damaged) // 2] ^= 0x01
        stored = bytes(damaged)
    else:
        stored = stored[: len(stored) - 100]
    before = tree_listing(tmp_path)

    for files_root in (None, tmp_path / "restored"):
        with pytest.raises(IntegrityError):
            restore(stored, stats, facts, files_root)
        assert tree_listing(tmp_path) == before


def test_an_archive_whose_counts_differ_from_the_manifest_is_refused_untouched(tmp_path: Path) -> None:
    uploads, _ = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads]))
    before = tree_listing(tmp_path)
    with pytest.raises(RestoreVerificationError, match="files 10 expected, 9 found"):
        restore(stored, stats, {**facts, "files": 10})
    assert tree_listing(tmp_path) == before


def test_an_existing_rollback_copy_stops_the_restore_before_any_swap(tmp_path: Path) -> None:
    uploads, config = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    Path(f"{config}.pre_restore_20240101_020000").write_text("an older rollback copy")
    before = tree_listing(tmp_path)
    with pytest.raises(SourceError, match="pre_restore_20240101_020000 already exists"):
        restore(stored, stats, facts)
    assert tree_listing(tmp_path) == before


def test_a_swap_failing_midway_puts_back_the_roots_already_swapped(tmp_path: Path) -> None:
    uploads, config = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    (uploads / "日本語.txt").write_text("changed since the backup")
    config.write_text("changed since the backup")
    before = {root: tree_listing(root) for root in (uploads, config)}
    component, options = FilesComponent("files", ()), RestoreOptions("20240101_020000")
    component.stage(opener(stored, stats), facts, options)
    # Between stage and swap something takes the name the second root's previous copy needs.
    Path(f"{config}.pre_restore_20240101_020000").write_text("appeared meanwhile")

    with pytest.raises(SourceError, match=f"^files: cannot swap {config}: File exists$"):
        component.swap_in(options)

    assert {root: tree_listing(root) for root in (uploads, config)} == before
    assert not Path(f"{uploads}.pre_restore_20240101_020000").exists()
    assert component.undo(options) == [
        f"files: staging {uploads.parent}/.uploads.restore-20240101_020000 removed",
        f"files: staging {config.parent}/.app.env.restore-20240101_020000 removed",
    ]
    assert not leftovers(tmp_path)


def test_a_restore_that_cannot_create_its_target_fails_cleanly(tmp_path: Path) -> None:
    uploads, _ = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads]))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the restore root should be")
    before = tree_listing(tmp_path)
    with pytest.raises(SourceError, match="cannot restore"):
        restore(stored, stats, facts, blocker)
    assert tree_listing(tmp_path) == before


def test_check_names_a_missing_root(tmp_path: Path) -> None:
    present, missing = tmp_path / "present", tmp_path / "no-such-folder"
    present.mkdir()
    FilesComponent("files", [present]).check()
    with pytest.raises(SourceUnreachableError, match=f"^files: cannot read {missing}: No such file"):
        FilesComponent("files", [present, missing]).check()


def test_overlapping_roots_are_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="overlap"):
        FilesComponent("config", [tmp_path, tmp_path / "inner"])
