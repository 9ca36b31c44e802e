"""Backup step 2 (one per component, in parallel): stream the component into the staging prefix."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import DumpOutput, DumpRequest, parse
from lambdas.observability import logger, metrics, tracer
from questboard_backup.backup import BackupPlan, dump_component
from questboard_backup.progress import DeadlineWriter

#: Stop this long before the Lambda timeout, leaving time to abort the upload and report.
SAFETY_SECONDS = 45


class _DeadlineComponent:
    """Wraps a source so its dump writes through a DeadlineWriter."""

    def __init__(self, inner: Any, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline
        self.name = inner.name
        self.parallel_streams = inner.parallel_streams

    def check(self) -> None:
        self._inner.check()

    def dump(self, out: Any, open_part: Any = None) -> dict[str, Any]:
        def report(written: int) -> None:
            logger.info("dump progress", extra={"component": self.name, "raw_bytes": written})

        def guarded(stream: Any) -> DeadlineWriter:
            return DeadlineWriter(stream, self._deadline, f"{self.name} dump", report)

        def open_guarded_part() -> DeadlineWriter:
            return guarded(open_part())

        return dict(self._inner.dump(guarded(out), open_guarded_part if open_part is not None else None))


@logger.inject_lambda_context(correlation_id_path="backup.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(DumpRequest, event)
    deps = dependencies()
    component = deps.component(request.component)
    if component is None:
        logger.info("component not configured; skipped", extra={"component": request.component})
        return DumpOutput(name=request.component, skipped=True).model_dump(exclude_none=True)
    plan = BackupPlan.from_dict(request.backup.plan_dict())
    data_key = deps.key_wrapper().unwrap(plan.key, plan.backup_id)
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - SAFETY_SECONDS
    entry = dump_component(
        plan,
        _DeadlineComponent(component, deadline),
        [deps.storage()],
        data_key,
        deps.settings.compression_level,
    )
    body = asdict(entry)
    DumpOutput.model_validate(body)  # the documented contract; the entry itself goes on unchanged
    return body
