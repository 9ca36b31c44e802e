"""Backup step 4: read the staged set back, authenticate every byte, compare sizes and hashes."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import BackupStep, VerifyOutput, parse
from lambdas.observability import logger, metrics, tracer
from questboard_backup.address import SetAddress
from questboard_backup.catalog import CatalogEntry
from questboard_backup.restore import verify_backup


@logger.inject_lambda_context(correlation_id_path="backup.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(BackupStep, event)
    deps = dependencies()
    storage = deps.storage()
    address = SetAddress(request.backup.hostname, request.backup.tier, request.backup.backup_id)
    staged = CatalogEntry(storage, address.staging_prefix(storage.stage_in_temp), None)
    report = verify_backup(staged, deps.key_wrapper())
    return VerifyOutput(checked=report.checked).model_dump()
