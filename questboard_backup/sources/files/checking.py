"""Checking a files archive entry by entry: nothing that could land outside its root, nothing but files,
folders and symlinks, entries in the order dump writes them, counts that match the manifest.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from questboard_backup.errors import IntegrityError, RestoreVerificationError
from questboard_backup.sources.base import StreamOpener
from questboard_backup.sources.tar_reading import next_member, open_archive

NS = 10**9
COUNTED = ("files", "dirs", "symlinks", "bytes")
_KINDS = {
    tarfile.REGTYPE: "files",
    tarfile.AREGTYPE: "files",
    tarfile.DIRTYPE: "dirs",
    tarfile.SYMTYPE: "symlinks",
}
_REFUSED_TYPES = {
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass
class Counts:
    """What an archive holds (restore) or what went into it (dump)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: int = 0
    changed_during_backup: int = 0
    roots: set[int] = field(default_factory=set)

    def mismatches(self, facts: Mapping[str, Any]) -> list[str]:
        return [
            f"{key} {facts.get(key)} expected, {getattr(self, key)} found"
            for key in COUNTED
            if facts.get(key) != getattr(self, key)
        ]


class Extractor(Protocol):
    """Writes each checked entry somewhere (the second pass of a restore)."""

    def extract(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, index: int, parts: tuple[str, ...]
    ) -> None: ...


def read_checked(
    label: str,
    open_stream: StreamOpener,
    facts: Mapping[str, Any],
    root_count: int,
    extractor: Extractor | None,
) -> Counts:
    """Read the stream to its authenticated end, checking every entry (and extracting it, if asked)."""
    checker = _ArchiveChecker(label, root_count)
    with open_stream() as reader, open_archive(label, reader) as tar:
        while (member := next_member(label, tar)) is not None:
            index, parts = checker.accept(member)
            if extractor is not None:
                extractor.extract(tar, member, index, parts)
    problems = checker.counts.mismatches(facts)
    if len(checker.counts.roots) != root_count:
        problems.append(f"{root_count} roots expected, {len(checker.counts.roots)} found")
    if problems:
        raise RestoreVerificationError(f"{label}: archive does not match the manifest: {'; '.join(problems)}")
    return checker.counts


def mtime_ns(label: str, member: tarfile.TarInfo) -> int:
    # tarfile parses the PAX mtime into a float, which cannot hold nanoseconds; the raw text can.
    raw = member.pax_headers.get("mtime")
    try:
        value = int(Decimal(raw) * NS) if raw is not None else int(member.mtime) * NS
    except (InvalidOperation, ValueError, OverflowError):
        value = 2**63
    if not -(2**63) < value < 2**63:
        raise IntegrityError(f"{label}: archive entry {member.name!r} refused: mtime {raw!r} out of range")
    return value


class _ArchiveChecker:
    """Refuses any entry that could land outside its root or is not a file, folder or symlink.

    Entries must come in the order dump writes them (pre-order, names sorted): that proves there are no
    duplicates and that every entry's parent is a folder archived before it, in memory bounded by depth.
    """

    def __init__(self, label: str, root_count: int) -> None:
        self._label, self._root_count = label, root_count
        self._previous: tuple[int, tuple[str, ...]] | None = None
        self._open_dirs: list[tuple[int, tuple[str, ...]]] = []
        self.counts = Counts()

    def accept(self, member: tarfile.TarInfo) -> tuple[int, tuple[str, ...]]:
        name = member.name
        head, *rest = name.split("/")
        parts = tuple(rest)
        reason = None
        if "\0" in name:
            reason = "NUL in name"
        elif name.startswith("/"):
            reason = "absolute name"
        elif not (head.isascii() and head.isdigit() and len(head) < 10 and str(int(head)) == head):
            reason = "name does not start with a root number"
        elif int(head) >= self._root_count:
            reason = "unknown root"
        elif any(part in ("", ".", "..") for part in parts):
            reason = "empty, '.' or '..' component"
        elif member.type not in _KINDS:
            reason = _REFUSED_TYPES.get(member.type, f"unsupported type {member.type!r}")
        elif _KINDS[member.type] != "files" and member.size:
            reason = "content on a non-file entry"
        elif member.issym() and (not member.linkname or "\0" in member.linkname):
            reason = "empty or invalid link target"
        if reason is None:
            reason = self._place(int(head), parts)
        if reason is not None:
            raise IntegrityError(f"{self._label}: archive entry {name!r} refused: {reason}")
        mtime_ns(self._label, member)
        counts = self.counts
        counts.roots.add(int(head))
        kind = _KINDS[member.type]
        setattr(counts, kind, getattr(counts, kind) + 1)
        counts.bytes += member.size
        if kind == "dirs":
            self._open_dirs.append((int(head), parts))
        return int(head), parts

    def _place(self, index: int, parts: tuple[str, ...]) -> str | None:
        key = (index, parts)
        if self._previous is not None and key <= self._previous:
            return "duplicate or out of order"
        self._previous = key
        while self._open_dirs and not (
            self._open_dirs[-1][0] == index and parts[: len(self._open_dirs[-1][1])] == self._open_dirs[-1][1]
        ):
            self._open_dirs.pop()
        if parts and (not self._open_dirs or self._open_dirs[-1] != (index, parts[:-1])):
            return "its parent is not a folder archived before it"
        return None
