"""Verify and restore backup sets.

``verify_backup`` re-reads everything (manifest authenticity, every component's presence, size, SHA-256
and authenticated stream end). A restore is all or nothing: ``run_restore`` checks the manifest, that
every selected component has a target and that every target can be restored into, before it touches
any; then it stages every component beside its target and checks it there (``stage_component``), and
only when all are staged swaps them in, in one short step (``swap_in_all``). A failure anywhere undoes
everything of this restore (``undo_all``): staging is removed and targets already swapped get their
previous copy back. The workflow runs the same steps across invocations (Validate, Stage, Swap, and
the failure path's undo); each component finds its staging by the restore's timestamp.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from questboard_backup.address import stream_context
from questboard_backup.catalog import CatalogEntry, open_entry
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.errors import ConfigurationError, DeadlineExceededError, IntegrityError, NotFoundError
from questboard_backup.manifest import ComponentEntry, Manifest
from questboard_backup.pipeline import READ_SIZE, ComponentReader
from questboard_backup.sources import registry
from questboard_backup.sources.base import Component, RestoreOptions, StreamOpener

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyReport:
    manifest: Manifest
    checked: dict[str, int] = field(default_factory=dict)


def load_checked_manifest(entry: CatalogEntry, wrapper: KeyWrapper) -> tuple[Manifest, bytes]:
    """The authenticated manifest (naming the host, tier and id where it sits) and data key, after
    checking every stored object exists at its size."""
    manifest, data_key = open_entry(entry, wrapper)
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


#: A restore's throughput, conservatively: a quarter of the engine's measured restore speed on two
#: cores (docs/performance.md: 1.06 GB in 5.2 s), as a Lambda reads from S3 and builds indexes on
#: a busier server. Plus a fixed cost per component (connections, CREATE DATABASE, ANALYZE).
RESTORE_BYTES_PER_SECOND = 50 * 1024 * 1024
RESTORE_FIXED_SECONDS = 30.0
#: Restores that took longer to dump than this factor of the dump's own time are unheard of.
RESTORE_PER_DUMP_SECOND = 3.0
#: The least time left to start swapping: every swap is a few renames, but a kill mid-way must never
#: be the plan (a killed swap is undone by the failure path; it is never left for chance).
SWAP_MARGIN_SECONDS = 60.0

#: Seconds left in the current invocation (a Lambda's remaining time); None means no limit (the CLI).
TimeLeft = Callable[[], float] | None


def estimate_seconds(component: ComponentEntry) -> float:
    """How long restoring ``component`` may take, from the manifest's sizes and the dump's duration."""
    by_size = component.total_raw_bytes / RESTORE_BYTES_PER_SECOND
    return RESTORE_FIXED_SECONDS + max(by_size, component.seconds * RESTORE_PER_DUMP_SECOND)


def check_fits(components: Sequence[ComponentEntry], seconds: float, where: str) -> None:
    """Refuse, before anything is done, a restore whose estimate does not fit in ``seconds``."""
    for component in components:
        needed = estimate_seconds(component)
        if needed > seconds:
            raise DeadlineExceededError(
                f"restore of {component.name} refused: estimated {needed:.0f} s "
                f"({component.total_raw_bytes} bytes) does not fit in {where} ({seconds:.0f} s); "
                "restore it with the CLI on a host instead"
            )


def check_targets(selected: Sequence[ComponentEntry], targets: Mapping[str, Component]) -> None:
    """Every selected component has a target, and every target can be restored into: all before any."""
    missing = [component.name for component in selected if component.name not in targets]
    if missing:
        raise ConfigurationError(f"no restore target configured for {', '.join(missing)}")
    for component in selected:
        # A PostgreSQL target database may not exist yet (a fresh restore), so its check is the role's
        # privileges on the server.
        targets[component.name].check_restore_target()


def clear_leftovers(targets: Mapping[str, Component], options: RestoreOptions) -> list[str]:
    """Remove what earlier restores left beside these targets (and undo a swap one left half done)."""
    lines = []
    for name, target in targets.items():
        for line in target.clear_leftovers(options):
            logger.warning("restore leftover cleared component=%s what=%s", name, line)
            lines.append(f"{name}: {line}")
    return lines


def stage_component(
    entry: CatalogEntry,
    manifest: Manifest,
    data_key: bytes,
    component: ComponentEntry,
    target: Component,
    options: RestoreOptions,
) -> dict[str, Any]:
    """Restore one component into staging beside its target and check it there; the target is untouched."""
    clock = time.monotonic()
    logger.info("component staging started component=%s", component.name)
    report = dict(target.stage(stream_opener(entry, manifest, component, data_key), component.facts, options))
    report["seconds"] = round(time.monotonic() - clock, 1)
    logger.info("component staged component=%s seconds=%.1f", component.name, report["seconds"])
    return report


def swap_in_all(
    targets: Mapping[str, Component], options: RestoreOptions, time_left: TimeLeft = None
) -> dict[str, Any]:
    """Swap every staged component in (in ``targets``' order), then settle them; on any failure every
    target gets back what it had. Never starts a swap with less than ``SWAP_MARGIN_SECONDS`` left."""
    swapped: dict[str, Any] = {}
    try:
        for name, target in targets.items():
            if time_left is not None and time_left() < SWAP_MARGIN_SECONDS:
                raise DeadlineExceededError(
                    f"restore stopped before swapping {name} in: less than {SWAP_MARGIN_SECONDS:.0f} s left; "
                    "every target was left as it was"
                )
            swapped[name] = dict(target.swap_in(options))
            logger.info("component swapped in component=%s", name)
    except BaseException:
        undo_all(targets, options)
        raise
    settle_all(targets, options)
    return swapped


def settle_all(targets: Mapping[str, Component], options: RestoreOptions) -> None:
    """Make every swap of this restore final (idempotent: a settled target has nothing left to do)."""
    for target in targets.values():
        target.settle(options)


def undo_all(targets: Mapping[str, Component], options: RestoreOptions) -> list[str]:
    """Undo this restore on every target, last first; a target that fails to undo does not stop the
    others, and is reported (never raised: the caller is already handling a failure)."""
    lines = []
    for name, target in reversed(list(targets.items())):
        try:
            done = target.undo(options)
        except Exception as error:  # noqa: BLE001 - every target gets its undo, whatever one raised
            logger.error("restore not undone component=%s error=%s", name, error)
            lines.append(f"{name}: NOT undone: {error}")
            continue
        for line in done:
            logger.warning("restore undone component=%s what=%s", name, line)
            lines.append(f"{name}: {line}")
    return lines


def run_restore(
    entry: CatalogEntry,
    wrapper: KeyWrapper,
    targets: Mapping[str, Component],
    options: RestoreOptions,
    only: Sequence[str] | None = None,
    time_left: TimeLeft = None,
) -> dict[str, Any]:
    """Restore the chosen components of ``entry`` into ``targets`` (component name -> bound endpoint),
    all or nothing."""
    manifest, data_key = load_checked_manifest(entry, wrapper)
    selected = select_components(manifest, only)
    check_targets(selected, targets)
    if time_left is not None:
        check_fits(selected, time_left(), "the time left")
    chosen = {component.name: targets[component.name] for component in selected}
    clear_leftovers(chosen, options)
    report: dict[str, Any] = {"backup_id": manifest.backup_id, "components": {}}
    try:
        for component in selected:
            report["components"][component.name] = stage_component(
                entry, manifest, data_key, component, chosen[component.name], options
            )
    except BaseException:
        undo_all(chosen, options)
        raise
    for name, swapped in swap_in_all(chosen, options, time_left).items():
        report["components"][name].update(swapped)
    return report
