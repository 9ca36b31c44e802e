"""Backup step 5: move the verified set from staging into its tier, tagged for lifecycle expiry, once
the lock is confirmed still this execution's (renewed: a lost lock refuses the promote)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import BackupStep, PromoteOutput, parse
from lambdas.observability import logger, metrics, tracer
from questboard_backup.backup import BackupPlan, promote_backup


@logger.inject_lambda_context(correlation_id_path="backup.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(BackupStep, event)
    deps = dependencies()
    deps.lock().renew(request.backup.lock_token)
    (location,) = promote_backup(BackupPlan.from_dict(request.backup.plan_dict()), [deps.storage()])
    return PromoteOutput(location=location).model_dump()
