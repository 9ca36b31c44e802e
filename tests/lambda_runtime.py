"""Lambda's runtime, stood in for in this process: a handler is imported and called with its event and
a context, the event and the answer pass through JSON, and an error comes back as Lambda reports it.
moto's Lambda invocations (from the Step Functions interpreter) and the local API Gateway both use it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest import mock

from moto.awslambda.models import LambdaFunction

from tests.infra.asl import PSEUDO

REGION = PSEUDO["AWS::Region"]
ACCOUNT = PSEUDO["AWS::AccountId"]


@dataclass
class FakeContext:
    function_name: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_seconds: int = 900

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


def invoke_handler(
    handler_path: str, function_name: str, timeout_seconds: int, payload: Any
) -> tuple[Any, dict[str, str] | None]:
    """Call ``module.attribute`` as Lambda would: the event and the result pass through JSON; an error
    comes back as Lambda reports it (``errorType`` is the exception's class name, ``errorMessage``)."""
    module_name, attribute = handler_path.rsplit(".", 1)
    handler = getattr(importlib.import_module(module_name), attribute)
    event = json.loads(json.dumps(payload))
    try:
        result = handler(event, FakeContext(function_name, timeout_seconds=timeout_seconds))
        return json.loads(json.dumps(result)), None
    except Exception as error:  # noqa: BLE001 - surfaces as the Lambda error, by class name, as on AWS
        return None, {"errorType": type(error).__name__, "errorMessage": str(error)}


def invoke_in_process(self: LambdaFunction, event: str | None = None) -> tuple[str, bool, str]:
    """Stand-in for moto's Docker invocation (``LambdaFunction._invoke_lambda``): the real handler."""
    payload = json.loads(event) if isinstance(event, str) and event else (event or {})
    result, error = invoke_handler(str(self.handler), self.function_name, int(self.timeout), payload)
    return (json.dumps(error), True, "") if error else (json.dumps(result), False, "")


@contextlib.contextmanager
def in_process_lambdas() -> Iterator[None]:
    """moto invokes the real handlers in this process, and Retry backoff does not really wait."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    interpreter_log = logging.getLogger("moto.stepfunctions.parser")
    level = interpreter_log.level
    interpreter_log.setLevel(logging.CRITICAL)
    # Replace the retrier module's `time`, not the global time.sleep everything else uses.
    no_wait = SimpleNamespace(sleep=lambda seconds: None, time=time.time)
    try:
        with (
            mock.patch.object(LambdaFunction, "_invoke_lambda", invoke_in_process),
            mock.patch.object(retrier_decl, "time", no_wait),
        ):
            yield
    finally:
        interpreter_log.setLevel(level)
