"""Backup step 3: write the manifest, last, into the staging prefix."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import BackupStep, SealOutput, parse
from lambdas.observability import logger, metrics, tracer
from questboard_backup.backup import BackupPlan, seal_backup
from questboard_backup.manifest import ComponentEntry


@logger.inject_lambda_context(correlation_id_path="backup.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(BackupStep, event)
    deps = dependencies()
    plan = BackupPlan.from_dict(request.backup.plan_dict())
    data_key = deps.key_wrapper().unwrap(plan.key, plan.backup_id)
    entries = [ComponentEntry.from_dict(entry) for entry in request.components if not entry.get("skipped")]
    manifest = seal_backup(plan, entries, [deps.storage()], data_key)
    return SealOutput(backup_id=manifest.backup_id, stored_bytes=manifest.stored_bytes).model_dump()
