"""What the CLI does after each backup or restore, whatever its outcome: the host's metrics state,
the node_exporter textfile and the Pushgateway (``host_metrics``). None of it may change the run's
exit code or hide its error: a problem here is a warning."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from questboard_backup.host_metrics import MetricsState, export
from questboard_backup.operations import BackupRun
from questboard_backup.settings import Settings

logger = logging.getLogger(__name__)


def after_backup(settings: Settings, kind: str, started: datetime, run: BackupRun | None) -> None:
    """``run`` is None when the backup failed (or was interrupted). Nothing is recorded where no
    BACKUP_DIR exists yet: a run refused before any work creates nothing."""
    if not settings.backup_dir.is_dir():
        return
    finished = datetime.now(UTC)
    try:
        state = MetricsState(settings.backup_dir)
        if run is None:
            state.record_backup(kind, False, finished, (finished - started).total_seconds(), 0)
        else:
            manifest = run.result.manifest
            state.record_backup(kind, True, finished, run.result.seconds, manifest.stored_bytes)
    except Exception as error:  # noqa: BLE001 - metrics never decide a run's outcome
        logger.warning("backup metrics not recorded in %s: %s", settings.backup_dir, error)
        return
    export(settings.backup_dir, settings.hostname, settings.metrics_textfile, settings.pushgateway_url)


def after_restore(settings: Settings, ok: bool) -> None:
    _after_run(settings, "restore", lambda state, now: state.record_restore(ok, now))


def after_drill(settings: Settings, ok: bool, seconds: float) -> None:
    """A drill's outcome in the host's metrics: ``restore_drill_last_success_timestamp``,
    ``restore_drill_duration_seconds`` (the measured RTO) and ``restore_drill_failure_total``."""
    _after_run(settings, "drill", lambda state, now: state.record_drill(ok, now, seconds))


def _after_run(settings: Settings, what: str, record: Callable[[MetricsState, datetime], None]) -> None:
    if not settings.backup_dir.is_dir():  # a recovery host restoring from S3 keeps no state
        return
    try:
        record(MetricsState(settings.backup_dir), datetime.now(UTC))
    except Exception as error:  # noqa: BLE001 - metrics never decide a run's outcome
        logger.warning("%s metrics not recorded in %s: %s", what, settings.backup_dir, error)
        return
    export(settings.backup_dir, settings.hostname, settings.metrics_textfile, settings.pushgateway_url)
