"""The catalog: which backups exist (a set with a manifest), where, and how an operator names one.

A reference is a backup id, ``latest``, a local path (a set folder, its manifest, or the seed's
``.../daily/questboard_full_....tar.gz`` spelling), or ``s3://bucket/host/tier/id[/...]``.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from questboard_backup.errors import BackupError, NotFoundError
from questboard_backup.manifest import BACKUP_ID, MANIFEST_NAME, TIERS, Manifest, parse_manifest
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage

logger = logging.getLogger(__name__)

#: Builds an S3 storage for (bucket, hostname prefix); supplied by the edge so the catalog stays boto3-free.
S3Factory = Callable[[str, str], Storage]
_SUFFIXES = (".tar.gz", ".tgz", ".tar", "/" + MANIFEST_NAME)


@dataclass(frozen=True)
class CatalogEntry:
    storage: Storage
    prefix: str
    manifest: Manifest | None
    problem: str | None = None

    @property
    def backup_id(self) -> str:
        return self.prefix.rsplit("/", 1)[-1]

    @property
    def location(self) -> str:
        return self.storage.uri(self.prefix)

    def summary(self) -> dict[str, object]:
        body: dict[str, object] = {
            "id": self.backup_id,
            "location": self.location,
            "storage": self.storage.kind,
        }
        if self.manifest is not None:
            body.update(
                type=self.manifest.type,
                tier=self.manifest.tier,
                finished_at=self.manifest.finished_at,
                stored_bytes=self.manifest.stored_bytes,
                components=[entry.name for entry in self.manifest.components],
            )
        if self.problem:
            body["problem"] = self.problem
        return body


def _split_set_key(key: str) -> tuple[str, str] | None:
    parts = key.split("/")
    if len(parts) == 3 and parts[0] in TIERS and parts[2] == MANIFEST_NAME and BACKUP_ID.match(parts[1]):
        return parts[0], parts[1]
    return None


def list_backups(storage: Storage) -> list[CatalogEntry]:
    """Every set with a manifest in ``storage``, newest first; unreadable manifests are listed with a problem."""
    entries = []
    for tier in TIERS:
        for key in storage.list_keys(tier):
            split = _split_set_key(key)
            if split is None:
                continue
            prefix = f"{split[0]}/{split[1]}"
            try:
                manifest, _body, _mac = parse_manifest(storage.read_bytes(key))
            except BackupError as error:
                entries.append(CatalogEntry(storage, prefix, None, str(error)))
                continue
            entries.append(CatalogEntry(storage, prefix, manifest))
    return newest_first(entries)


def newest_first(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """By the time in the backup id (full and incremental interleaved), newest first."""
    return sorted(
        entries, key=lambda entry: (entry.backup_id.rsplit("_", 2)[-2:], entry.backup_id), reverse=True
    )


def incomplete_sets(storage: Storage) -> Iterator[str]:
    """Prefixes holding objects or unfinished uploads but no manifest: leftovers of interrupted runs
    (never backups)."""
    for tier in (*TIERS, "temp"):
        seen: dict[str, bool] = {}
        for key in itertools.chain(storage.list_keys(tier), storage.list_unfinished(tier)):
            parts = key.split("/")
            if len(parts) < 3:
                continue
            prefix = f"{parts[0]}/{parts[1]}"
            seen[prefix] = seen.get(prefix, False) or parts[2] == MANIFEST_NAME
        yield from (prefix for prefix, complete in seen.items() if not complete or tier == "temp")


LATEST_POINTER = "latest.json"


def read_manifest(storage: Storage, prefix: str) -> Manifest:
    """The (unauthenticated) manifest of the set at ``prefix``, for listings and metrics."""
    manifest, _body, _mac = parse_manifest(storage.read_bytes(f"{prefix}/{MANIFEST_NAME}"))
    return manifest


def write_latest_pointer(storage: Storage, manifest: Manifest) -> None:
    """``latest.json`` names the newest backup (a convenience for operators: `latest` resolves by listing)."""
    body = {
        "backup_id": manifest.backup_id,
        "tier": manifest.tier,
        "prefix": f"{manifest.tier}/{manifest.backup_id}",
        "finished_at": manifest.finished_at,
    }
    storage.write_bytes(LATEST_POINTER, json.dumps(body, indent=2).encode())


def _strip_suffix(text: str) -> str:
    for suffix in _SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text.rstrip("/")


def resolve(reference: str, storages: Sequence[Storage], s3_factory: S3Factory | None) -> CatalogEntry:
    """Find the set an operator means; NotFoundError when there is none."""
    reference = reference.strip()
    if reference.startswith("s3://"):
        if s3_factory is None:
            raise NotFoundError("S3 is not configured on this machine")
        body = _strip_suffix(reference[5:])
        parts = body.split("/")
        if len(parts) != 4 or not all(parts):
            raise NotFoundError(f"{reference} is not s3://bucket/hostname/tier/backup_id")
        bucket, hostname, tier, backup_id = parts
        return _entry_at(s3_factory(bucket, hostname), f"{tier}/{backup_id}", reference)
    if reference == "latest" or BACKUP_ID.match(reference):
        # Newest across every storage (an S3-only backup may be newer than the local ones); for equal
        # ids the first storage (local) wins.
        for entry in newest_first(entry for storage in storages for entry in list_backups(storage)):
            # A damaged set named by its id is returned, so verify/restore say what is wrong with it.
            if reference == entry.backup_id or (reference == "latest" and entry.manifest is not None):
                return entry
        raise NotFoundError(f"no backup named {reference!r} in {', '.join(s.description for s in storages)}")
    path = Path(_strip_suffix(reference)).absolute()
    if (path / MANIFEST_NAME).is_file() and path.parent.name in TIERS:
        return _entry_at(LocalStorage(path.parent.parent), f"{path.parent.name}/{path.name}", reference)
    raise NotFoundError(f"{reference!r} is not a backup id, 'latest', a backup folder or an s3:// URI")


def _entry_at(storage: Storage, prefix: str, reference: str) -> CatalogEntry:
    key = f"{prefix}/{MANIFEST_NAME}"
    if _split_set_key(key) is None:
        raise NotFoundError(f"{reference} does not name a backup set (tier/questboard_type_YYYYMMDD_HHMMSS)")
    return CatalogEntry(storage, prefix, read_manifest(storage, prefix))
