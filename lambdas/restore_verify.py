"""Restore step 4: the restored targets answer (row/key/file counts were checked by each component)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import RestoreStep, RestoreVerifyOutput, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import bound_target
from questboard_backup.sources import registry


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(RestoreStep, event)
    deps = dependencies()
    checked = []
    for name in request.restore.only or registry.names():
        if not registry.spec(name).answers_connections:
            continue
        target = bound_target(deps, request.restore, name)
        if target is not None:
            target.check()
            checked.append(name)
    return RestoreVerifyOutput(connectivity=checked).model_dump()
