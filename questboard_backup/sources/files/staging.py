"""Staging a files restore: each root extracted, through directory handles, into a private (0700) staging
folder ``.{name}.restore-{ts}`` beside its target, or inside the target when that is a mount point.

Nothing of the targets is touched; a failure, or a staging folder found replaced, removes what was staged.
Only the engine's own staging folder (``open_own_staging``) is ever emptied; anything else is left.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from questboard_backup.errors import IntegrityError, SourceError
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.sources.base import StreamOpener
from questboard_backup.sources.files import handles
from questboard_backup.sources.files.checking import mtime_ns, read_checked

logger = logging.getLogger(__name__)

#: Inside a staging folder: the staged root, the swap's unsettled mark, the folders made above the target,
#: and a mount point's own owner, mode and mtime before staging began (its staging folder changes them).
TREE, MARKER, PARENTS, ROOT = "tree", "swapping", "parents", "root"
#: What a staging folder may hold besides its tree (a folder, file or link, as the root was): the records,
#: and the part-written files ``write_file`` and ``_write_member`` leave while they write.
_RECORDS = {name for record in (MARKER, PARENTS, ROOT) for name in (record, f"{record}.part")}
_PART_WRITTEN = re.compile(r"\.qb-[0-9a-f]{16}\.part")


@dataclass(frozen=True)
class Place:
    """One root's restore: its target and every name the restore's steps use, from the target and the
    timestamp alone (a later process finds them again)."""

    label: str
    target: str
    timestamp: str

    @property
    def parent(self) -> str:
        return os.path.dirname(self.target)

    @property
    def base(self) -> str:
        return os.path.basename(self.target)

    @property
    def staging_name(self) -> str:
        return f".{self.base}.restore-{self.timestamp}"

    def previous_name(self, mount: bool) -> str:
        return f".pre_restore_{self.timestamp}" if mount else f"{self.base}.pre_restore_{self.timestamp}"

    def home_path(self, mount: bool) -> str:
        """The folder holding the staging folder and the previous copy."""
        return self.target if mount else self.parent

    def staging_path(self, mount: bool) -> str:
        return os.path.join(self.home_path(mount), self.staging_name)

    def previous_path(self, mount: bool) -> str:
        return os.path.join(self.home_path(mount), self.previous_name(mount))


@dataclass
class Home:
    """An open handle on the folder that holds a place's staging folder."""

    fd: int
    mount: bool
    made: list[str] = field(default_factory=list)

    def close(self) -> None:
        os.close(self.fd)


@contextmanager
def home_of(place: Place) -> Iterator[Home | None]:
    """``open_home(place)`` for a block, closed after it."""
    home = open_home(place)
    try:
        yield home
    finally:
        if home is not None:
            home.close()


def open_home(place: Place, create: bool = False) -> Home | None:
    """The place's home, opened once; None when the target's parent does not exist (and not ``create``)."""
    made: list[str] = []
    try:
        parent = handles.open_path(place.parent, made if create else None)
    except FileNotFoundError:
        if create:
            raise
        return None
    if not handles.is_mount_point(parent, place.base, place.target):
        return Home(parent, False, made)
    try:
        return Home(handles.open_folder(parent, place.base), True, made)
    finally:
        os.close(parent)


@dataclass(frozen=True)
class _Metadata:
    mode: int
    uid: int
    gid: int
    mtime_ns: int


def stage(
    label: str, open_stream: StreamOpener, facts: Mapping[str, Any], places: Sequence[Place]
) -> dict[str, Any]:
    """Check the whole archive (pass 1, writing nothing), then extract it into staging (pass 2)."""
    read_checked(label, open_stream, facts, len(places), None)
    trees = StagedTrees(label, places)
    try:
        trees.create()
        counts = read_checked(label, open_stream, facts, len(places), trees)
        trees.finish()
    except OSError as error:
        trees.discard()
        raise SourceError(f"{label}: cannot restore {trees.where}: {error.strerror}") from None
    except BaseException:
        trees.discard()
        raise
    finally:
        trees.close()
    logger.info(
        "files staged component=%s files=%d dirs=%d symlinks=%d",
        label,
        counts.files,
        counts.dirs,
        counts.symlinks,
    )
    return {
        "roots": [place.target for place in places],
        "files": counts.files,
        "dirs": counts.dirs,
        "symlinks": counts.symlinks,
    }


class StagedTrees:
    """Extracts each root into ``{staging}/tree``; folders stay open while their entries arrive, each
    written through its parent's handle, and get their archived owner, mode and mtime once complete."""

    def __init__(self, label: str, places: Sequence[Place]) -> None:
        self._label, self._places = label, places
        self._homes: list[Home] = []
        self._stagings: list[int] = []
        self._trees: list[os.stat_result | None] = [None] * len(places)
        # The folders above the entry being extracted: (root index, parts, handle, archived metadata).
        self._open: list[tuple[int, tuple[str, ...], int, _Metadata]] = []
        self._as_root = os.geteuid() == 0
        #: The path being worked on, for the one-line error.
        self.where = ""

    def create(self) -> None:
        for place in self._places:
            self.where = place.target
            home = open_home(place, create=True)
            assert home is not None
            self._homes.append(home)
            self._check_free(place, home)
        # Only once every name was seen free does anything get created, so a refusal leaves nothing.
        for place, home in zip(self._places, self._homes, strict=True):
            self.where = place.staging_path(home.mount)
            before = os.fstat(home.fd)
            os.mkdir(place.staging_name, 0o700, dir_fd=home.fd)
            fd = handles.open_folder(home.fd, place.staging_name)
            self._stagings.append(fd)
            os.fchmod(fd, 0o700)
            if home.mount:
                write_file(fd, ROOT, json.dumps(metadata(before)).encode())
            if home.made:
                write_file(fd, PARENTS, json.dumps(home.made).encode())

    def _check_free(self, place: Place, home: Home) -> None:
        staging, previous = place.staging_name, place.previous_name(home.mount)
        if handles.entry(home.fd, staging) is not None:
            raise SourceError(
                f"{self._label}: staging path {place.staging_path(home.mount)} already exists; remove it first"
            )
        if handles.entry(home.fd, previous) is not None and (
            home.mount or handles.entry(home.fd, place.base)
        ):
            raise SourceError(
                f"{self._label}: {place.previous_path(home.mount)} already exists; remove it first"
            )

    def extract(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, index: int, parts: tuple[str, ...]
    ) -> None:
        place = self._places[index]
        self.where = os.path.join(place.target, *parts)
        # The checker saw the parent archived as a folder before this entry: it is open on the stack.
        while self._open and (self._open[-1][0], self._open[-1][1]) != (index, parts[:-1]):
            self._close_folder()
        if parts and not self._open:
            raise IntegrityError(f"{self._label}: archive entry {member.name!r} refused: no open parent")
        folder = self._open[-1][2] if parts else self._stagings[index]
        name = parts[-1] if parts else TREE
        if not parts and self._homes[index].mount and not member.isdir():
            raise SourceError(
                f"{self._label}: {place.target} is a mount point; the backup holds no folder there"
            )
        metadata = _Metadata(member.mode & 0o7777, member.uid, member.gid, mtime_ns(self._label, member))
        if member.isdir():
            os.mkdir(name, 0o700, dir_fd=folder)
            fd = handles.open_folder(folder, name)
            self._open.append((index, parts, fd, metadata))
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=folder)
            if self._as_root:
                os.chown(name, metadata.uid, metadata.gid, dir_fd=folder, follow_symlinks=False)
            os.utime(name, ns=(metadata.mtime_ns,) * 2, dir_fd=folder, follow_symlinks=False)
        else:
            source = tar.extractfile(member)
            if source is None:
                raise IntegrityError(f"{self._label}: archive entry {member.name!r} has no content")
            self._write_member(folder, name, member.name, metadata, source)
        if not parts:
            self._trees[index] = handles.entry(folder, name)

    def _write_member(
        self, folder: int, name: str, member: str, metadata: _Metadata, source: IO[bytes]
    ) -> None:
        # A part-written file never carries its final name.
        temporary = f".qb-{secrets.token_hex(8)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600, dir_fd=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                try:
                    shutil.copyfileobj(source, handle, READ_SIZE)
                except tarfile.TarError as error:
                    raise IntegrityError(
                        f"{self._label}: archive entry {member!r} unreadable ({error})"
                    ) from None
                handle.flush()
                self._apply(fd, metadata)
                os.fsync(fd)
            handles.rename_noreplace(folder, temporary, folder, name)
        except BaseException:
            if handles.entry(folder, temporary) is not None:
                os.unlink(temporary, dir_fd=folder)
            raise

    def _apply(self, fd: int, metadata: _Metadata) -> None:
        # chown before chmod: changing the owner clears set-uid and set-gid bits.
        if self._as_root:
            os.fchown(fd, metadata.uid, metadata.gid)
        os.fchmod(fd, metadata.mode)
        os.utime(fd, ns=(metadata.mtime_ns, metadata.mtime_ns))

    def _close_folder(self) -> None:
        # Its entries are all written (pre-order): only now can its mtime and a restrictive mode be set.
        _, _, fd, metadata = self._open.pop()
        try:
            self._apply(fd, metadata)
            os.fsync(fd)
        finally:
            os.close(fd)

    def finish(self) -> None:
        while self._open:
            self._close_folder()
        for place, home, staging, tree in zip(
            self._places, self._homes, self._stagings, self._trees, strict=True
        ):
            self.where = place.staging_path(home.mount)
            found, staged = handles.entry(home.fd, place.staging_name), handles.entry(staging, TREE)
            if found is None or not handles.same(found, os.fstat(staging)) or staged is None or tree is None:
                raise SourceError(
                    f"{self._label}: staging folder {self.where} was replaced during the restore; "
                    "nothing was swapped in"
                )
            if not handles.same(staged, tree):
                raise SourceError(
                    f"{self._label}: staged copy {self.where}/{TREE} was replaced during the restore"
                )
            os.fsync(staging)
            os.fsync(home.fd)

    def discard(self) -> None:
        """Remove what this stage wrote: through the staging handles (wherever the folders were moved),
        then whatever now sits under the staging names, then the folders made above the targets."""
        while self._open:
            os.close(self._open.pop()[2])
        for place, home, staging in zip(self._places, self._homes, self._stagings, strict=False):
            try:
                handles.empty_folder(staging)
                remove_staging(home.fd, place.staging_name, place.staging_path(home.mount))
            except OSError:
                logger.exception("staging not removed path=%s", place.staging_path(home.mount))
        remove_made(folder for home in self._homes for folder in home.made)

    def close(self) -> None:
        for fd in self._stagings:
            os.close(fd)
        for home in self._homes:
            home.close()
        self._stagings, self._homes = [], []


def open_own_staging(home_fd: int, name: str) -> int | None:
    """The staging folder ``name`` in ``home_fd``, opened, when it is the engine's own: a folder of this
    user, mode 0700, holding nothing but what a stage writes (``_LAYOUT``). None for anything else."""
    try:
        fd = handles.open_folder(home_fd, name)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES):
            return None
        raise
    try:
        st, found = os.fstat(fd), handles.entry(home_fd, name)
        if (
            found is not None
            and handles.same(found, st)
            and stat.S_IMODE(st.st_mode) == 0o700
            and st.st_uid == os.geteuid()
            and _has_staging_layout(fd)
        ):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _has_staging_layout(fd: int) -> bool:
    with os.scandir(fd) as entries:
        for item in entries:
            mode = item.stat(follow_symlinks=False).st_mode
            if item.name == TREE:
                if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                    return False
            elif not (stat.S_ISREG(mode) and (item.name in _RECORDS or _PART_WRITTEN.fullmatch(item.name))):
                return False
    return True


def remove_staging(home_fd: int, name: str, path: str) -> bool:
    """Remove the staging folder ``name`` and all in it, through handles; a link or file under the name is
    unlinked, never followed. A folder that is not the engine's own (``open_own_staging``) is never
    entered: it is left, with a warning, and False returned."""
    found = handles.entry(home_fd, name)
    if found is None:
        return True
    if not stat.S_ISDIR(found.st_mode):
        os.unlink(name, dir_fd=home_fd)
        return True
    fd = open_own_staging(home_fd, name)
    if fd is None:
        logger.warning("folder under a staging name is not ours; left path=%s", path)
        return False
    try:
        handles.empty_folder(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=home_fd)
    return True


def metadata(st: os.stat_result) -> list[int]:
    """A folder's own mode, owner, group and mtime (ns), as a mark records them."""
    return [st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns]


def apply_metadata(fd: int, recorded: Sequence[int]) -> None:
    mode, uid, gid, mtime_ns = recorded
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))


def remove_made(made: Iterable[str]) -> None:
    """Remove the folders stages created above their targets (several roots may share some), deepest
    first, those still empty: one holding a restored target stays."""
    for folder in sorted(set(made), key=lambda path: path.count("/"), reverse=True):
        try:
            os.rmdir(folder)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.ENOENT):
                logger.warning("created folder not removed path=%s error=%s", folder, error.strerror)


def write_file(dir_fd: int, name: str, content: bytes) -> None:
    """Write ``name`` whole or not at all: a reader never sees it half written."""
    temporary = f"{name}.part"
    # A killed earlier write may have left its part behind; the folder is private, so it is ours.
    if handles.entry(dir_fd, temporary) is not None:
        os.unlink(temporary, dir_fd=dir_fd)
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
    )
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(fd)
    os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def read_file(dir_fd: int, name: str) -> Any:
    """The JSON in ``name``, or None when there is none."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return json.loads(handle.read())
