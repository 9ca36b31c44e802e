"""Files and config: folders and single files as one streaming PAX tar, restored through staging and a swap.

Restore (files_restore.py) checks the whole archive before writing anything, extracts beside each target
and swaps in only after the stream ended cleanly, keeping the previous copy as ``{path}.pre_restore_{ts}``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from questboard_backup.errors import (
    ConfigurationError,
    IntegrityError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StreamOpener
from questboard_backup.sources.files.restore import COUNTED, NS, Counts, restore_archive

logger = logging.getLogger(__name__)

TreeListing = dict[str, tuple[str, int, int, int, str]]


class FilesComponent:
    """Back up a list of absolute paths (folders or single files); restore them where the manifest says.

    Restore ignores ``paths``: it re-creates the roots recorded in the facts, in place or beneath
    ``options.files_root``.
    """

    def __init__(self, name: str, paths: Sequence[Path]) -> None:
        self.name = name
        self.parallel_streams = False
        # abspath, not resolve: a root that is itself a symlink is backed up as that link.
        self.paths = tuple(Path(os.path.abspath(path)) for path in paths)
        problem = _roots_problem([str(path) for path in self.paths])
        if problem:
            raise ConfigurationError(f"{name}: {problem}")

    def check(self) -> None:
        for path in self.paths:
            try:
                mode = os.lstat(path).st_mode
                wanted = os.R_OK | os.X_OK if stat.S_ISDIR(mode) else os.R_OK
                if not stat.S_ISLNK(mode) and not os.access(path, wanted):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            except OSError as error:
                raise SourceUnreachableError(f"{self.name}: cannot read {path}: {error.strerror}") from None

    def check_restore_target(self) -> None:
        self.check()

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts:
        """``open_part`` is not used: one stream."""
        counts = Counts()
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=READ_SIZE) as tar:
            # Content is copied in chunks of this size (16 KiB by default); undocumented, hence untyped.
            tar.copybufsize = READ_SIZE  # type: ignore[attr-defined]
            archiver = _Archiver(self.name, tar, counts)
            for index, root in enumerate(self.paths):
                archiver.add_root(index, str(root))
        facts: Facts = {"roots": [str(path) for path in self.paths]}
        facts.update({key: getattr(counts, key) for key in (*COUNTED, "skipped", "changed_during_backup")})
        logger.info(
            "files archived component=%s files=%d dirs=%d symlinks=%d bytes=%d skipped=%d changed=%d",
            self.name,
            counts.files,
            counts.dirs,
            counts.symlinks,
            counts.bytes,
            counts.skipped,
            counts.changed_during_backup,
        )
        return facts

    def restore(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        roots = facts.get("roots")
        if not isinstance(roots, list) or not all(isinstance(root, str) for root in roots):
            raise IntegrityError(f"{self.name}: the manifest facts hold no list of roots")
        problem = _roots_problem(roots)
        if problem:
            raise IntegrityError(f"{self.name}: manifest roots refused: {problem}")
        if not re.fullmatch(r"[\w-]+", options.timestamp, re.ASCII):
            raise ConfigurationError(f"restore timestamp {options.timestamp!r} is not a plain name")
        base = os.path.abspath(options.files_root) if options.files_root is not None else None
        targets = [root if base is None else os.path.join(base, os.path.relpath(root, "/")) for root in roots]

        return restore_archive(self.name, open_stream, facts, targets, options.timestamp)


def _roots_problem(roots: Sequence[str]) -> str | None:
    for root in roots:
        if not os.path.isabs(root) or os.path.normpath(root) != root or root.startswith("//") or "\0" in root:
            return f"{root!r} is not a normalized absolute path"
        if root == "/":
            return "/ cannot be a root"
    for index, root in enumerate(roots):
        for other in roots[index + 1 :]:
            if root == other or other.startswith(root + "/") or root.startswith(other + "/"):
                return f"{root} and {other} overlap"
    return None


def _format_ns(ns: int) -> str:
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    return f"{sign}{ns // NS}.{ns % NS:09d}"


class _Archiver:
    """Walks roots without following links and writes each entry to the tar, content streamed."""

    def __init__(self, label: str, tar: tarfile.TarFile, counts: Counts) -> None:
        self._label, self._tar, self._counts = label, tar, counts

    def add_root(self, index: int, root: str) -> None:
        # Reversed pushes make the walk pre-order with sorted names, the order restore insists on.
        pending = [(str(index), root)]
        while pending:
            member, path = pending.pop()
            pending.extend(reversed(self._add(member, path, is_root=member == str(index))))

    def _add(self, member: str, path: str, is_root: bool) -> list[tuple[str, str]]:
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                with os.scandir(path) as entries:
                    names = sorted(entry.name for entry in entries)
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
        except FileNotFoundError:
            if is_root:
                raise SourceUnreachableError(f"{self._label}: cannot read {path}: vanished") from None
            self._changed(path, "vanished")
            return []
        except OSError as error:
            error_class = SourceUnreachableError if is_root else SourceError
            raise error_class(f"{self._label}: cannot read {path}: {error.strerror}") from None
        if stat.S_ISREG(st.st_mode):
            self._add_file(member, path)
            return []
        if stat.S_ISDIR(st.st_mode):
            self._tar.addfile(self._info(member, st, tarfile.DIRTYPE))
            self._counts.dirs += 1
            return [(f"{member}/{name}", os.path.join(path, name)) for name in names]
        if stat.S_ISLNK(st.st_mode):
            info = self._info(member, st, tarfile.SYMTYPE)
            info.linkname = target
            self._tar.addfile(info)
            self._counts.symlinks += 1
            return []
        if is_root:
            raise SourceError(f"{self._label}: {path} is not a file, folder or symlink")
        logger.warning("entry skipped path=%s reason=%s", path, "not a file, folder or symlink")
        self._counts.skipped += 1
        return []

    def _add_file(self, member: str, path: str) -> None:
        # O_NOFOLLOW and O_NONBLOCK: the entry may have become a link or a fifo since it was listed.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.ELOOP):
                raise SourceError(f"{self._label}: cannot read {path}: {error.strerror}") from None
            self._changed(path, "vanished")
            return
        with os.fdopen(fd, "rb", buffering=0) as handle:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                self._changed(path, "replaced")
                return
            info = self._info(member, before, tarfile.REGTYPE)
            info.size = before.st_size
            content = _ExactReader(handle, before.st_size, f"{self._label}: cannot read {path}")
            self._tar.addfile(info, content)
            grew = bool(content.read_past_end(1))
            modified = os.fstat(fd).st_mtime_ns != before.st_mtime_ns
        self._counts.files += 1
        self._counts.bytes += info.size
        if content.shrank or grew or modified:
            self._changed(path, "shrank" if content.shrank else "grew" if grew else "modified")

    def _info(self, member: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        info = tarfile.TarInfo(member)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = st.st_mtime_ns // NS
        if st.st_mtime_ns % NS:
            info.pax_headers = {"mtime": _format_ns(st.st_mtime_ns)}
        return info

    def _changed(self, path: str, change: str) -> None:
        logger.warning("file changed during backup path=%s change=%s", path, change)
        self._counts.changed_during_backup += 1


class _ExactReader:
    """Exactly ``size`` bytes of a file that may change while it is read: zero padding if it shrank."""

    def __init__(self, handle: BinaryIO, size: int, failure: str) -> None:
        self._handle, self._remaining, self._failure = handle, size, failure
        self.shrank = False

    def read(self, size: int = -1) -> bytes:
        wanted = self._remaining if size < 0 else min(size, self._remaining)
        parts, got = [], 0
        while got < wanted and not self.shrank:
            data = self.read_past_end(wanted - got)
            self.shrank = not data
            parts.append(data)
            got += len(data)
        parts.append(bytes(wanted - got))
        self._remaining -= wanted
        return b"".join(parts)

    def read_past_end(self, size: int) -> bytes:
        # Read errors surface inside tarfile.addfile; they are the source's fault, not the archive's.
        try:
            return self._handle.read(size)
        except OSError as error:
            raise SourceError(f"{self._failure}: {error.strerror}") from None


def tree_listing(path: Path) -> TreeListing:
    """Relative path -> (type, mode, mtime_ns, size, sha256 or link target), ``"."`` being ``path`` itself.

    Two trees with equal listings hold the same names, types, modes, mtimes, contents and link targets.
    """
    listing: TreeListing = {}
    pending = [(".", str(path))]
    while pending:
        relative, full = pending.pop()
        st = os.lstat(full)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            listing[relative] = ("dir", mode, st.st_mtime_ns, 0, "")
            with os.scandir(full) as entries:
                pending.extend(
                    (entry.name if relative == "." else f"{relative}/{entry.name}", entry.path)
                    for entry in entries
                )
        elif stat.S_ISLNK(st.st_mode):
            listing[relative] = ("symlink", mode, st.st_mtime_ns, 0, os.readlink(full))
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256()
            with open(full, "rb") as handle:
                while chunk := handle.read(READ_SIZE):
                    digest.update(chunk)
            listing[relative] = ("file", mode, st.st_mtime_ns, st.st_size, digest.hexdigest())
        else:
            listing[relative] = ("other", mode, st.st_mtime_ns, 0, "")
    return listing
