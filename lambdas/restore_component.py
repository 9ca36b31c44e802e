"""Restore step 3 (once per component, PostgreSQL first): restore one component into its target."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import RestoreStep, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import entry_for, options_for, target_for
from questboard_backup.errors import ConfigurationError
from questboard_backup.restore import run_restore


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(RestoreStep, event)
    if request.component is None:
        raise ConfigurationError("invalid task input: component: required")
    deps = dependencies()
    state = request.restore
    report = run_restore(
        entry_for(deps, state),
        deps.key_wrapper(),
        {request.component: target_for(deps, state, request.component)},
        options_for(state),
        only=[request.component],
    )
    return {"component": request.component, **report["components"][request.component]}
