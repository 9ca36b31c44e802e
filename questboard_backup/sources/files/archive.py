"""Writing a files archive: roots walked without following links, each entry streamed into a PAX tar in
the order restore insists on (pre-order, names sorted), files changing meanwhile stored at their listed size.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
from typing import BinaryIO

from questboard_backup.errors import SourceError, SourceUnreachableError
from questboard_backup.sources.files.checking import NS, Counts

logger = logging.getLogger(__name__)


def _format_ns(ns: int) -> str:
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    return f"{sign}{ns // NS}.{ns % NS:09d}"


class Archiver:
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
