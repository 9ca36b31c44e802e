"""The storage contract every backend implements (local disk, S3).

Keys are relative, '/'-separated paths such as ``daily/questboard_full_20240101_020000/redis.zst.enc``.
A backend maps them to its own namespace (a folder, a bucket prefix). Callers may rely on:

- ``open_write`` returns a writer whose object becomes readable only after ``close()`` returned;
  ``abort()`` discards it. The backend never buffers a whole object in memory.
- ``open_read`` raises NotFoundError for a missing key and returns a stream the caller closes.
- ``list_keys`` yields every key under a prefix (recursively), in no particular order.
- A storage that stages apart (``stage_in_temp``) has objects written under one prefix and made
  visible under another by ``promote``; which prefixes those are is the set address's business
  (questboard_backup.address), not the storage's.
- The conditional primitives (``create_exclusive``, ``read_versioned``, ``replace_if``, ``delete_if``)
  are atomic against each other, also between machines sharing the storage: of racing callers
  conditioned on one version, exactly one succeeds. Versions and ages come from the storage's own
  clock (S3's), never the caller's: locks and create-only manifests rest on them.
- Permanent failures raise StorageError; retryable ones TransientStorageError.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol


class ObjectWriter(Protocol):
    def write(self, data: bytes) -> int: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class ObjectVersion:
    """One stored version of an object, as the storage tells it, by the storage's own clock."""

    #: Changes whenever the object is written again: the condition of ``replace_if`` / ``delete_if``.
    etag: str
    #: When this version was written, and when the storage answered; both by the storage's clock.
    last_modified: datetime
    answered_at: datetime

    @property
    def age_seconds(self) -> float:
        return (self.answered_at - self.last_modified).total_seconds()


class Storage(ABC):
    #: Human-readable location, for messages and listings (a folder or an s3:// URI). No secrets.
    description: str
    #: Short name of the backend kind ("local", "s3").
    kind: str
    #: Whether sets are written apart (under ``temp/``) and promoted, or in place.
    stage_in_temp: bool = False
    #: The host name every key here sits under ('' for a storage of one host's own: local disk). A
    #: manifest found here must name it.
    hostname: str = ""

    @abstractmethod
    def open_write(self, key: str, tier: str | None = None) -> ObjectWriter:
        """Start writing ``key``; ``tier`` labels the object (S3 tags it for lifecycle expiry)."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """Open ``key`` for streaming reads."""

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``."""

    def list_unfinished(self, prefix: str) -> Iterator[str]:
        """The keys under ``prefix`` of writes begun and never completed that the storage keeps (S3's
        multipart uploads; local writes leave no such trace outside temp/)."""
        return iter(())

    @abstractmethod
    def size(self, key: str) -> int:
        """Stored size of ``key`` in bytes (NotFoundError when missing)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (missing is fine)."""

    @abstractmethod
    def promote(self, source_prefix: str, target_prefix: str, tier: str, last_name: str) -> None:
        """Make everything under ``source_prefix`` visible under ``target_prefix``, labelled ``tier``,
        the object named ``last_name`` last; nothing to do when the two prefixes are the same."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where ``key`` is, as an operator would type it (a path or an s3:// URI)."""

    def create_exclusive(self, key: str, data: bytes, tier: str | None = None) -> bool:
        """Create ``key`` holding ``data`` (labelled ``tier``) only if it does not exist, whole or not
        at all; True if this call created it, False if the key exists."""
        raise NotImplementedError(f"{self.kind} storage cannot create objects exclusively")

    def read_versioned(self, key: str) -> tuple[bytes, ObjectVersion]:
        """The object's bytes and the version they are (read together, so they cannot disagree);
        NotFoundError when missing."""
        raise NotImplementedError(f"{self.kind} storage cannot read object versions")

    def replace_if(self, key: str, data: bytes, etag: str) -> bool:
        """Replace ``key`` with ``data`` only if its current version is ``etag``; True if replaced,
        False if it changed or disappeared meanwhile."""
        raise NotImplementedError(f"{self.kind} storage cannot replace objects conditionally")

    def delete_if(self, key: str, etag: str) -> bool:
        """Delete ``key`` only if its current version is ``etag``; True if deleted."""
        raise NotImplementedError(f"{self.kind} storage cannot delete objects conditionally")

    def delete(self, key: str) -> None:
        """Delete one object (missing is fine)."""
        self.delete_prefix(key)

    def write_bytes(self, key: str, data: bytes, tier: str | None = None) -> None:
        writer = self.open_write(key, tier)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.close()

    def read_bytes(self, key: str) -> bytes:
        stream = self.open_read(key)
        try:
            return stream.read()
        finally:
            stream.close()

    def exists(self, key: str) -> bool:
        from questboard_backup.errors import NotFoundError

        try:
            self.size(key)
        except NotFoundError:
            return False
        return True
