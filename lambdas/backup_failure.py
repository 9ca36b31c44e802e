"""The backup failure path: count the failure, alert, delete the staged objects, release the lock."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import FailureOutput, FailureRequest, parse
from lambdas.observability import logger, metrics, tracer
from questboard_backup.backup import BackupPlan, discard_backup
from questboard_backup.errors import BackupError


@logger.inject_lambda_context(correlation_id_path="backup.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(FailureRequest, event)
    deps = dependencies()
    metrics.add_metric(name="backup_failure_total", unit=MetricUnit.Count, value=1)
    backup_id = request.backup.backup_id if request.backup else request.backup_id or "(not started)"
    kind = request.backup.type if request.backup else request.type
    logger.error("backup failed", extra={"error": request.error.Error})
    # Clean up before alerting, so an SNS outage cannot leave staged objects or the lock behind.
    if request.backup is not None:
        discard_backup(BackupPlan.from_dict(request.backup.plan_dict()), [deps.storage()])
        deps.lock().release(request.backup.lock_token)
    table = deps.catalog_table()
    if table is not None and kind is not None:
        try:  # the status catalog must not stand between a failure and its alert
            table.record_failure(kind, backup_id, request.error.Error)
        except BackupError as error:
            logger.error("the status catalog did not record the failure", extra={"problem": str(error)})
    alerted = deps.alert_failure("backup", backup_id, request.error.Error, request.error.Cause)
    return FailureOutput.model_validate(alerted).model_dump()
