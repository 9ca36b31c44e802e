"""A whole backup or restore run as an operator starts it: locks, the run log, sweeping an interrupted
run's leftovers, the backup itself and pruning; the CLI only parses arguments and renders results.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from questboard_backup.address import STAGING, timestamp
from questboard_backup.backup import BackupResult, run_backup
from questboard_backup.catalog import CatalogEntry, incomplete_sets
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.errors import BackupError
from questboard_backup.lock import SHARED_LOCK_KEY, BackupLock, StorageLock
from questboard_backup.restore import run_restore
from questboard_backup.retention import prune
from questboard_backup.runlog import run_log
from questboard_backup.sources.base import Component, RestoreOptions
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage
from questboard_backup.wiring import Wiring

logger = logging.getLogger(__name__)
#: How long a CLI run's lock object holds if the run dies elsewhere than here (then it expires): past
#: the longest backup, within the 6 hours between backups.
SHARED_LOCK_LIFETIME_SECONDS = 6 * 3600


@contextmanager
def shared_locks(storages: Sequence[Storage], local: LocalStorage, holder: str) -> Iterator[None]:
    """The lock object of each shared storage (S3), which the serverless workflow and other hosts with
    the same BACKUP_HOSTNAME take too: the run and its sweep of leftovers are alone there. A lock left
    by an earlier run of this BACKUP_DIR is taken over at once (the flock held here proves it dead)."""
    shared = [storage for storage in storages if not isinstance(storage, LocalStorage)]
    instance = local.instance_id() if shared else None
    taken: list[tuple[StorageLock, str]] = []
    try:
        for storage in shared:
            lock = StorageLock(storage, SHARED_LOCK_KEY, SHARED_LOCK_LIFETIME_SECONDS, instance)
            taken.append((lock, lock.acquire(holder)))
        yield
    finally:
        for lock, token in taken:
            try:
                lock.release(token)
            except BackupError as error:  # it expires; the next run here takes it over at once
                logger.warning("could not release a lock: %s", error)


def sweep_leftovers(local: LocalStorage, storages: Sequence[Storage]) -> None:
    """Remove what interrupted runs left (sets without a manifest, unfinished uploads); the caller
    holds every lock, so nothing in progress can be among them."""
    for leftover in local.clear_staging():
        logger.warning("removed leftovers of an interrupted run location=%s", local.root / STAGING / leftover)
    for storage in storages:
        for prefix in incomplete_sets(storage):
            logger.warning("removing leftovers of an interrupted run location=%s", storage.uri(prefix))
            storage.delete_prefix(prefix)


@dataclass(frozen=True)
class BackupRun:
    result: BackupResult
    log: Path


def backup_now(wiring: Wiring, kind: str, keep_local: bool = True) -> BackupRun:
    """Take a backup now: the BACKUP_DIR lock, the run log, the shared locks, the sweep, the backup to
    every storage, then local pruning. The caller has checked that backups are enabled."""
    settings = wiring.settings
    wrapper = wiring.passphrase_wrapper()
    wrapper.prepare()
    components = wiring.sources(wiring.endpoints())
    local = wiring.local_storage()
    local.ensure_layout()
    storages = wiring.storages(local=keep_local)
    now = datetime.now(UTC)
    holder = f"{kind} backup, host {socket.gethostname()} pid {os.getpid()}"
    with (
        BackupLock(settings.backup_dir, f"{kind} backup"),
        run_log(local.root / "logs", "backup", now) as log,
        shared_locks(storages, local, holder),
    ):
        sweep_leftovers(local, storages)
        result = run_backup(
            kind,
            components,
            storages,
            wrapper,
            settings.hostname,
            settings.schedule_zone,
            now,
            settings.compression_level,
        )
        if keep_local:
            prune(local, now, settings.retention_days)
    return BackupRun(result, log)


def restore_now(
    wiring: Wiring,
    entry: CatalogEntry,
    wrapper: KeyWrapper,
    targets: Mapping[str, Component],
    files_root: Path | None,
    only: Sequence[str] | None,
) -> dict[str, Any]:
    """Restore ``entry`` into ``targets`` with a run log (when BACKUP_DIR is writable), then check that
    every restored target answers: the seed's first post-restore check."""
    now = datetime.now(UTC)
    options = RestoreOptions(timestamp=timestamp(now), files_root=files_root)
    backup_dir = wiring.settings.backup_dir
    logs = backup_dir / "logs"
    with run_log(logs, "restore", now) if os.access(backup_dir, os.W_OK) else nullcontext():
        report = run_restore(entry, wrapper, targets, options, only)
        for name in report["components"]:
            targets[name].check()
    return report
