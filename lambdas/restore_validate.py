"""Restore step 2: authenticate the manifest, check every component is there, read Redis/files/config through."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import RestoreStep, ValidateOutput, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import entry_for
from questboard_backup.restore import authenticate_streams, load_checked_manifest, select_components


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(RestoreStep, event)
    deps = dependencies()
    entry = entry_for(deps, request.restore)
    manifest, data_key = load_checked_manifest(entry, deps.key_wrapper())
    selected = select_components(manifest, request.restore.only)
    # The components are restored one invocation each, so all are authenticated here, before any.
    authenticate_streams(entry, manifest, data_key, selected)
    return ValidateOutput(components=[component.name for component in selected]).model_dump()
