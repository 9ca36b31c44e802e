"""Restoring the files component safely: every archive entry checked, extraction into staging, a swap.

Nothing is written through a link or outside a staging path, and a failure leaves every target as it was.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import IO, Any, BinaryIO

from questboard_backup.errors import IntegrityError, RestoreVerificationError, SourceError
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.sources.base import StreamOpener

logger = logging.getLogger(__name__)

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


def restore_archive(
    label: str, open_stream: StreamOpener, facts: Mapping[str, Any], targets: Sequence[str], timestamp: str
) -> dict[str, Any]:
    """Restore the archive's roots to ``targets`` (in the order of ``facts["roots"]``); return the report."""
    # Pass 1 writes nothing: a hostile or damaged archive is refused before any folder is created.
    _read_checked(label, open_stream, facts, len(targets), None)
    extractor = _StagedExtractor(label, targets, timestamp)
    try:
        extractor.prepare()
        counts = _read_checked(label, open_stream, facts, len(targets), extractor)
        extractor.finish_folders()
        previous = extractor.swap()
    except OSError as error:
        extractor.clean_up()
        raise SourceError(f"{label}: cannot restore {error.filename}: {error.strerror}") from None
    except BaseException:
        extractor.clean_up()
        raise
    logger.info(
        "files restored component=%s files=%d dirs=%d symlinks=%d",
        label,
        counts.files,
        counts.dirs,
        counts.symlinks,
    )
    return {
        "roots": list(targets),
        "files": counts.files,
        "dirs": counts.dirs,
        "symlinks": counts.symlinks,
        "previous": previous,
    }


def _read_checked(
    label: str,
    open_stream: StreamOpener,
    facts: Mapping[str, Any],
    root_count: int,
    extractor: _StagedExtractor | None,
) -> Counts:
    """Read the stream to its authenticated end, checking every entry (and extracting it, if asked)."""
    checker = _ArchiveChecker(label, root_count)
    with open_stream() as reader, _open_archive(label, reader) as tar:
        while (member := _next_member(label, tar)) is not None:
            index, parts = checker.accept(member)
            if extractor is not None:
                extractor.extract(tar, member, index, parts)
    problems = checker.counts.mismatches(facts)
    if len(checker.counts.roots) != root_count:
        problems.append(f"{root_count} roots expected, {len(checker.counts.roots)} found")
    if problems:
        raise RestoreVerificationError(f"{label}: archive does not match the manifest: {'; '.join(problems)}")
    return checker.counts


def _mtime_ns(label: str, member: tarfile.TarInfo) -> int:
    # tarfile parses the PAX mtime into a float, which cannot hold nanoseconds; the raw text can.
    raw = member.pax_headers.get("mtime")
    try:
        value = int(Decimal(raw) * NS) if raw is not None else int(member.mtime) * NS
    except (InvalidOperation, ValueError, OverflowError):
        value = 2**63
    if not -(2**63) < value < 2**63:
        raise IntegrityError(f"{label}: archive entry {member.name!r} refused: mtime {raw!r} out of range")
    return value


def _open_archive(label: str, reader: BinaryIO) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=reader, mode="r|", bufsize=READ_SIZE)
    except tarfile.TarError as error:
        raise IntegrityError(f"{label}: not a readable archive ({error})") from None


def _next_member(label: str, tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    try:
        member = tar.next()
    except tarfile.TarError as error:
        raise IntegrityError(f"{label}: archive unreadable ({error})") from None
    # TarFile keeps every member it has read; a streamed restore needs none of them.
    tar.members.clear()  # type: ignore[attr-defined]
    return member


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
        _mtime_ns(self._label, member)
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


@dataclass(frozen=True)
class _Metadata:
    mode: int
    uid: int
    gid: int
    mtime_ns: int


class _StagedExtractor:
    """Extracts into staging paths beside the targets, then swaps them in; undoes everything on failure."""

    def __init__(self, label: str, targets: Sequence[str], timestamp: str) -> None:
        self._label, self._targets, self._timestamp = label, targets, timestamp
        self._staging = [
            os.path.join(os.path.dirname(t), f".{os.path.basename(t)}.restore-{timestamp}") for t in targets
        ]
        self._previous = [f"{target}.pre_restore_{timestamp}" for target in targets]
        self._prepared = False
        self._made_parents: list[str] = []
        self._folders: list[tuple[int, str, _Metadata]] = []
        self._as_root = os.geteuid() == 0

    def prepare(self) -> None:
        # Checked before anything is written, so a leftover copy stops the restore with nothing to undo.
        self._check_free()
        for staging in self._staging:
            parent = os.path.dirname(staging)
            missing = []
            while not os.path.lexists(parent):
                missing.append(parent)
                parent = os.path.dirname(parent)
            for folder in reversed(missing):
                os.mkdir(folder)
                self._made_parents.append(folder)
        self._prepared = True

    def _check_free(self) -> None:
        for target, staging, previous in zip(self._targets, self._staging, self._previous, strict=True):
            if os.path.lexists(staging):
                raise SourceError(f"{self._label}: staging path {staging} already exists; remove it first")
            if os.path.lexists(target) and os.path.lexists(previous):
                raise SourceError(f"{self._label}: {previous} already exists; remove it first")

    def extract(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, index: int, parts: tuple[str, ...]
    ) -> None:
        staging = self._staging[index]
        folder = staging
        # Never write through a link: every folder above the entry must be a real one we made.
        for part in parts[:-1]:
            folder = os.path.join(folder, part)
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise IntegrityError(
                    f"{self._label}: archive entry {member.name!r} refused: {folder} is not a folder"
                )
        path = os.path.join(staging, *parts)
        metadata = _Metadata(member.mode & 0o7777, member.uid, member.gid, _mtime_ns(self._label, member))
        if member.isdir():
            os.mkdir(path, 0o700)
            self._folders.append((len(parts), path, metadata))
        elif member.issym():
            os.symlink(member.linkname, path)
            if self._as_root:
                os.lchown(path, metadata.uid, metadata.gid)
            os.utime(path, ns=(metadata.mtime_ns, metadata.mtime_ns), follow_symlinks=False)
        else:
            source = tar.extractfile(member)
            if source is None:
                raise IntegrityError(f"{self._label}: archive entry {member.name!r} has no content")
            self._write_file(path, member.name, metadata, source)

    def _write_file(self, path: str, name: str, metadata: _Metadata, source: IO[bytes]) -> None:
        temporary = os.path.join(os.path.dirname(path), f".qb-{secrets.token_hex(8)}.part")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                try:
                    shutil.copyfileobj(source, handle, READ_SIZE)
                except tarfile.TarError as error:
                    raise IntegrityError(
                        f"{self._label}: archive entry {name!r} unreadable ({error})"
                    ) from None
                handle.flush()
                self._apply_metadata(fd, metadata)
                os.fsync(fd)
            os.rename(temporary, path)
        except BaseException:
            if os.path.lexists(temporary):
                os.unlink(temporary)
            raise

    def _apply_metadata(self, fd: int, metadata: _Metadata) -> None:
        # chown before chmod: changing the owner clears set-uid and set-gid bits.
        if self._as_root:
            os.fchown(fd, metadata.uid, metadata.gid)
        os.fchmod(fd, metadata.mode)
        os.utime(fd, ns=(metadata.mtime_ns, metadata.mtime_ns))

    def finish_folders(self) -> None:
        # Deepest first: creating children changed every folder's mtime, and modes may forbid writing.
        for _, path, metadata in sorted(self._folders, key=lambda folder: -folder[0]):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                self._apply_metadata(fd, metadata)
                os.fsync(fd)
            finally:
                os.close(fd)

    def swap(self) -> list[str]:
        moves: list[tuple[str, str]] = []
        kept = []
        try:
            for target, staging, previous in zip(self._targets, self._staging, self._previous, strict=True):
                if os.path.lexists(target):
                    os.rename(target, previous)
                    moves.append((target, previous))
                    kept.append(previous)
                os.rename(staging, target)
                moves.append((staging, target))
        except OSError as error:
            for source, destination in reversed(moves):
                try:
                    os.rename(destination, source)
                except OSError:
                    logger.exception("swap not undone path=%s moved_to=%s", source, destination)
            raise SourceError(f"{self._label}: cannot swap {error.filename}: {error.strerror}") from None
        for target, previous in zip(self._targets, self._previous, strict=True):
            if previous in kept:
                logger.info("previous copy kept path=%s previous=%s", target, previous)
            _fsync_folder(os.path.dirname(target))
        return kept

    def clean_up(self) -> None:
        # Only once prepare() saw every staging path free are they all ours to remove.
        for staging in self._staging if self._prepared else ():
            try:
                _remove(staging)
            except OSError:
                logger.exception("staging not removed path=%s", staging)
        for folder in reversed(self._made_parents):
            try:
                os.rmdir(folder)
            except OSError:
                logger.warning("created folder not removed path=%s", folder)


def _fsync_folder(path: str) -> None:
    # The swap has happened; failing to make its rename durable is worth a warning, not an undo.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        logger.warning("folder not synced path=%s", path)


def _remove(path: str) -> None:
    if not os.path.lexists(path):
        return
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        os.unlink(path)
        return
    # Restored folder modes may deny the owner write or search; open them up before deleting.
    pending = [path]
    while pending:
        folder = pending.pop()
        os.chmod(folder, 0o700)
        with os.scandir(folder) as entries:
            pending.extend(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
    shutil.rmtree(path)
