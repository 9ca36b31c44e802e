"""Restore step 2: authenticate the manifest, check every component is there, read Redis/files/config through."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import RestoreStep, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import entry_for
from questboard_backup.restore import load_checked_manifest, read_through, select_components, stream_opener


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(RestoreStep, event)
    deps = dependencies()
    entry = entry_for(deps, request.restore)
    manifest, data_key = load_checked_manifest(entry, deps.key_wrapper())
    selected = select_components(manifest, request.restore.only)
    for component in selected:
        if component.name != "postgres":  # PostgreSQL is checked in its staging database before the swap
            read_through(stream_opener(entry, manifest, component, data_key), component)
    return {"components": [component.name for component in selected]}
