"""Hourly: count the staged objects older than a day (``questboard_backup.aws.staging_watch``) and
emit them as metrics; the StagingOlderThanADay alarm watches ``staging_stale_objects``."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import event_time
from lambdas.observability import logger, metrics, tracer
from questboard_backup.aws.staging_watch import stale_staging


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    found = stale_staging(dependencies().storage(), event_time(event.get("time"), "time"))
    metrics.add_metric(name="staging_stale_objects", unit=MetricUnit.Count, value=found.objects)
    metrics.add_metric(name="staging_stale_bytes", unit=MetricUnit.Bytes, value=found.stored_bytes)
    if found.objects:
        logger.warning("staged objects older than a day", extra={"objects": found.objects})
    return {
        "stale_objects": found.objects,
        "stale_bytes": found.stored_bytes,
        "oldest": found.oldest.isoformat() if found.oldest else None,
    }
