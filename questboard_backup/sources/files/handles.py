"""Directory handles for restores run as root: every step below an opened folder goes through its
descriptor (``dir_fd``, ``O_NOFOLLOW``), so a path swapped for a symlink mid-restore is never followed.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat
from collections.abc import Callable
from typing import Any

#: Opens a folder for reading its entries and acting inside it; never a symlink, never inherited.
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1


def open_folder(dir_fd: int, name: str) -> int:
    return os.open(name, FOLDER_FLAGS, dir_fd=dir_fd)


def open_path(path: str, made: list[str] | None = None) -> int:
    """Open the folder ``path`` as the operator named it (links above it followed, as configured).

    With ``made``, missing folders are created below the nearest existing one, through handles, and
    appended to ``made`` outermost first; without it a missing folder raises FileNotFoundError.
    """
    try:
        return os.open(path, FOLDER_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        if made is None or os.path.dirname(path) == path:
            raise
    parent = open_path(os.path.dirname(path), made)
    try:
        os.mkdir(os.path.basename(path), dir_fd=parent)
        made.append(path)
        return open_folder(parent, os.path.basename(path))
    finally:
        os.close(parent)


def entry(dir_fd: int, name: str) -> os.stat_result | None:
    """The entry ``name`` itself (a link is not followed), or None when there is none."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def same(one: os.stat_result, other: os.stat_result) -> bool:
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def is_private_folder(st: os.stat_result) -> bool:
    """A folder only this process's user can enter: what a staging folder must still be when reused."""
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename without ever replacing what sits at ``dst`` (FileExistsError instead)."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), dst)
    # Kernels or file systems without RENAME_NOREPLACE: check, then rename (a narrow window remains).
    if entry(dst_fd, dst) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


@functools.cache
def _renameat2() -> Callable[..., Any] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def empty_folder(top: int) -> None:
    """Remove everything inside the open folder ``top`` (which stays), in memory bounded by depth."""
    # (handle, its parent's handle, its name there); restored modes may deny the owner write or search.
    pending: list[tuple[int, int | None, str]] = [(top, None, "")]
    try:
        while pending:
            fd, parent, name = pending[-1]
            os.fchmod(fd, 0o700)
            folder = _unlink_all_but_one_folder(fd)
            if folder is not None:
                pending.append((open_folder(fd, folder), fd, folder))
                continue
            pending.pop()
            if parent is not None:
                os.close(fd)
                os.rmdir(name, dir_fd=parent)
    finally:
        for fd, parent, _ in pending:
            if parent is not None:
                os.close(fd)


def _unlink_all_but_one_folder(fd: int) -> str | None:
    with os.scandir(fd) as entries:
        for item in entries:
            if item.is_dir(follow_symlinks=False):
                return item.name
            os.unlink(item.name, dir_fd=fd)
    return None


def is_mount_point(parent_fd: int, name: str, path: str) -> bool:
    """True when ``name`` in ``parent_fd`` is a mounted folder: it cannot be renamed, only filled."""
    st = entry(parent_fd, name)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return False
    if st.st_dev != os.fstat(parent_fd).st_dev:
        return True
    # A bind mount of a folder of the same file system keeps its device number; the kernel's table knows.
    real = os.path.join(os.path.realpath(os.path.dirname(path)), name)
    return real in _mount_points()


def _mount_points() -> set[str]:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
            fields = [line.split(" ") for line in table]
    except OSError:
        return set()
    return {_unescape(parts[4]) for parts in fields if len(parts) > 4}


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as three octal digits after a backslash.
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field
