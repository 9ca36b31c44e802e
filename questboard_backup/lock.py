"""One backup at a time per BACKUP_DIR: an flock-held lock file naming its holder; and per shared
storage (an S3 bucket and host name, which the CLI and the serverless workflow may both write to): a
lock object there, ``SHARED_LOCK_KEY``.

The kernel releases an flock when its process dies, so a lock left by a killed run is stale by
construction and simply taken over (and said so in the log). A lock object outlives a killed run: it
expires once its holder stops renewing it, and a CLI run may take over at once a lock left by an
earlier run of its own BACKUP_DIR, which the flock it holds proves dead.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from questboard_backup.errors import BackupError, LockedError, NotFoundError, StorageError
from questboard_backup.manifest import format_time
from questboard_backup.storage.base import ObjectVersion, Storage
from questboard_backup.storage.local import make_private_dirs, open_private

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
            make_private_dirs(self.path.parent)
            fd = open_private(self.path, os.O_RDWR)
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

    Created create-only; the body names the holder, a token and a lifetime. Every change after that is
    conditional on the version read (S3 ETags): of runs racing to take over one expired lock exactly
    one wins, and a release or renewal by a run that lost the lock cannot touch its successor's.
    Expiry is judged by the storage's clock (the object's LastModified against the time S3 answered),
    never by the caller's; a holder renews (rewrites) the lock while it works, so only a lock whose
    holder stopped renewing expires.
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

    def _body(self, holder: str, token: str, renewals: int = 0) -> bytes:
        fields: dict[str, object] = {
            "holder": holder,
            "token": token,
            "lifetime_seconds": self._lifetime,
            "renewals": renewals,  # also makes every write's ETag differ
            "written_at": format_time(datetime.now(UTC)),  # for people reading it; expiry ignores it
        }
        if self._instance is not None:
            fields["instance"] = self._instance
        return json.dumps(fields).encode()

    def _current(self) -> tuple[dict[str, object], ObjectVersion] | None:
        try:
            data, version = self._storage.read_versioned(self._key)
        except NotFoundError:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        return (value if isinstance(value, dict) else {}), version

    def _expired(self, fields: dict[str, object], version: ObjectVersion) -> bool:
        try:
            lifetime = float(str(fields.get("lifetime_seconds", self._lifetime)))
        except ValueError:
            lifetime = float(self._lifetime)
        return version.age_seconds >= lifetime

    def acquire(self, holder: str) -> str:
        """Take the lock for ``holder``; returns the token that releases it, or raises LockedError."""
        token = secrets.token_hex(16)
        body = self._body(holder, token)
        if self._storage.create_exclusive(self._key, body):
            return token
        current = self._current()
        if current is None and self._storage.create_exclusive(self._key, body):  # released meanwhile
            return token
        current = current or self._current()
        if current is not None:
            fields, version = current
            left_here = self._instance is not None and fields.get("instance") == self._instance
            if left_here or self._expired(fields, version):
                # Conditional on the version judged: of racing takers, one replaces it, the rest fail.
                if self._storage.replace_if(self._key, body, version.etag):
                    why = "a lock left by an interrupted run here" if left_here else "an expired lock"
                    logger.warning(
                        "took over %s held by %s, last written %.0f s ago",
                        why,
                        fields.get("holder", "?"),
                        version.age_seconds,
                    )
                    return token
                current = self._current()
        holder_text = str(current[0].get("holder", "unknown holder")) if current else "unknown holder"
        raise LockedError(
            f"locked: another backup is running ({holder_text}); lock {self._storage.uri(self._key)}"
        )

    def renew(self, token: str) -> None:
        """Rewrite the lock held by ``token``, so that its age starts again; LockedError if it is not
        held by ``token`` any more (it expired and was taken over, or was released)."""
        for _attempt in range(3):  # a version changed by this holder itself is tried again
            current = self._current()
            if current is None or current[0].get("token") != token:
                break
            fields, version = current
            count = str(fields.get("renewals", 0))
            renewals = int(count) + 1 if count.isdigit() else 1
            body = self._body(str(fields.get("holder", "?")), token, renewals)
            if self._storage.replace_if(self._key, body, version.etag):
                return
        raise LockedError(f"lost the lock {self._storage.uri(self._key)}: it expired and another run took it")

    def release(self, token: str) -> bool:
        """Release the lock if ``token`` still holds it; True if released."""
        current = self._current()
        if current is None or current[0].get("token") != token:
            return False
        return self._storage.delete_if(self._key, current[1].etag)

    def keep(self, token: str, interval_seconds: float | None = None) -> LockRenewal:
        """Renew the lock on a thread of its own while a long run holds it (a context manager)."""
        interval = (
            interval_seconds
            if interval_seconds is not None
            else max(1.0, self._lifetime / RENEWALS_PER_LIFETIME)
        )
        return LockRenewal(self, token, interval)


#: How often a holder renews within one lifetime: a few missed renewals (S3 briefly unreachable) are
#: survived, and a dead holder's lock still expires after one lifetime.
RENEWALS_PER_LIFETIME = 6


class LockRenewal:
    """Renews a held StorageLock every ``interval_seconds`` until the block ends. A renewal that finds
    the lock lost stops renewing; ``check()`` then raises LockedError, and a run calls it before each
    step that must not happen without the lock (sealing, promoting, sweeping)."""

    def __init__(self, lock: StorageLock, token: str, interval_seconds: float) -> None:
        self._lock, self._token, self._interval = lock, token, interval_seconds
        self._stop = threading.Event()
        self._renewing = threading.Lock()  # the thread's renewals and check()'s, one at a time
        self._lost: str | None = None
        self._thread = threading.Thread(target=self._run, name="qb-lock-renewal", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._renewing:
                    self._lock.renew(self._token)
            except LockedError as error:
                self._lost = str(error)
                logger.error("lock lost while running: %s", error)
                return
            except BackupError as error:  # S3 unreachable for now: the next renewal may get through
                logger.warning("lock renewal failed, retrying later: %s", error)

    def check(self) -> None:
        """LockedError if the lock was found lost; otherwise renew now, so a step starts with a fresh
        lock and a lost one is found before the step rather than after."""
        if self._lost is None:
            try:
                with self._renewing:
                    self._lock.renew(self._token)
            except LockedError as error:
                self._lost = str(error)
        if self._lost is not None:
            raise LockedError(self._lost)

    def __enter__(self) -> LockRenewal:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
