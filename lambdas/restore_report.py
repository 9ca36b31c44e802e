"""Restore step 6: release the lock Validate took and record the successful restore (metric and a
summary log line)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import ReportOutput, ReportRequest, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import record_restore


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(ReportRequest, event)
    released = dependencies().lock().release(str(request.validated.get("lock_token", "")))
    if not released:
        logger.warning("restore lock was not held any more", extra={"backup_id": request.restore.backup_id})
    metrics.add_metric(name="restore_success_total", unit=MetricUnit.Count, value=1)
    record_restore(True)
    logger.info("restore complete", extra={"backup_id": request.restore.backup_id})
    return ReportOutput(
        restored=request.restore.backup_id, targets=request.restore.targets.model_dump()
    ).model_dump()
