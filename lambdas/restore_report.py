"""Restore step 6: release the lock Validate took and record the successful restore (metric and a
summary log line). In a drill, first the SQL checks, the measured RTO and the cleanup of the drill
targets; the drill's metrics instead of a restore's, and an alert when it was slower than the target."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import Dependencies, dependencies
from lambdas.models import ReportOutput, ReportRequest, RestoreState, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import configured_targets, entry_for, options_for, record_drill, record_restore
from questboard_backup import drill
from questboard_backup.address import parse_timestamp
from questboard_backup.restore import load_checked_manifest


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(ReportRequest, event)
    deps = dependencies()
    state = request.restore
    drilled = [str(name) for name in request.validated.get("components", [])]
    report = finish_drill(deps, state, drilled) if state.drill else None
    released = deps.lock().release(str(request.validated.get("lock_token", "")))
    if not released:
        logger.warning("restore lock was not held any more", extra={"backup_id": state.backup_id})
    if report is None:
        metrics.add_metric(name="restore_success_total", unit=MetricUnit.Count, value=1)
        record_restore(True)
        logger.info("restore complete", extra={"backup_id": state.backup_id})
    else:
        emit_drill(report)
        if report.over_target:
            message = drill.over_target_message(report)
            deps.alert_failure("restore drill of", state.backup_id, "RtoTargetExceeded", message)
    return ReportOutput(
        restored=state.backup_id,
        targets=state.targets.model_dump(),
        drill=report.as_dict() if report is not None else None,
    ).model_dump()


def finish_drill(deps: Dependencies, state: RestoreState, drilled: list[str]) -> drill.DrillReport:
    """The drill's SQL checks (a failing one fails the drill: the failure path cleans up), its measured
    RTO (from Resolve's start to now), then the cleanup of its targets."""
    manifest, _ = load_checked_manifest(entry_for(deps, state), deps.key_wrapper())
    targets = configured_targets(deps, state)
    report = drill.DrillReport(
        manifest.backup_id,
        drilled,
        [c.name for c in manifest.components if c.name not in drilled],
        rto_target_seconds=deps.settings.drill_rto_seconds,
    )
    checked = {name: targets[name] for name in drilled if name in targets}
    report.checks = drill.run_checks(checked, deps.settings.drill_checks)
    started = parse_timestamp(state.timestamp)
    report.seconds = max((datetime.now(UTC) - started).total_seconds(), 0.001)
    report.cleanup = drill.discard_all(manifest, targets, options_for(state))
    logger.info("restore drill verified", extra={"backup_id": state.backup_id, "rto_seconds": report.seconds})
    return report


def emit_drill(report: drill.DrillReport) -> None:
    """The drill's metrics (EMF) and its outcome in the status catalog."""
    metrics.add_metric(
        name="restore_drill_last_success_timestamp", unit=MetricUnit.Seconds, value=time.time()
    )
    metrics.add_metric(name="restore_drill_duration_seconds", unit=MetricUnit.Seconds, value=report.seconds)
    record_drill(True, report.seconds)
