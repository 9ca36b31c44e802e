"""Restore step 3 (once per component, PostgreSQL first): stage one component beside its target and
check it there; nothing is swapped in until every component is staged (restore_swap)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import RestoreStep, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import entry_for, options_for, target_for
from questboard_backup.errors import ConfigurationError
from questboard_backup.restore import check_fits, load_checked_manifest, select_components, stage_component


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(RestoreStep, event)
    if request.component is None:
        raise ConfigurationError("invalid task input: component: required")
    deps = dependencies()
    state = request.restore
    entry = entry_for(deps, state)
    manifest, data_key = load_checked_manifest(entry, deps.key_wrapper())
    (component,) = select_components(manifest, [request.component])
    check_fits([component], context.get_remaining_time_in_millis() / 1000, "this invocation's time left")
    target = target_for(deps, state, request.component)
    report = stage_component(entry, manifest, data_key, component, target, options_for(state))
    return {"component": request.component, **report}
