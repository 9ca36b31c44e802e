"""Backup orchestration: choose id and tier, stream every component to every storage, seal, promote.

A set is written under each storage's staging prefix; the manifest is written last, create-only, and
the set is then promoted, so an interrupted run never yields anything that looks like a backup. A backup
id is never reused: a run refuses an id that already has a complete set, and never deletes one it did
not write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from questboard_backup import __version__
from questboard_backup.address import (
    MANIFEST_NAME,
    BackupId,
    SetAddress,
    object_name,
    stream_context,
    tier_for,
)
from questboard_backup.crypto.keys import KeyWrapper, WrappedKey
from questboard_backup.errors import ConfigurationError, StorageError
from questboard_backup.manifest import ComponentEntry, Manifest, PartEntry, format_time, seal_manifest
from questboard_backup.pipeline import ZSTD_LEVEL, ZSTD_THREADS, ComponentWriter
from questboard_backup.sources.base import Source
from questboard_backup.storage.base import ObjectWriter, Storage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupPlan:
    """What a backup run decided before dumping anything; JSON-safe so workflow steps can pass it on."""

    backup_id: str
    type: str
    tier: str
    hostname: str
    started_at: str
    key: WrappedKey

    @property
    def address(self) -> SetAddress:
        return SetAddress(self.hostname, self.tier, self.backup_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> BackupPlan:
        return cls(
            **{name: body[name] for name in ("backup_id", "type", "tier", "hostname", "started_at", "key")}
        )


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


def plan_backup(
    kind: str,
    hostname: str,
    wrapper: KeyWrapper,
    schedule_zone: tzinfo,
    now: datetime | None = None,
    backup_id: str | None = None,
) -> tuple[BackupPlan, bytes]:
    """Choose id and tier and create the backup's data key; returns the plan and the plaintext key.

    ``backup_id`` (from a scheduled start, which names the execution after it) fixes the id and the
    time it stands for; otherwise the id comes from ``now``. The tier follows the calendar of
    ``schedule_zone`` (BACKUP_TIMEZONE); the id stays UTC.
    """
    if backup_id is not None:
        chosen = BackupId.parse(backup_id)
        if chosen.kind != kind:
            raise ConfigurationError(f"backup id {backup_id!r} is not a {kind} backup id")
    else:
        chosen = BackupId.at(kind, now or datetime.now(UTC))
    data_key, wrapped_key = wrapper.generate(str(chosen))
    tier = tier_for(kind, chosen.moment, schedule_zone)
    return BackupPlan(str(chosen), kind, tier, hostname, format_time(chosen.moment), wrapped_key), data_key


class _ComponentOutputs:
    """The sealed output streams of one component being dumped: part 0, and further parts opened on
    demand (``open_part``, from the component's own threads); each writes to every storage."""

    def __init__(
        self,
        plan: BackupPlan,
        component: str,
        storages: Sequence[Storage],
        data_key: bytes,
        threads: int,
        level: int,
    ) -> None:
        self._plan, self._component, self._storages, self._data_key = plan, component, storages, data_key
        self._threads, self._level = threads, level
        self._lock = threading.Lock()
        self.streams: list[tuple[str, ComponentWriter, list[ObjectWriter]]] = []

    def open(self) -> ComponentWriter:
        with self._lock:
            part = len(self.streams)
            name = object_name(self._component, part)
            writers: list[ObjectWriter] = []
            try:
                address = self._plan.address
                for storage in self._storages:
                    key = f"{address.staging_prefix(storage.stage_in_temp)}/{name}"
                    writers.append(storage.open_write(key, address.staging_tag(storage.stage_in_temp)))
                # The stream writes its header at once: every storage writer must be open by then.
                context = stream_context(self._plan.backup_id, self._component, part)
                stream = ComponentWriter(
                    _Tee(writers), self._data_key, context, level=self._level, threads=self._threads
                )
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise
            self.streams.append((name, stream, writers))
            return stream

    def finish(self) -> list[PartEntry]:
        parts = []
        for name, stream, writers in self.streams:
            stats = stream.finish()
            for writer in writers:
                writer.close()
            parts.append(PartEntry(name, stats.raw_bytes, stats.stored_bytes, stats.sha256))
        return parts

    def abort(self) -> None:
        for _name, _stream, writers in self.streams:
            for writer in writers:
                writer.abort()


def dump_component(
    plan: BackupPlan,
    component: Source,
    storages: Sequence[Storage],
    data_key: bytes,
    level: int = ZSTD_LEVEL,
) -> ComponentEntry:
    """Stream one component into every storage's staging area, compressed at zstd ``level``; its
    objects are complete on return."""
    clock = time.monotonic()
    threads = 0 if component.parallel_streams else ZSTD_THREADS
    outputs = _ComponentOutputs(plan, component.name, storages, data_key, threads, level)
    try:
        main = outputs.open()
        facts = component.dump(main, outputs.open)  # type: ignore[arg-type]
        first, *parts = outputs.finish()
    except BaseException:
        outputs.abort()
        raise
    entry = ComponentEntry(
        component.name,
        first.object,
        first.raw_bytes,
        first.stored_bytes,
        first.sha256,
        round(time.monotonic() - clock, 3),
        facts,
        tuple(parts),
    )
    logger.info(
        "component stored component=%s objects=%d raw_bytes=%d stored_bytes=%d seconds=%.1f",
        component.name,
        1 + len(parts),
        entry.total_raw_bytes,
        entry.total_stored_bytes,
        entry.seconds,
    )
    return entry


def refuse_existing(plan: BackupPlan, storages: Sequence[Storage]) -> None:
    """ConfigurationError when any storage already has a complete set (one with a manifest) with this
    plan's id: a backup id is never reused (the console's "new execution with the same input")."""
    address = plan.address
    for storage in storages:
        if storage.exists(address.manifest_key):
            raise ConfigurationError(
                f"backup {plan.backup_id} already exists at {storage.uri(address.set_prefix)}: "
                "a backup id is never reused; start a new backup (a new id) instead"
            )


def seal_backup(
    plan: BackupPlan,
    entries: Sequence[ComponentEntry],
    storages: Sequence[Storage],
    data_key: bytes,
    sealed: list[Storage] | None = None,
) -> Manifest:
    """Write the manifest, last and create-only, into every storage's staging area: a second writer
    of the same id cannot replace the first's. ``sealed`` collects the storages written to."""
    manifest = Manifest(
        backup_id=plan.backup_id,
        type=plan.type,
        tier=plan.tier,
        hostname=plan.hostname,
        started_at=plan.started_at,
        finished_at=format_time(datetime.now(UTC)),
        tool_version=__version__,
        key=plan.key,
        components=tuple(entries),
    )
    document = seal_manifest(manifest, data_key)
    address = plan.address
    for storage in storages:
        key = f"{address.staging_prefix(storage.stage_in_temp)}/{MANIFEST_NAME}"
        created = storage.create_exclusive(key, document, address.staging_tag(storage.stage_in_temp))
        # A PUT retried after its answer was lost finds its own bytes there: that is this run's write.
        if not created and storage.read_bytes(key) != document:
            raise StorageError(
                f"{storage.uri(key)} already exists: another run wrote backup {plan.backup_id}; "
                "nothing was overwritten"
            )
        if sealed is not None:
            sealed.append(storage)
    return manifest


def promote_backup(plan: BackupPlan, storages: Sequence[Storage]) -> tuple[str, ...]:
    address = plan.address
    for storage in storages:
        storage.promote(
            address.staging_prefix(storage.stage_in_temp), address.set_prefix, plan.tier, MANIFEST_NAME
        )
    return tuple(storage.uri(address.set_prefix) for storage in storages)


def discard_backup(plan: BackupPlan, storages: Sequence[Storage], sealed: Sequence[Storage] = ()) -> None:
    """Remove a failed run's objects from every storage; never raises (it runs on failure paths).

    Staging apart (``temp/{id}``) is this run's own (its lock says so) and goes. A set at its final
    prefix goes only while it has no manifest, or when this run wrote that manifest (``sealed``): a
    complete set another run wrote (the same id run twice) is never touched.
    """
    address = plan.address
    for storage in storages:
        try:
            if storage.stage_in_temp:
                storage.delete_prefix(address.staging_prefix(True))
            # A promote interrupted halfway leaves copies without a manifest: not a backup, remove them.
            if (storage in sealed and not storage.stage_in_temp) or not storage.exists(address.manifest_key):
                storage.delete_prefix(address.set_prefix)
        except Exception:
            logger.exception("cleanup failed storage=%s", storage.description)


def run_backup(
    kind: str,
    components: Sequence[Source],
    storages: Sequence[Storage],
    wrapper: KeyWrapper,
    hostname: str,
    schedule_zone: tzinfo,
    now: datetime | None = None,
    level: int = ZSTD_LEVEL,
    still_locked: Callable[[], None] = lambda: None,
) -> BackupResult:
    """Back up ``components`` to every storage, start to finish, compressed at zstd ``level``. The
    caller holds the lock; ``still_locked`` raises LockedError if it was lost, and is asked before the
    manifest is written and before the set is promoted."""
    clock = time.monotonic()
    for component in components:
        component.check()
    plan, data_key = plan_backup(kind, hostname, wrapper, schedule_zone, now)
    refuse_existing(plan, storages)
    logger.info(
        "backup started id=%s tier=%s storages=%s",
        plan.backup_id,
        plan.tier,
        [s.description for s in storages],
    )
    sealed: list[Storage] = []
    try:
        entries = [dump_component(plan, component, storages, data_key, level) for component in components]
        still_locked()
        manifest = seal_backup(plan, entries, storages, data_key, sealed)
        still_locked()
        locations = promote_backup(plan, storages)
    except BaseException:
        # The failure itself is the caller's to report (the CLI's error line, the run log's last line).
        logger.info("backup failed id=%s; removing its partial objects", plan.backup_id)
        discard_backup(plan, storages, sealed)
        raise
    seconds = time.monotonic() - clock
    logger.info("backup finished id=%s bytes=%d seconds=%.1f", plan.backup_id, manifest.stored_bytes, seconds)
    return BackupResult(manifest, locations, seconds)
