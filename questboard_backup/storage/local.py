"""Local-disk storage in the seed's layout: BACKUP_DIR/{daily,weekly,monthly,incremental,temp,logs}.

Objects are written to a hidden temporary file beside their key, fsynced, then renamed into place;
a backup set is written under ``temp/{id}/`` and renamed into its tier folder when complete. Everything
created here is its owner's alone (folders 0700, files 0600), whatever the umask.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from questboard_backup.address import STAGING, TIERS
from questboard_backup.errors import NotFoundError, StorageError
from questboard_backup.storage.base import ObjectVersion, Storage

INSTANCE_KEY = ".instance"

LAYOUT = (*TIERS, STAGING, "logs")
#: Modes of everything created under BACKUP_DIR (backups, logs, locks): the owner's alone.
DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 folders, whatever the umask (existing folders
    are left as they are: the operator's own choice)."""
    missing = []
    current = Path(path)
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode passes through the umask


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating a 0600 file, whatever the umask."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(action: str, path: Path, error: OSError) -> StorageError:
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        reason = "no space left on device"
    return StorageError(f"cannot {action} {path}: {reason}")


class _LocalWriter:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._tmp = path.with_name(f".{path.name}.partial")
        try:
            make_private_dirs(path.parent)
            fd = open_private(self._tmp, os.O_WRONLY | os.O_TRUNC)
            self._file: BinaryIO | None = os.fdopen(fd, "wb")
        except OSError as error:
            raise _storage_error("write", path, error) from None

    def write(self, data: bytes) -> int:
        assert self._file is not None, "write after close"
        try:
            return self._file.write(data)
        except OSError as error:
            raise _storage_error("write", self._path, error) from None

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._tmp, self._path)
            _fsync_dir(self._path.parent)
        except OSError as error:
            self.abort()
            raise _storage_error("write", self._path, error) from None

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


class LocalStorage(Storage):
    kind = "local"
    stage_in_temp = True  # a folder rename makes a whole set appear at once

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = str(self.root)

    def ensure_layout(self) -> None:
        """Create the seed's folders; an unwritable BACKUP_DIR fails here, before any work."""
        try:
            for name in LAYOUT:
                make_private_dirs(self.root / name)
            probe = self.root / STAGING / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise _storage_error("write to BACKUP_DIR", self.root, error) from None

    def clear_staging(self) -> list[str]:
        """Remove everything under temp/: only a lock holder may call this, so it is all left by dead runs
        (including the hidden .partial files that listings skip). Returns what was removed."""
        removed = []
        temp = self.root / STAGING
        for entry in sorted(temp.iterdir()) if temp.is_dir() else []:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
        return removed

    def instance_id(self) -> str:
        """A random name for this BACKUP_DIR, made on first use: whose the shared locks it takes are."""
        self.create_exclusive(INSTANCE_KEY, secrets.token_hex(16).encode())  # kept if it exists
        instance = self.read_bytes(INSTANCE_KEY).decode("ascii", "replace").strip()
        if not instance:
            raise StorageError(f"{self._path(INSTANCE_KEY)} is empty: remove it, a new one is made")
        return instance

    def _path(self, key: str) -> Path:
        parts = [part for part in key.split("/") if part]
        if any(part in (".", "..") for part in parts) or not parts:
            raise StorageError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def open_write(self, key: str, tier: str | None = None) -> _LocalWriter:
        return _LocalWriter(self._path(key))

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None
        except OSError as error:
            raise _storage_error("read", path, error) from None

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            for filename in filenames:
                if filename.startswith(".") and filename.endswith(".partial"):
                    continue
                yield Path(dirpath, filename).relative_to(self.root).as_posix()

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _write_hidden(self, path: Path, data: bytes) -> Path:
        """``data`` in a fsynced hidden file beside ``path`` (listings skip it), to be linked or renamed."""
        make_private_dirs(path.parent)
        hidden = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        fd = open_private(hidden, os.O_WRONLY | os.O_EXCL)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        return hidden

    def create_exclusive(self, key: str, data: bytes, tier: str | None = None) -> bool:
        """A link of a complete hidden file: the key appears whole, or not at all if it exists."""
        path = self._path(key)
        try:
            hidden = self._write_hidden(path, data)
            try:
                os.link(hidden, path)
            except FileExistsError:
                return False
            finally:
                hidden.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as error:
            raise _storage_error("create", path, error) from None
        return True

    @staticmethod
    def _version(fd: int, data: bytes) -> ObjectVersion:
        info = os.fstat(fd)
        digest = hashlib.sha256(data).hexdigest()[:16]
        return ObjectVersion(
            etag=f"{info.st_ino:x}-{info.st_mtime_ns:x}-{digest}",
            last_modified=datetime.fromtimestamp(info.st_mtime, UTC),
            answered_at=datetime.now(UTC),  # this machine's clock is the storage's clock
        )

    def read_versioned(self, key: str) -> tuple[bytes, ObjectVersion]:
        path = self._path(key)
        try:
            with open(path, "rb") as file:
                data = file.read()
                return data, self._version(file.fileno(), data)
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None
        except OSError as error:
            raise _storage_error("read", path, error) from None

    def _is_version(self, path: Path, etag: str) -> bool:
        try:
            with open(path, "rb") as file:
                return self._version(file.fileno(), file.read()).etag == etag
        except FileNotFoundError:
            return False

    def _guarded(self, path: Path) -> int:
        """An flock on the key's folder: conditional replaces and deletes there happen one at a time."""
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def replace_if(self, key: str, data: bytes, etag: str) -> bool:
        path = self._path(key)
        try:
            hidden = self._write_hidden(path, data)
            guard = self._guarded(path)
            try:
                if not self._is_version(path, etag):
                    return False
                os.replace(hidden, path)
                _fsync_dir(path.parent)
                return True
            finally:
                os.close(guard)  # releases the flock
                hidden.unlink(missing_ok=True)
        except OSError as error:
            raise _storage_error("replace", path, error) from None

    def delete_if(self, key: str, etag: str) -> bool:
        path = self._path(key)
        try:
            if not path.parent.is_dir():
                return False
            guard = self._guarded(path)
            try:
                if not self._is_version(path, etag):
                    return False
                path.unlink()
                return True
            finally:
                os.close(guard)
        except OSError as error:
            raise _storage_error("delete", path, error) from None

    def promote(self, source_prefix: str, target_prefix: str, tier: str, last_name: str) -> None:
        """One rename of the folder: everything, the last object included, appears at once."""
        if source_prefix.strip("/") == target_prefix.strip("/"):
            return
        source, target = self._path(source_prefix), self._path(target_prefix)
        try:
            make_private_dirs(target.parent)
            if target.exists():
                raise StorageError(f"cannot promote: {target} already exists")
            os.rename(source, target)
            _fsync_dir(target.parent)
        except OSError as error:
            raise _storage_error("promote", target, error) from None

    def uri(self, key: str) -> str:
        return str(self._path(key))
