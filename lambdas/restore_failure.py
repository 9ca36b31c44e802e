"""The restore failure path: undo this restore on every target (its staging, any unsettled swap, a
swap killed half way) unless Swap had already put every component in place, count it and alert with
what was done."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import Dependencies, dependencies
from lambdas.models import FailureOutput, FailureRequest, RestoreState, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import configured_targets, entry_for, options_for, record_drill, record_restore
from questboard_backup import drill
from questboard_backup.errors import BackupError
from questboard_backup.restore import load_checked_manifest, settle_all, undo_all
from questboard_backup.sources.base import Component


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(FailureRequest, event)
    deps = dependencies()
    drilling = bool((request.restore or {}).get("drill"))
    if drilling:
        metrics.add_metric(name="restore_drill_failure_total", unit=MetricUnit.Count, value=1)
    else:
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
            if state.drill:
                undone += discard_drill(deps, state, targets)
        except BackupError as error:  # no target could be built (a malformed secret): alert all the same
            undone = [f"nothing undone: {error}"]
    if request.validated is not None and request.validated.get("lock_token"):
        deps.lock().release(str(request.validated["lock_token"]))  # after the undo: it ran alone
    if drilling:
        record_drill(False, 0.0)
    else:
        record_restore(False)
    cause = request.error.Cause + "".join(f"\n{line}" for line in undone)
    what = "restore drill of" if drilling else "restore of"
    alerted = deps.alert_failure(what, backup_id, request.error.Error, cause)
    return FailureOutput.model_validate({**alerted, "undone": undone}).model_dump()


def discard_drill(deps: Dependencies, state: RestoreState, targets: dict[str, Component]) -> list[str]:
    """A failed drill's targets cleaned as after a successful one. What is flushed is read from the
    manifest only once it authenticates; without it, only the drill database is dropped."""
    try:
        manifest, _ = load_checked_manifest(entry_for(deps, state), deps.key_wrapper())
    except BackupError as error:
        logger.error("drill cleanup without the manifest", extra={"problem": str(error)})
        manifest = None
    return drill.discard_all(manifest, targets, options_for(state))
