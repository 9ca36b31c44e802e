"""The restore failure path: count it and alert (targets were left as they were by the engine)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import FailureOutput, FailureRequest, parse
from lambdas.observability import logger, metrics, tracer


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(FailureRequest, event)
    deps = dependencies()
    metrics.add_metric(name="restore_failure_total", unit=MetricUnit.Count, value=1)
    backup_id = str((request.restore or {}).get("backup_id", "(unresolved)"))
    logger.error("restore failed", extra={"error": request.error.Error})
    alerted = deps.alert_failure("restore of", backup_id, request.error.Error, request.error.Cause)
    return FailureOutput.model_validate(alerted).model_dump()
