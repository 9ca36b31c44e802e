"""One backup at a time per BACKUP_DIR: an flock-held lock file naming its holder; and per shared
storage (an S3 bucket and host name, which the CLI and the serverless workflow may both write to): a
lock object there, ``SHARED_LOCK_KEY``.

The kernel releases an flock when its process dies, so a lock left by a killed run is stale by
construction and simply taken over (and said so in the log). A lock object outlives a killed run: it
expires, and a CLI run may take over at once a lock left by an earlier run of its own BACKUP_DIR,
which the flock it holds proves dead.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from questboard_backup.errors import LockedError, NotFoundError, StorageError
from questboard_backup.manifest import format_time
from questboard_backup.storage.base import Storage

logger = logging.getLogger(__name__)
LOCK_NAME = "backup.lock"
#: The lock object in shared storage, relative to its host prefix: the Lambdas and the CLI take the same.
SHARED_LOCK_KEY = "locks/backup.json"


class BackupLock:
    def __init__(self, backup_dir: Path, holder: str) -> None:
        self.path = Path(backup_dir) / LOCK_NAME
        self._holder = holder
        self._fd: int | None = None

    def _describe_holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "unknown holder"
        return f"{info.get('holder', '?')}, pid {info.get('pid', '?')}, since {info.get('since', '?')}"

    def __enter__(self) -> BackupLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StorageError(f"cannot open lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"locked: another backup is running ({self._describe_holder()}); lock file {self.path}"
            ) from None
        previous = os.read(fd, 4096)
        if previous.strip():
            logger.warning("took over a stale lock left by a dead run: %s", previous.decode(errors="replace"))
        record = {
            "holder": self._holder,
            "pid": os.getpid(),
            "since": format_time(datetime.now(UTC)),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            # Empty the file before unlocking so the next holder sees a clean release, not a stale lock.
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def is_held_elsewhere(self) -> str | None:
        """For `status`: the holder's description if another process holds the lock, else None."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._describe_holder()
        finally:
            os.close(fd)
        return None


class StorageLock:
    """A lock held as an object in shared storage (S3), for runs on machines that share nothing else.

    Created with create-if-absent; the body names the holder, a token and an expiry, so a lock left by
    a run that died (a timed-out workflow) is taken over once expired. Released only by its token.
    """

    def __init__(
        self, storage: Storage, key: str, lifetime_seconds: int, instance: str | None = None
    ) -> None:
        """``instance``: who takes the lock, when the caller knows that no earlier holder of the same
        instance is alive (the CLI, holding its BACKUP_DIR's flock): such a lock is taken over at once."""
        self._storage = storage
        self._key = key
        self._lifetime = lifetime_seconds
        self._instance = instance

    def acquire(self, holder: str, now: float | None = None) -> str:
        """Take the lock for ``holder``; returns the token that releases it, or raises LockedError."""
        moment = time.time() if now is None else now
        token = secrets.token_hex(16)
        fields: dict[str, object] = {"holder": holder, "token": token, "expires_at": moment + self._lifetime}
        if self._instance is not None:
            fields["instance"] = self._instance
        body = json.dumps(fields).encode()
        if self._storage.create_exclusive(self._key, body):
            return token
        current = self._current()
        if current is not None:
            left_here = self._instance is not None and current.get("instance") == self._instance
            expired = float(str(current.get("expires_at", 0))) < moment
            if left_here or expired:
                why = "a lock left by an interrupted run here" if left_here else "an expired lock"
                logger.warning("took over %s held by %s", why, current.get("holder", "?"))
                self._storage.delete(self._key)
                if self._storage.create_exclusive(self._key, body):
                    return token
                current = self._current()
        holder_text = current.get("holder", "unknown holder") if current else "unknown holder"
        raise LockedError(
            f"locked: another backup is running ({holder_text}); lock {self._storage.uri(self._key)}"
        )

    def _current(self) -> dict[str, object] | None:
        try:
            value = json.loads(self._storage.read_bytes(self._key))
        except (NotFoundError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def release(self, token: str) -> bool:
        """Release the lock if ``token`` still holds it; True if released."""
        current = self._current()
        if current is None or current.get("token") != token:
            return False
        self._storage.delete(self._key)
        return True
