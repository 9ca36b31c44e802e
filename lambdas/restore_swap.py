"""Restore step 4: every component is staged and checked; swap them all in, in one short step. A swap
that fails swaps back what was already swapped; none starts with too little time left."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import SwapOutput, SwapRequest, parse
from lambdas.observability import logger, metrics, tracer
from lambdas.restore_support import options_for, targets_for
from questboard_backup.restore import swap_in_all


@logger.inject_lambda_context(correlation_id_path="restore.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(SwapRequest, event)
    deps = dependencies()
    targets = targets_for(deps, request.restore, request.components)
    swapped = swap_in_all(
        targets, options_for(request.restore), lambda: context.get_remaining_time_in_millis() / 1000
    )
    return SwapOutput(components=swapped).model_dump()
