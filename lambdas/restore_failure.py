"""The restore failure path: undo this restore on every target (its staging, any unsettled swap, a
swap killed half way) unless Swap had already put every component in place, count it and alert with
what was done."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import FailureOutput, FailureRequest, RestoreState, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import configured_targets, options_for, record_restore
from questboard_backup.errors import BackupError
from questboard_backup.restore import settle_all, undo_all


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(FailureRequest, event)
    deps = dependencies()
    metrics.add_metric(name="restore_failure_total", unit=MetricUnit.Count, value=1)
    backup_id = str((request.restore or {}).get("backup_id", "(unresolved)"))
    logger.error("restore failed", extra={"error": request.error.Error})
    undone: list[str] = []
    # Nothing of this restore was staged before Validate succeeded (and took the lock): a restore
    # refused there, by the lock or a check, must not undo another's run of the same second.
    if request.restore is not None and request.validated is not None:
        state = parse(RestoreState, request.restore)
        try:
            targets = configured_targets(deps, state)
            if request.swapped is not None:
                # Every component was swapped in: a later step (Verify, Report) failed. Going back now
                # would undo some and not others; finish forwards instead and say so.
                settle_all(targets, options_for(state))
                undone = ["nothing undone: every component was restored; check the targets"]
            else:
                undone = undo_all(targets, options_for(state))
        except BackupError as error:  # no target could be built (a malformed secret): alert all the same
            undone = [f"nothing undone: {error}"]
    if request.validated is not None and request.validated.get("lock_token"):
        deps.lock().release(str(request.validated["lock_token"]))  # after the undo: it ran alone
    record_restore(False)
    cause = request.error.Cause + "".join(f"\n{line}" for line in undone)
    alerted = deps.alert_failure("restore of", backup_id, request.error.Error, cause)
    return FailureOutput.model_validate({**alerted, "undone": undone}).model_dump()
