"""The Logger, Tracer and Metrics every handler shares (configured by POWERTOOLS_* environment variables).

Both keep secrets out of what leaves a function: every log line is redacted as it is written, and
``@tracer.capture_lambda_handler`` redacts a handler's error message before X-Ray, the Lambda runtime,
and so Step Functions' execution history and the failure alerts, see it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from questboard_backup.redaction import redact_text

SERVICE = "questboard-backup"
NAMESPACE = "QuestBoardBackup"

Handler = Callable[[Any, Any], Any]


def redacting_errors(handler: Handler) -> Handler:
    """``handler``, raising the same errors with passwords and remembered secrets left out of their
    messages. The class is kept (Step Functions matches on its name); when an error's text does not
    come from its arguments, an error of the same name carrying the redacted text is raised instead."""

    @functools.wraps(handler)
    def redacted(event: Any, context: Any) -> Any:
        try:
            return handler(event, context)
        except Exception as error:
            text = str(error)
            clean = redact_text(text)
            if clean == text:
                raise
            error.args = (clean,)
            if str(error) == clean:
                raise
            stand_in = type(type(error).__name__, (Exception,), {"__module__": type(error).__module__})
            raise stand_in(clean) from None

    # functools.wraps in the decorators outside carries it outwards: tests check every handler has it.
    setattr(redacted, "redacts_errors", True)  # noqa: B010
    return redacted


class RedactingTracer(Tracer):
    """Powertools' Tracer whose ``capture_lambda_handler`` also applies ``redacting_errors`` (inside
    the trace, so X-Ray records the redacted message too)."""

    def capture_lambda_handler(
        self,
        lambda_handler: Any = None,
        capture_response: bool | None = None,
        capture_error: bool | None = None,
    ) -> Callable[..., Any]:
        if lambda_handler is None:
            return functools.partial(
                self.capture_lambda_handler, capture_response=capture_response, capture_error=capture_error
            )
        return super().capture_lambda_handler(
            redacting_errors(lambda_handler), capture_response=capture_response, capture_error=capture_error
        )


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON lines with every string in them redacted (messages, extra fields, exceptions)."""

    def serialize(self, log: Any) -> str:
        return super().serialize(_redacted(dict(log)))


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
tracer = RedactingTracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# The engine logs through logging.getLogger("questboard_backup...."); give those records the same JSON
# format and correlation id as the handler's own lines.
copy_config_to_registered_loggers(source_logger=logger, include={"questboard_backup"})
