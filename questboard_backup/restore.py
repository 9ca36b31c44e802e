"""Verify and restore backup sets.

``verify_backup`` re-reads everything (manifest authenticity, every component's presence, size, SHA-256
and authenticated stream end). ``run_restore`` checks the manifest and that every component exists
before touching anything, then restores PostgreSQL first (into a staging database, swapped in only
after it checks out) and the other components after, each verifying its stream before it writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from questboard_backup.address import MANIFEST_NAME, stream_context
from questboard_backup.catalog import CatalogEntry
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.errors import ConfigurationError, IntegrityError, NotFoundError
from questboard_backup.manifest import ComponentEntry, Manifest, open_manifest
from questboard_backup.pipeline import READ_SIZE, ComponentReader
from questboard_backup.sources import registry
from questboard_backup.sources.base import Component, RestoreOptions, StreamOpener

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyReport:
    manifest: Manifest
    checked: dict[str, int] = field(default_factory=dict)


def load_checked_manifest(entry: CatalogEntry, wrapper: KeyWrapper) -> tuple[Manifest, bytes]:
    """The authenticated manifest and data key, after checking every stored object exists at its size."""
    manifest, data_key = open_manifest(
        entry.storage.read_bytes(f"{entry.set_prefix}/{MANIFEST_NAME}"), wrapper, expected_id=entry.backup_id
    )
    for component in manifest.components:
        for part in component.stored_objects():
            key = f"{entry.set_prefix}/{part.object}"
            try:
                size = entry.storage.size(key)
            except NotFoundError:
                raise IntegrityError(
                    f"{manifest.backup_id}: component {component.name} is missing ({part.object})"
                ) from None
            if size != part.stored_bytes:
                raise IntegrityError(
                    f"{manifest.backup_id}: {part.object} of component {component.name} has {size} bytes, "
                    f"the manifest says {part.stored_bytes}"
                )
    return manifest, data_key


def stream_opener(
    entry: CatalogEntry, manifest: Manifest, component: ComponentEntry, data_key: bytes
) -> StreamOpener:
    objects = component.stored_objects()

    @contextmanager
    def open_stream(part: int = 0) -> Iterator[BinaryIO]:
        if not 0 <= part < len(objects):
            raise IntegrityError(
                f"{manifest.backup_id}: component {component.name} has no part {part} in the manifest"
            )
        stored = objects[part]
        raw = entry.storage.open_read(f"{entry.set_prefix}/{stored.object}")
        try:
            reader = ComponentReader(
                raw,
                data_key,
                stream_context(manifest.backup_id, component.name, part),
                f"{manifest.backup_id}/{stored.object}",
                stored.stored_bytes,
                stored.sha256,
            )
            yield reader  # type: ignore[misc]
            reader.finish()
        finally:
            raw.close()

    return open_stream


def read_through(open_stream: StreamOpener, component: ComponentEntry) -> int:
    """Read every stored object of the component to its sealed end; returns the plaintext bytes."""
    total = 0
    buffer = bytearray(READ_SIZE)
    for part, stored in enumerate(component.stored_objects()):
        raw_bytes = 0
        with open_stream(part) as stream:
            while count := stream.readinto(buffer):  # type: ignore[attr-defined]
                raw_bytes += count
        if raw_bytes != stored.raw_bytes:
            raise IntegrityError(
                f"{stored.object}: expected {stored.raw_bytes} plaintext bytes, got {raw_bytes}"
            )
        total += raw_bytes
    return total


def authenticate_streams(
    entry: CatalogEntry, manifest: Manifest, data_key: bytes, components: Sequence[ComponentEntry]
) -> None:
    """Read every component through to its sealed end, but those that check their own stream in a
    staging area before they swap (PostgreSQL's staging database)."""
    for component in components:
        if not registry.spec(component.name).checks_stream_in_staging:
            read_through(stream_opener(entry, manifest, component, data_key), component)


def verify_backup(entry: CatalogEntry, wrapper: KeyWrapper) -> VerifyReport:
    """Read every byte of the set back and authenticate it; raise IntegrityError on the first problem."""
    manifest, data_key = load_checked_manifest(entry, wrapper)
    checked = {}
    for component in manifest.components:
        raw_bytes = read_through(stream_opener(entry, manifest, component, data_key), component)
        checked[component.name] = raw_bytes
        logger.info("component verified component=%s raw_bytes=%d", component.name, raw_bytes)
    return VerifyReport(manifest, checked)


def select_components(manifest: Manifest, only: Sequence[str] | None) -> list[ComponentEntry]:
    names = [entry.name for entry in manifest.components]
    wanted = list(only) if only else names
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ConfigurationError(
            f"--only names {', '.join(unknown)}, but {manifest.backup_id} holds {', '.join(names)}"
        )
    return sorted((manifest.component(name) for name in wanted), key=lambda e: registry.restore_rank(e.name))


def run_restore(
    entry: CatalogEntry,
    wrapper: KeyWrapper,
    targets: Mapping[str, Component],
    options: RestoreOptions,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Restore the chosen components of ``entry`` into ``targets`` (component name -> bound endpoint)."""
    manifest, data_key = load_checked_manifest(entry, wrapper)
    selected = select_components(manifest, only)
    missing = [component.name for component in selected if component.name not in targets]
    if missing:
        raise ConfigurationError(f"no restore target configured for {', '.join(missing)}")
    for component in selected:
        # Before any stream is read; a PostgreSQL target database may not exist yet (a fresh restore), so
        # its check is the role's privileges on the server.
        targets[component.name].check_restore_target()
    if len(selected) > 1:
        # Each restorer checks its own stream before it replaces its target; with several components,
        # a bad later one must also be found before an earlier one has been replaced.
        authenticate_streams(entry, manifest, data_key, selected)
    report: dict[str, Any] = {"backup_id": manifest.backup_id, "components": {}}
    for component in selected:
        clock = time.monotonic()
        logger.info("component restore started component=%s", component.name)
        result = targets[component.name].restore(
            stream_opener(entry, manifest, component, data_key), component.facts, options
        )
        result["seconds"] = round(time.monotonic() - clock, 1)
        report["components"][component.name] = result
        logger.info("component restored component=%s seconds=%.1f", component.name, result["seconds"])
    return report
