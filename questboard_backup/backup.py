"""Backup orchestration: choose id and tier, stream every component to every storage, seal, promote.

A set is written under each storage's staging prefix; the manifest is written last and the set is
then promoted, so an interrupted run never yields anything that looks like a backup.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from questboard_backup import __version__
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.manifest import MANIFEST_NAME, ComponentEntry, Manifest, seal_manifest
from questboard_backup.pipeline import ComponentWriter
from questboard_backup.sources.base import Component
from questboard_backup.storage.base import ObjectWriter, Storage

logger = logging.getLogger(__name__)

KINDS = ("full", "incremental")
OBJECT_NAMES = {"postgres": "postgres.dump.zst.enc", "redis": "redis.rdbx.zst.enc"}


def object_name(component: str) -> str:
    return OBJECT_NAMES.get(component, f"{component}.tar.zst.enc")


def backup_id_for(kind: str, now: datetime) -> str:
    return f"questboard_{kind}_{now.astimezone(UTC):%Y%m%d_%H%M%S}"


def tier_for(kind: str, now: datetime) -> str:
    """Incrementals keep 24 h; a full on the 1st is monthly, on a Sunday weekly, else daily."""
    if kind == "incremental":
        return "incremental"
    day = now.astimezone(UTC)
    if day.day == 1:
        return "monthly"
    if day.weekday() == 6:
        return "weekly"
    return "daily"


def stream_context(backup_id: str, component: str) -> str:
    """Binds a component's stream to its backup and name (part of the key derivation)."""
    return f"{backup_id}/{component}"


@dataclass(frozen=True)
class BackupResult:
    manifest: Manifest
    locations: tuple[str, ...]
    seconds: float


class _Tee:
    """Writes the same sealed bytes to every storage's object writer."""

    def __init__(self, writers: Sequence[ObjectWriter]) -> None:
        self._writers = writers

    def write(self, data: bytes) -> int:
        for writer in self._writers:
            writer.write(data)
        return len(data)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_backup(
    kind: str,
    components: Sequence[Component],
    storages: Sequence[Storage],
    wrapper: KeyWrapper,
    hostname: str,
    now: datetime | None = None,
) -> BackupResult:
    """Back up ``components`` to every storage. The caller holds the lock."""
    if kind not in KINDS:
        raise ValueError(f"unknown backup type {kind!r}")
    started = now or datetime.now(UTC)
    clock = time.monotonic()
    backup_id, tier = backup_id_for(kind, started), tier_for(kind, started)
    logger.info("backup started id=%s tier=%s storages=%s", backup_id, tier, [s.description for s in storages])
    for component in components:
        component.check()
    data_key, wrapped_key = wrapper.generate(backup_id)
    staging = {id(storage): storage.staging_prefix(tier, backup_id) for storage in storages}
    try:
        entries = [_dump_component(c, storages, staging, tier, backup_id, data_key) for c in components]
        manifest = Manifest(
            backup_id=backup_id,
            type=kind,
            tier=tier,
            hostname=hostname,
            started_at=_iso(started),
            finished_at=_iso(datetime.now(UTC)),
            tool_version=__version__,
            key=wrapped_key,
            components=tuple(entries),
        )
        sealed = seal_manifest(manifest, data_key)
        # The manifest goes last: before this line nothing here is a backup.
        for storage in storages:
            storage.write_bytes(f"{staging[id(storage)]}/{MANIFEST_NAME}", sealed, tier)
        for storage in storages:
            storage.promote(staging[id(storage)], f"{tier}/{backup_id}")
    except BaseException:
        logger.error("backup failed id=%s; removing its partial objects", backup_id)
        for storage in storages:
            try:
                storage.delete_prefix(staging[id(storage)])
            except Exception:  # noqa: BLE001 - cleanup must not hide the original error
                logger.exception("cleanup failed storage=%s", storage.description)
        raise
    seconds = time.monotonic() - clock
    locations = tuple(storage.uri(f"{tier}/{backup_id}") for storage in storages)
    logger.info("backup finished id=%s bytes=%d seconds=%.1f", backup_id, manifest.stored_bytes, seconds)
    return BackupResult(manifest, locations, seconds)


def _dump_component(
    component: Component,
    storages: Sequence[Storage],
    staging: dict[int, str],
    tier: str,
    backup_id: str,
    data_key: bytes,
) -> ComponentEntry:
    name = object_name(component.name)
    clock = time.monotonic()
    writers: list[ObjectWriter] = []
    try:
        for storage in storages:
            writers.append(storage.open_write(f"{staging[id(storage)]}/{name}", tier))
        stream = ComponentWriter(_Tee(writers), data_key, stream_context(backup_id, component.name))
        facts = component.dump(stream)  # type: ignore[arg-type]
        stats = stream.finish()
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    seconds = round(time.monotonic() - clock, 3)
    logger.info(
        "component stored component=%s raw_bytes=%d stored_bytes=%d seconds=%.1f",
        component.name, stats.raw_bytes, stats.stored_bytes, seconds,
    )
    return ComponentEntry(component.name, name, stats.raw_bytes, stats.stored_bytes, stats.sha256, seconds, facts)
