"""Restore step 2, before anything is touched: take the shared lock, authenticate the manifest, check every object is there,
refuse by name a component without a target here, check every target can be restored into, refuse a
restore whose estimate does not fit in one staging invocation, and clear what earlier restores left."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import Dependencies, dependencies
from lambdas.models import RestoreStep, ValidateOutput, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import drill_production, entry_for, options_for, targets_for
from questboard_backup import drill, runtime
from questboard_backup.errors import ConfigurationError
from questboard_backup.manifest import ComponentEntry
from questboard_backup.restore import (
    check_fits,
    check_targets,
    clear_leftovers,
    estimate_seconds,
    load_checked_manifest,
    select_components,
)
from questboard_backup.sources import registry


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(RestoreStep, event)
    deps = dependencies()
    state = request.restore
    # The lock backups take: a backup, or another restore, waits while this one runs. Taken first, so
    # clearing an earlier restore's leftovers never meets a restore still running.
    lock = deps.lock()
    token = lock.acquire(f"restore of {state.backup_id}, restore {state.timestamp}")
    try:
        manifest, _ = load_checked_manifest(entry_for(deps, state), deps.key_wrapper())
        only = state.only
        if state.drill:
            # Only what has a drill target is drilled, and nothing whose target resolves to production.
            drill_targets = {c.name: deps.drill_target(c.name) for c in manifest.components}
            only, _ = drill.select(manifest, drill_targets, options_for(state))
        selected = select_components(manifest, only)
        refuse_one_process_restores(selected)
        targets = targets_for(deps, state, [component.name for component in selected])
        if state.drill:
            drill.guard(manifest, targets, drill_production(deps), options_for(state))
        check_targets(selected, targets)
        where = stage_runtimes(deps, selected)
        # What stays on Lambda must fit in one staging invocation; a Fargate task has hours.
        check_fits(
            [c for c in selected if where.get(c.name) != runtime.FARGATE],
            deps.settings.restore_stage_timeout_seconds,
            "one staging invocation",
        )
        check_fits(
            [c for c in selected if where.get(c.name) == runtime.FARGATE],
            FARGATE_STAGE_SECONDS,
            "one Fargate task",
        )
        clear_leftovers(targets, options_for(state))
    except BaseException:
        lock.release(token)
        raise
    return ValidateOutput(components=list(targets), lock_token=token, runtime=where).model_dump()


#: A Fargate staging task's budget (infra/fargate.py TASK_BUDGET_SECONDS: the restore state machine's
#: 4 hours less 10 minutes).
FARGATE_STAGE_SECONDS = 4 * 3600 - 600


def stage_runtimes(deps: Dependencies, selected: list[ComponentEntry]) -> dict[str, str]:
    """Where each selected component is staged: projected from the manifest (``estimate_seconds``)
    against the staging function's limit, unless the stack forces a runtime."""
    mode = deps.settings.component_runtime
    found = {}
    for component in selected:
        seconds = estimate_seconds(component) if mode == "auto" else None
        choice = runtime.choose(component.name, seconds, deps.settings.restore_stage_timeout_seconds, mode)
        found[component.name] = choice.runtime
    return found


def refuse_one_process_restores(selected: list[ComponentEntry]) -> None:
    """A component whose restore stages in memory cannot be staged here and swapped in by another
    function: the CLI restores it (all of it in one process); the workflow refuses it by name."""
    held = [c.name for c in selected if registry.spec(c.name).restores_in_one_process]
    if held:
        rest = [c.name for c in selected if c.name not in held]
        raise ConfigurationError(
            f"{', '.join(held)} is restored with the CLI only (backup.sh restore <backup> --only {','.join(held)}); "
            f'restore the rest here with "only": {json.dumps(rest)}'
        )
