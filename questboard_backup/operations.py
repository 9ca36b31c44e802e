"""A whole backup or restore run as an operator starts it: locks, the run log, sweeping an interrupted
run's leftovers, the space check, the backup itself and pruning; the CLI only parses arguments and
renders results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from questboard_backup.address import STAGING, BackupId, timestamp
from questboard_backup.backup import BackupResult, run_backup
from questboard_backup.catalog import CatalogEntry, incomplete_sets
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.drill import DrillPlan, DrillReport, run_drill, scratch_folder
from questboard_backup.errors import BackupError
from questboard_backup.interrupts import stopping_cleanly
from questboard_backup.lock import SHARED_LOCK_KEY, BackupLock, StorageLock
from questboard_backup.restore import run_restore
from questboard_backup.retention import prune
from questboard_backup.runlog import run_log
from questboard_backup.sources import registry
from questboard_backup.sources.base import Component, RestoreOptions
from questboard_backup.space import check_space
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage
from questboard_backup.wiring import Wiring

logger = logging.getLogger(__name__)
#: How long a CLI run's lock object holds once the run stops renewing it (it renews it every tenth of
#: that while it runs): a run that died elsewhere than here frees the storage after this long.
SHARED_LOCK_LIFETIME_SECONDS = 3600
SHARED_LOCK_RENEWAL_SECONDS = SHARED_LOCK_LIFETIME_SECONDS / 10

#: Raises LockedError if a lock the run holds was lost; a run asks before each step that needs it.
StillLocked = Callable[[], None]


def boot_id() -> str:
    """This kernel boot's random id (Linux); elsewhere the host name and the boot time."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"{socket.gethostname()}-{int(time.time() - time.monotonic())}"


@contextmanager
def shared_locks(storages: Sequence[Storage], local: LocalStorage, holder: str) -> Iterator[StillLocked]:
    """The lock object of each shared storage (S3), which the serverless workflow and other hosts with
    the same BACKUP_HOSTNAME take too: the run and its sweep of leftovers are alone there. Each is
    renewed in the background while the run holds it; the ``StillLocked`` yielded checks none was lost.
    A lock left by an earlier run of this BACKUP_DIR since this machine booted is taken over at once:
    the flock held here proves it dead. The instance names the boot too, since that proof holds only
    for this kernel: a host cloned from a snapshot of this one, or sharing BACKUP_DIR over NFS, has
    the same folder id and must wait for the lock to expire like anyone else."""
    shared = [storage for storage in storages if not isinstance(storage, LocalStorage)]
    instance = f"{local.instance_id()}/{boot_id()}" if shared else None
    taken: list[tuple[StorageLock, str]] = []
    with ExitStack() as renewals:
        try:
            kept = []
            for storage in shared:
                lock = StorageLock(storage, SHARED_LOCK_KEY, SHARED_LOCK_LIFETIME_SECONDS, instance)
                taken.append((lock, lock.acquire(holder)))
                kept.append(renewals.enter_context(lock.keep(taken[-1][1], SHARED_LOCK_RENEWAL_SECONDS)))

            def still_locked() -> None:
                for renewal in kept:
                    renewal.check()

            yield still_locked
        finally:
            renewals.close()  # stop renewing before releasing
            _release(taken)


def _release(taken: Sequence[tuple[StorageLock, str]]) -> None:
    for lock, token in taken:
        try:
            if not lock.release(token):
                logger.warning("a lock was no longer this run's at release lock=%s", SHARED_LOCK_KEY)
        except BackupError as error:  # it expires; the next run here takes it over at once
            logger.warning("could not release a lock: %s", error)


def sweep_staging(local: LocalStorage) -> None:
    """Remove what interrupted runs left in BACKUP_DIR's staging folder; the caller holds the BACKUP_DIR
    lock, which every run writing there takes."""
    for leftover in local.clear_staging():
        logger.warning("removed leftovers of an interrupted run location=%s", local.root / STAGING / leftover)


def sweep_leftovers(
    local: LocalStorage, storages: Sequence[Storage], still_locked: StillLocked = lambda: None
) -> None:
    """Remove what interrupted runs left (sets without a manifest, unfinished uploads, staging); the
    caller holds every lock, so nothing in progress can be among them, and ``still_locked`` confirms
    it before each storage is swept. A complete set in a tier is never among them."""
    sweep_staging(local)
    for storage in storages:
        still_locked()
        for prefix in incomplete_sets(storage):
            logger.warning("removing leftovers of an interrupted run location=%s", storage.uri(prefix))
            storage.delete_prefix(prefix)


@dataclass(frozen=True)
class BackupRun:
    result: BackupResult
    log: Path


@dataclass(frozen=True)
class BackupAttempt:
    """What a failed ``backup_now`` was doing, carried by the error it raised (``attempt_of``): the
    backup id it stood for and its run log (None when it failed before opening one)."""

    kind: str
    backup_id: str
    log: Path | None


_ATTEMPT_ATTRIBUTE = "questboard_backup_attempt"


def attempt_of(error: BaseException) -> BackupAttempt | None:
    """The backup attempt ``error`` ended, when ``backup_now`` raised it; None for any other error."""
    attempt = getattr(error, _ATTEMPT_ATTRIBUTE, None)
    return attempt if isinstance(attempt, BackupAttempt) else None


def backup_now(wiring: Wiring, kind: str, keep_local: bool = True) -> BackupRun:
    """Take a backup now: the BACKUP_DIR lock, the run log, the space check (when BACKUP_DIR keeps a
    copy), the shared locks, the sweep, the backup to every storage, then local pruning. The caller has
    checked that backups are enabled. Whatever it raises carries a ``BackupAttempt`` (``attempt_of``)."""
    now = datetime.now(UTC)
    backup_id = str(BackupId.at(kind, now))
    logs: list[Path] = []  # the run log, once opened
    try:
        return _take_backup(wiring, kind, keep_local, now, logs)
    except BaseException as error:
        with contextlib.suppress(AttributeError, TypeError):  # an exception type that takes no attributes
            setattr(error, _ATTEMPT_ATTRIBUTE, BackupAttempt(kind, backup_id, logs[0] if logs else None))
        raise


def _take_backup(wiring: Wiring, kind: str, keep_local: bool, now: datetime, logs: list[Path]) -> BackupRun:
    settings = wiring.settings
    wrapper = wiring.passphrase_wrapper()
    wrapper.prepare()
    components = wiring.sources(wiring.endpoints())
    local = wiring.local_storage()
    local.ensure_layout()
    storages = wiring.storages(local=keep_local)
    holder = f"{kind} backup, host {socket.gethostname()} pid {os.getpid()}"
    with (
        BackupLock(settings.backup_dir, f"{kind} backup"),
        run_log(local.root / "logs", "backup", now) as log,
    ):
        logs.append(log)
        # A dead run's staging goes first: the space it holds is the next set's.
        sweep_staging(local)
        if keep_local:
            with _failure_recorded(wiring, kind, now):
                check_space(local, kind, settings.space_margin)
        with shared_locks(storages, local, holder) as still_locked:
            sweep_leftovers(local, storages, still_locked)
            with _failure_recorded(wiring, kind, now):
                result = run_backup(
                    kind,
                    components,
                    storages,
                    wrapper,
                    settings.hostname,
                    settings.schedule_zone,
                    now,
                    settings.compression_level,
                    still_locked,
                )
            _catalog_success(wiring, result)
            if keep_local:
                prune(local, now, wrapper, settings.retention_days)
    return BackupRun(result, log)


@contextmanager
def _failure_recorded(wiring: Wiring, kind: str, now: datetime) -> Iterator[None]:
    try:
        yield
    except BackupError as error:
        _catalog_failure(wiring, kind, str(BackupId.at(kind, now)), type(error).__name__)
        raise


def _catalog_success(wiring: Wiring, result: BackupResult) -> None:
    """A run that stored to S3 records itself in the status catalog (BACKUP_CATALOG_TABLE), as the
    workflow's Publish does, so the admin API's status sees CLI backups too."""
    settings = wiring.settings
    s3_locations = [location for location in result.locations if location.startswith("s3://")]
    if settings.catalog_table and s3_locations:
        from questboard_backup.aws.catalog_table import CatalogTable

        table = CatalogTable(settings.catalog_table, settings.hostname, wiring.client("dynamodb"))
        try:  # the backup is stored: a stale index is a warning, not a failed backup
            table.record_success(result.manifest, s3_locations[0])
        except BackupError as problem:
            logger.warning("the status catalog did not record the backup: %s", problem)


def _catalog_failure(wiring: Wiring, kind: str, backup_id: str, error: str) -> None:
    settings = wiring.settings
    if not (settings.catalog_table and settings.s3_bucket):
        return
    from questboard_backup.aws.catalog_table import CatalogTable

    try:  # the catalog must not hide the backup's own error
        CatalogTable(settings.catalog_table, settings.hostname, wiring.client("dynamodb")).record_failure(
            kind, backup_id, error
        )
    except BackupError as problem:
        logger.warning("the status catalog did not record the failure: %s", problem)


def restore_now(
    wiring: Wiring,
    entry: CatalogEntry,
    wrapper: KeyWrapper,
    targets: Mapping[str, Component],
    files_root: Path | None,
    only: Sequence[str] | None,
) -> dict[str, Any]:
    """Restore ``entry`` into ``targets`` with a run log (when BACKUP_DIR is writable), then check that
    every restored server (PostgreSQL, Redis) answers: the seed's first post-restore check."""
    now = datetime.now(UTC)
    options = RestoreOptions(timestamp=timestamp(now), files_root=files_root)
    backup_dir = wiring.settings.backup_dir
    logs = backup_dir / "logs"
    writable = os.access(backup_dir, os.W_OK)
    with (
        # One run at a time per BACKUP_DIR: a backup or another restore here is refused meanwhile.
        BackupLock(backup_dir, "restore") if writable else nullcontext(),
        run_log(logs, "restore", now) if writable else nullcontext(),
        stopping_cleanly(),
    ):
        report = run_restore(entry, wrapper, targets, options, only)
        for name in report["components"]:
            if registry.spec(name).answers_connections:
                targets[name].check()
    return report


def drill_now(
    wiring: Wiring,
    entry: CatalogEntry,
    wrapper: KeyWrapper,
    targets: Mapping[str, Component],
    production: Mapping[str, Component | None],
    plan: DrillPlan,
) -> DrillReport:
    """One restore drill of ``entry`` into the drill ``targets`` (``drill.run_drill``), with the lock a
    restore takes and a run log ("drill"); files go beneath a scratch folder of the drill's own."""
    now = datetime.now(UTC)
    stamp = timestamp(now)
    root = wiring.settings.drill_files_root
    options = RestoreOptions(timestamp=stamp, files_root=scratch_folder(root, stamp) if root else None)
    backup_dir = wiring.settings.backup_dir
    writable = os.access(backup_dir, os.W_OK)
    with (
        BackupLock(backup_dir, "drill") if writable else nullcontext(),
        run_log(backup_dir / "logs", "drill", now) if writable else nullcontext(),
        stopping_cleanly(),
    ):
        return run_drill(entry, wrapper, targets, production, options, plan)
