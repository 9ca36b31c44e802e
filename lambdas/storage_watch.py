"""Hourly: count the staged objects older than a day (``questboard_backup.aws.staging_watch``) and
emit them as metrics; the StagingOlderThanADay alarm watches ``staging_stale_objects``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.observability import logger, metrics, tracer
from questboard_backup.aws.staging_watch import stale_staging
from questboard_backup.errors import ConfigurationError


def _event_time(event: dict[str, Any]) -> datetime:
    """The scheduled event's time (EventBridge's ``time``), else now."""
    text = event.get("time")
    if not text:
        return datetime.now(UTC)
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise ConfigurationError(f"invalid event: time: not an ISO time: {str(text)[:40]!r}") from None


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    found = stale_staging(dependencies().storage(), _event_time(event))
    metrics.add_metric(name="staging_stale_objects", unit=MetricUnit.Count, value=found.objects)
    metrics.add_metric(name="staging_stale_bytes", unit=MetricUnit.Bytes, value=found.stored_bytes)
    if found.objects:
        logger.warning("staged objects older than a day", extra={"objects": found.objects})
    return {
        "stale_objects": found.objects,
        "stale_bytes": found.stored_bytes,
        "oldest": found.oldest.isoformat() if found.oldest else None,
    }
