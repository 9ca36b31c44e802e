"""Backup step 7: release the lock taken by Prepare."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import BackupStep, ReleaseOutput, parse
from lambdas.observability import logger, metrics, tracer


@logger.inject_lambda_context(correlation_id_path="backup.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(BackupStep, event)
    return ReleaseOutput(released=dependencies().lock().release(request.backup.lock_token)).model_dump()
