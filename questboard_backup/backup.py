"""Backup orchestration: choose id and tier, stream every component to every storage, seal, promote.

A set is written under each storage's staging prefix; the manifest is written last and the set is
then promoted, so an interrupted run never yields anything that looks like a backup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from questboard_backup import __version__
from questboard_backup.crypto.keys import KeyWrapper, WrappedKey
from questboard_backup.errors import ConfigurationError
from questboard_backup.manifest import (
    BACKUP_ID,
    MANIFEST_NAME,
    ComponentEntry,
    Manifest,
    PartEntry,
    format_time,
    seal_manifest,
)
from questboard_backup.pipeline import ZSTD_LEVEL, ZSTD_THREADS, ComponentWriter
from questboard_backup.sources.base import Component
from questboard_backup.storage.base import ObjectWriter, Storage

logger = logging.getLogger(__name__)

KINDS = ("full", "incremental")
OBJECT_NAMES = {"postgres": "postgres.dump.zst.enc", "redis": "redis.rdbx.zst.enc"}


def object_name(component: str, part: int = 0) -> str:
    """``postgres.dump.zst.enc``; a further part is ``postgres.part1.dump.zst.enc``."""
    name = OBJECT_NAMES.get(component, f"{component}.tar.zst.enc")
    if part == 0:
        return name
    stem, rest = name.split(".", 1)
    return f"{stem}.part{part}.{rest}"


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


def stream_context(backup_id: str, component: str, part: int = 0) -> str:
    """Binds a stream to its backup, component and part (part of the key derivation), so no stored
    object can stand in for another."""
    return f"{backup_id}/{component}" if part == 0 else f"{backup_id}/{component}/part{part}"


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
    def final_prefix(self) -> str:
        return f"{self.tier}/{self.backup_id}"

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
    kind: str, hostname: str, wrapper: KeyWrapper, now: datetime | None = None, backup_id: str | None = None
) -> tuple[BackupPlan, bytes]:
    """Choose id and tier and create the backup's data key; returns the plan and the plaintext key.

    ``backup_id`` (from a scheduled start, which names the execution after it) fixes the id and the
    time it stands for; otherwise the id comes from ``now``.
    """
    if kind not in KINDS:
        raise ConfigurationError(f"backup type must be one of {', '.join(KINDS)}, not {kind!r}")
    if backup_id is not None:
        match = BACKUP_ID.match(backup_id)
        if not match or match.group(1) != kind:
            raise ConfigurationError(f"backup id {backup_id!r} is not a {kind} backup id")
        started = datetime.strptime(match.group(2), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    else:
        started = now or datetime.now(UTC)
        backup_id = backup_id_for(kind, started)
    data_key, wrapped_key = wrapper.generate(backup_id)
    return BackupPlan(
        backup_id, kind, tier_for(kind, started), hostname, format_time(started), wrapped_key
    ), data_key


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
                for storage in self._storages:
                    key = f"{storage.staging_prefix(self._plan.tier, self._plan.backup_id)}/{name}"
                    writers.append(storage.open_write(key, self._plan.tier))
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
    component: Component,
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


def seal_backup(
    plan: BackupPlan, entries: Sequence[ComponentEntry], storages: Sequence[Storage], data_key: bytes
) -> Manifest:
    """Write the manifest, last, into every storage's staging area."""
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
    sealed = seal_manifest(manifest, data_key)
    for storage in storages:
        storage.write_bytes(
            f"{storage.staging_prefix(plan.tier, plan.backup_id)}/{MANIFEST_NAME}", sealed, plan.tier
        )
    return manifest


def promote_backup(plan: BackupPlan, storages: Sequence[Storage]) -> tuple[str, ...]:
    for storage in storages:
        storage.promote(storage.staging_prefix(plan.tier, plan.backup_id), plan.final_prefix)
    return tuple(storage.uri(plan.final_prefix) for storage in storages)


def discard_backup(plan: BackupPlan, storages: Sequence[Storage]) -> None:
    """Remove a failed run's objects from every storage; never raises (it runs on failure paths)."""
    for storage in storages:
        try:
            storage.delete_prefix(storage.staging_prefix(plan.tier, plan.backup_id))
            # A promote interrupted halfway leaves copies without a manifest: not a backup, remove them.
            if not storage.exists(f"{plan.final_prefix}/{MANIFEST_NAME}"):
                storage.delete_prefix(plan.final_prefix)
        except Exception:
            logger.exception("cleanup failed storage=%s", storage.description)


def run_backup(
    kind: str,
    components: Sequence[Component],
    storages: Sequence[Storage],
    wrapper: KeyWrapper,
    hostname: str,
    now: datetime | None = None,
    level: int = ZSTD_LEVEL,
) -> BackupResult:
    """Back up ``components`` to every storage, start to finish, compressed at zstd ``level``. The
    caller holds the lock."""
    clock = time.monotonic()
    for component in components:
        component.check()
    plan, data_key = plan_backup(kind, hostname, wrapper, now)
    logger.info(
        "backup started id=%s tier=%s storages=%s",
        plan.backup_id,
        plan.tier,
        [s.description for s in storages],
    )
    try:
        entries = [dump_component(plan, component, storages, data_key, level) for component in components]
        manifest = seal_backup(plan, entries, storages, data_key)
        locations = promote_backup(plan, storages)
    except BaseException:
        # The failure itself is the caller's to report (the CLI's error line, the run log's last line).
        logger.info("backup failed id=%s; removing its partial objects", plan.backup_id)
        discard_backup(plan, storages)
        raise
    seconds = time.monotonic() - clock
    logger.info("backup finished id=%s bytes=%d seconds=%.1f", plan.backup_id, manifest.stored_bytes, seconds)
    return BackupResult(manifest, locations, seconds)
