"""The catalog: which backups exist (a set with a manifest), where, and how an operator names one.

A reference is a backup id, ``latest``, a local path (a set folder, its manifest, or the seed's
``.../daily/questboard_full_....tar.gz`` spelling), or ``s3://bucket/host/tier/id[/...]``.

Listings may read manifests without authenticating them (an entry says whether it was); what a backup
is chosen by (``latest``, health, restore) uses only manifests that authenticate and name the host,
tier and id of where they sit.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from questboard_backup.address import (
    MANIFEST_NAME,
    STAGING,
    TIERS,
    SetAddress,
    is_backup_id,
    parse_s3_uri,
    sort_key,
    staged_set_prefix,
)
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.errors import BackupError, NotFoundError
from questboard_backup.manifest import Manifest, check_address, open_manifest, parse_manifest
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage

logger = logging.getLogger(__name__)

#: Builds an S3 storage for (bucket, hostname); supplied by the edge so the catalog stays boto3-free.
S3Factory = Callable[[str, str], Storage]
_SUFFIXES = (".tar.gz", ".tgz", ".tar", "/" + MANIFEST_NAME)


@dataclass(frozen=True)
class CatalogEntry:
    """A set found in a storage: where it is (``set_prefix``, relative to the storage) and its manifest
    (None when unreadable, with the ``problem``); ``authenticated`` once the manifest was checked with
    the key and found to name where it sits (else ``problem`` says why not, when it was tried)."""

    storage: Storage
    set_prefix: str
    manifest: Manifest | None
    problem: str | None = None
    authenticated: bool = False

    @property
    def address(self) -> SetAddress | None:
        """Where the set sits (None for a staging prefix, ``temp/{id}``, which no manifest names)."""
        return SetAddress.from_set_prefix(self.storage.hostname, self.set_prefix)

    @property
    def backup_id(self) -> str:
        return self.set_prefix.rsplit("/", 1)[-1]

    @property
    def location(self) -> str:
        return self.storage.uri(self.set_prefix)

    def summary(self) -> dict[str, object]:
        body: dict[str, object] = {
            "id": self.backup_id,
            "location": self.location,
            "storage": self.storage.kind,
            "authenticated": self.authenticated,
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


def open_entry(entry: CatalogEntry, wrapper: KeyWrapper) -> tuple[Manifest, bytes]:
    """The manifest of ``entry``, authenticated and naming the host, tier and id of where it sits, with
    its data key; IntegrityError otherwise."""
    data = entry.storage.read_bytes(f"{entry.set_prefix}/{MANIFEST_NAME}")
    return open_manifest(data, wrapper, expected_id=entry.backup_id, at=entry.address)


def checked(entry: CatalogEntry, wrapper: KeyWrapper) -> CatalogEntry:
    """``entry`` with its manifest authenticated, or marked with why it is not."""
    try:
        manifest, _data_key = open_entry(entry, wrapper)
    except BackupError as error:
        return replace(entry, authenticated=False, problem=f"not authenticated: {error}")
    return replace(entry, manifest=manifest, authenticated=True, problem=None)


def latest(storages: Sequence[Storage], wrapper: KeyWrapper) -> CatalogEntry | None:
    """The newest set, across ``storages``, whose manifest authenticates and names where it sits;
    newer sets that do not (forged, damaged, moved) are skipped and logged."""
    for entry in newest_first(entry for storage in storages for entry in list_backups(storage)):
        if entry.manifest is None:
            continue
        found = checked(entry, wrapper)
        if found.authenticated:
            return found
        logger.warning("skipped a set for latest location=%s problem=%s", entry.location, found.problem)
    return None


def list_backups(storage: Storage, wrapper: KeyWrapper | None = None) -> list[CatalogEntry]:
    """Every set with a manifest in ``storage``, newest first; unreadable manifests are listed with a
    problem. With ``wrapper``, each manifest is authenticated too (one key unwrap each), and marked."""
    entries = []
    for tier in TIERS:
        for key in storage.list_keys(tier):
            address = SetAddress.from_manifest_key("", key)
            if address is None:
                continue
            try:
                manifest, _body, _mac = parse_manifest(storage.read_bytes(key))
            except BackupError as error:
                entries.append(CatalogEntry(storage, address.set_prefix, None, str(error)))
                continue
            entry = CatalogEntry(storage, address.set_prefix, manifest)
            entries.append(checked(entry, wrapper) if wrapper is not None else entry)
    return newest_first(entries)


def newest_first(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """By the time in the backup id (full and incremental interleaved), newest first."""
    return sorted(entries, key=lambda entry: sort_key(entry.backup_id), reverse=True)


def incomplete_sets(storage: Storage) -> Iterator[str]:
    """Prefixes holding objects or unfinished uploads but no manifest: leftovers of interrupted runs
    (never backups)."""
    for tier in (*TIERS, STAGING):
        seen: dict[str, bool] = {}
        for key in itertools.chain(storage.list_keys(tier), storage.list_unfinished(tier)):
            prefix = staged_set_prefix(key)
            if prefix is None:
                continue
            seen[prefix] = seen.get(prefix, False) or key == f"{prefix}/{MANIFEST_NAME}"
        yield from (prefix for prefix, complete in seen.items() if not complete or tier == STAGING)


LATEST_POINTER = "latest.json"


def read_manifest(storage: Storage, set_prefix: str) -> Manifest:
    """The manifest of the set at ``set_prefix``, refused unless it names where it sits, but not
    authenticated: for what needs no key (listings, the metrics of a set this run just verified and
    promoted). Nothing is chosen, trusted or restored by it alone (``open_entry`` authenticates)."""
    manifest, _body, _mac = parse_manifest(storage.read_bytes(f"{set_prefix}/{MANIFEST_NAME}"))
    address = SetAddress.from_set_prefix(storage.hostname, set_prefix)
    if address is not None:
        check_address(manifest, address)
    return manifest


def write_latest_pointer(storage: Storage, manifest: Manifest) -> None:
    """``latest.json`` names the newest backup (a convenience for operators: `latest` resolves by listing)."""
    body = {
        "backup_id": manifest.backup_id,
        "tier": manifest.tier,
        "prefix": SetAddress(manifest.hostname, manifest.tier, manifest.backup_id).set_prefix,
        "finished_at": manifest.finished_at,
    }
    storage.write_bytes(LATEST_POINTER, json.dumps(body, indent=2).encode())


def pointed_manifest(storage: Storage) -> Manifest | None:
    """The manifest ``latest.json`` names, read (not authenticated), or None when there is no pointer
    or it names nothing readable: a hint (where a dump runs), never what a restore trusts."""
    try:
        pointer = json.loads(storage.read_bytes(LATEST_POINTER))
        return read_manifest(storage, f"{pointer['tier']}/{pointer['backup_id']}")
    except (BackupError, ValueError, TypeError, KeyError):
        return None


def _strip_suffix(text: str) -> str:
    for suffix in _SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text.rstrip("/")


def resolve(
    reference: str,
    storages: Sequence[Storage],
    s3_factory: S3Factory | None,
    wrapper: KeyWrapper | None = None,
) -> CatalogEntry:
    """Find the set an operator means; NotFoundError when there is none. With ``wrapper`` (every
    caller that will trust the set), ``latest`` is the newest authentic set and any other reference
    must authenticate (IntegrityError naming why); without it, the caller authenticates later."""
    entry = _find(reference, storages, s3_factory, wrapper)
    if wrapper is None or entry.authenticated:
        return entry
    manifest, _data_key = open_entry(entry, wrapper)
    return replace(entry, manifest=manifest, authenticated=True, problem=None)


def _find(
    reference: str, storages: Sequence[Storage], s3_factory: S3Factory | None, wrapper: KeyWrapper | None
) -> CatalogEntry:
    reference = reference.strip()
    if reference.startswith("s3://"):
        if s3_factory is None:
            raise NotFoundError("S3 is not configured on this machine")
        try:
            bucket, key = parse_s3_uri(_strip_suffix(reference))
        except ValueError:
            raise NotFoundError(f"{reference} is not s3://bucket/hostname/tier/backup_id") from None
        hostname, _, set_prefix = key.partition("/")
        if not hostname or len(set_prefix.split("/")) != 2 or not all(set_prefix.split("/")):
            raise NotFoundError(f"{reference} is not s3://bucket/hostname/tier/backup_id")
        return _entry_at(s3_factory(bucket, hostname), set_prefix, reference)
    if reference == "latest" and wrapper is not None:
        found = latest(storages, wrapper)
        if found is None:
            raise NotFoundError(
                f"no authentic backup in {', '.join(s.description for s in storages)} (see the listing)"
            )
        return found
    if reference == "latest" or is_backup_id(reference):
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


def _entry_at(storage: Storage, set_prefix: str, reference: str) -> CatalogEntry:
    if SetAddress.from_set_prefix("", set_prefix) is None:
        raise NotFoundError(f"{reference} does not name a backup set (tier/questboard_type_YYYYMMDD_HHMMSS)")
    return CatalogEntry(storage, set_prefix, read_manifest(storage, set_prefix))
