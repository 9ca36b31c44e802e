"""Prometheus metrics of the backups, rendered with prometheus_client in the text format (0.0.4): the
guide's four (``backup_last_success_timestamp``, ``backup_duration_seconds``, ``backup_size_bytes``,
``backup_failure_total``) and what an operator needs beside them. One renderer for every path: the
admin API's ``/metrics`` (from the status catalog), the cron host's node_exporter textfile and its
Pushgateway push (from the host's metrics state, ``questboard_backup.metrics_state``).

No sample carries a timestamp (the scrape's time is the sample's); counters come from persisted,
atomically incremented state, so they only ever grow, whatever process renders them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest

from questboard_backup.address import KINDS, TIERS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# No `*_created` series: a counter's value is what matters, and it outlives every process.
disable_created_metrics()


@dataclass(frozen=True)
class LastRun:
    finished: float  # unix seconds
    seconds: float
    stored_bytes: int


@dataclass
class BackupMetrics:
    """Everything one exposition says about one host."""

    hostname: str
    last_success: dict[str, LastRun] = field(default_factory=dict)  # by type
    last_attempt: dict[str, float] = field(default_factory=dict)  # by type, unix seconds
    failures: dict[str, int] = field(default_factory=dict)  # by type, monotonic
    running: bool | None = None
    tiers: dict[str, tuple[int, int]] = field(default_factory=dict)  # tier -> (sets, stored bytes)
    dir_space: tuple[int, int] | None = None  # BACKUP_DIR's filesystem: (free, total) bytes
    restore_last_success: float | None = None
    restore_failures: int | None = None
    #: Restore drills: when the last one succeeded, its measured RTO (start to verified) and failures.
    drill_last_success: float | None = None
    drill_duration: float | None = None
    drill_failures: int | None = None


def _unix(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def from_catalog(hostname: str, summary: Mapping[str, Any], running: bool) -> BackupMetrics:
    """The metrics the status catalog's summary item holds (what the API's status reads)."""
    metrics = BackupMetrics(hostname=hostname, running=running)
    for kind in KINDS:
        success = summary.get(f"last_success_{kind}")
        if success:
            finished = _unix(success.get("finished_at"))
            if finished is not None:
                metrics.last_success[kind] = LastRun(
                    finished, float(success.get("duration_seconds", 0)), int(success.get("stored_bytes", 0))
                )
        failure = summary.get(f"last_failure_{kind}")
        attempts = [run.finished for run in [metrics.last_success.get(kind)] if run]
        if failure and _unix(failure.get("at")) is not None:
            attempts.append(_unix(failure.get("at")) or 0.0)
        if attempts:
            metrics.last_attempt[kind] = max(attempts)
        metrics.failures[kind] = int(summary.get(f"failures_{kind}", 0))
    metrics.restore_last_success = _unix(summary.get("restore_last_success"))
    metrics.restore_failures = int(summary.get("restore_failures", 0))
    metrics.drill_last_success = _unix(summary.get("drill_last_success"))
    if summary.get("drill_duration_seconds") is not None:
        metrics.drill_duration = float(summary["drill_duration_seconds"])
    metrics.drill_failures = int(summary.get("drill_failures", 0))
    for tier, usage in (summary.get("tiers") or {}).items():
        metrics.tiers[str(tier)] = (int(usage.get("sets", 0)), int(usage.get("stored_bytes", 0)))
    return metrics


def render(metrics: BackupMetrics) -> bytes:
    """The exposition, text format 0.0.4; every type's counter present (0 until a failure)."""
    registry = CollectorRegistry(auto_describe=False)
    host = metrics.hostname
    kind_labels = ["type", "hostname"]

    def gauge(name: str, help_text: str, labels: list[str]) -> Gauge:
        return Gauge(name, help_text, labels, registry=registry)

    success = gauge(
        "backup_last_success_timestamp", "Unix time the last successful backup finished.", kind_labels
    )
    duration = gauge("backup_duration_seconds", "Duration of the last successful backup.", kind_labels)
    size = gauge(
        "backup_size_bytes",
        "Stored (compressed, encrypted) bytes of the last successful backup.",
        kind_labels,
    )
    attempt = gauge(
        "backup_last_attempt_timestamp", "Unix time the last backup ended, successful or not.", kind_labels
    )
    failures = Counter("backup_failure", "Backups that failed.", kind_labels, registry=registry)
    for kind, run in metrics.last_success.items():
        success.labels(kind, host).set(run.finished)
        duration.labels(kind, host).set(run.seconds)
        size.labels(kind, host).set(run.stored_bytes)
    for kind, moment in metrics.last_attempt.items():
        attempt.labels(kind, host).set(moment)
    for kind in KINDS:
        failures.labels(kind, host).inc(metrics.failures.get(kind, 0))
    if metrics.running is not None:
        gauge("backup_running", "1 while a backup runs.", ["hostname"]).labels(host).set(int(metrics.running))
    if metrics.tiers:
        stored = gauge(
            "backup_stored_bytes", "Stored bytes of the retained sets of a tier.", ["tier", "hostname"]
        )
        sets = gauge("backup_sets", "Retained sets of a tier.", ["tier", "hostname"])
        for tier in TIERS:
            count, stored_bytes = metrics.tiers.get(tier, (0, 0))
            stored.labels(tier, host).set(stored_bytes)
            sets.labels(tier, host).set(count)
    if metrics.dir_space is not None:
        free, total = metrics.dir_space
        gauge("backup_dir_free_bytes", "Free bytes of BACKUP_DIR's filesystem.", ["hostname"]).labels(
            host
        ).set(free)
        gauge("backup_dir_size_bytes", "Size of BACKUP_DIR's filesystem.", ["hostname"]).labels(host).set(
            total
        )
    if metrics.restore_last_success is not None:
        gauge(
            "backup_restore_last_success_timestamp", "Unix time the last restore succeeded.", ["hostname"]
        ).labels(host).set(metrics.restore_last_success)
    if metrics.restore_failures is not None:
        Counter("backup_restore_failure", "Restores that failed.", ["hostname"], registry=registry).labels(
            host
        ).inc(metrics.restore_failures)
    if metrics.drill_last_success is not None:
        gauge(
            "restore_drill_last_success_timestamp",
            "Unix time the last restore drill was verified.",
            ["hostname"],
        ).labels(host).set(metrics.drill_last_success)
    if metrics.drill_duration is not None:
        gauge(
            "restore_drill_duration_seconds",
            "The last successful restore drill's time from start to verified: the measured RTO.",
            ["hostname"],
        ).labels(host).set(metrics.drill_duration)
    if metrics.drill_failures is not None:
        Counter(
            "restore_drill_failure", "Restore drills that failed.", ["hostname"], registry=registry
        ).labels(host).inc(metrics.drill_failures)
    return generate_latest(registry)
