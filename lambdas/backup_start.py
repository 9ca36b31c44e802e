"""The schedules' target: start the backup state machine with an execution named after the backup id.

The id comes from the scheduled time, so a schedule delivery that is retried or duplicated names the
same execution again and Step Functions refuses the second start: starts are idempotent.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import StartRequest, event_time, parse
from lambdas.observability import logger, metrics, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(StartRequest, event)
    deps = dependencies()
    started = deps.starter().start(request.type, event_time(request.scheduled_at, "scheduled_at"))
    logger.set_correlation_id(started.backup_id)
    if not started.started:
        logger.info("backup already started for this schedule slot")
        return {"backup_id": started.backup_id, "started": False}
    return {"backup_id": started.backup_id, "started": True, "execution": started.execution_arn}
