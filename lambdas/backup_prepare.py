"""Backup step 1: refuse when disabled, take the lock, choose id and tier, create the data key; refuse
an id that already has a complete set (a backup id is never reused)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import Dependencies, dependencies
from lambdas.models import BackupRequest, PrepareOutput, parse
from lambdas.observability import logger, metrics, tracer
from questboard_backup import runtime
from questboard_backup.backup import plan_backup, refuse_existing
from questboard_backup.catalog import pointed_manifest
from questboard_backup.errors import BackupDisabledError


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(BackupRequest, event)
    deps = dependencies()
    if not deps.settings.enabled:
        raise BackupDisabledError("backups are disabled (BACKUP_ENABLED=false)")
    token = deps.lock().acquire(f"{request.type} backup, request {context.aws_request_id}")
    try:
        plan, _data_key = plan_backup(
            request.type,
            deps.settings.hostname,
            deps.key_wrapper(),
            deps.settings.schedule_zone,
            backup_id=request.backup_id,
        )
        refuse_existing(plan, [deps.storage()])
        where = dump_runtimes(deps)
    except BaseException:
        deps.lock().release(token)
        raise
    logger.set_correlation_id(plan.backup_id)
    logger.info("backup planned", extra={"tier": plan.tier, "runtime": where})
    return PrepareOutput.model_validate(
        {"backup": {**plan.to_dict(), "lock_token": token}, "runtime": where}
    ).model_dump()


def dump_runtimes(deps: Dependencies) -> dict[str, str]:
    """Where each component that may leave Lambda is dumped: projected from the database's size and
    the newest set's dump throughput, unless the stack forces a runtime (or deployed no Fargate path)."""
    mode = deps.settings.component_runtime
    found: dict[str, str] = {}
    for name in sorted(runtime.FARGATE_COMPONENTS):
        seconds = None
        component = deps.component(name) if mode == "auto" else None
        if component is not None and hasattr(component, "database_bytes"):
            history = runtime.last_dump(pointed_manifest(deps.storage()), name)
            seconds = runtime.project_dump(component.database_bytes(), history)
        choice = runtime.choose(name, seconds, deps.settings.dump_timeout_seconds, mode)
        logger.info(
            "dump runtime chosen",
            extra={"component": name, "runtime": choice.runtime, "reason": choice.reason},
        )
        found[name] = choice.runtime
    return found
