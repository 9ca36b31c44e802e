"""One Step Functions task's Lambda handler, run outside Lambda: on ECS Fargate, for a dump or a restore
longer than Lambda's 15 minutes (docs/fargate.md). ``python -m lambdas.task_runner``.

The state is ``arn:aws:states:::ecs:runTask.waitForTaskToken``; its container overrides pass, in the
environment:

- ``QB_TASK_HANDLER``: the module under ``lambdas`` whose ``handler`` runs (only those in ``ALLOWED``);
- ``QB_TASK_EVENT``: the state's input, as JSON (``States.JsonToString($)``), the handler's event;
- ``QB_TASK_TOKEN``: ``$$.Task.Token``, to answer with;
- ``QB_TASK_BUDGET_SECONDS`` (default 6 hours): what the context's ``get_remaining_time_in_millis``
  counts down from, as a Lambda's timeout does;
- ``QB_TASK_HEARTBEAT_SECONDS`` (default 30): how often a heartbeat tells Step Functions the task lives.

The handler's result goes back with SendTaskSuccess, so the state's output is exactly what the Lambda
would have returned; an exception goes back with SendTaskFailure, its class name as the error and
Lambda's ``{"errorMessage", "errorType"}`` (the message redacted) as the cause, so one Retry and Catch
serve both. A task that dies sends no more heartbeats: the state fails on its HeartbeatSeconds. Once
Step Functions no longer waits for this token (the state timed out, the execution was stopped), the
task's process exits at once (code 3) rather than go on writing into a backup the failure path is
cleaning. ``main(environ, client)`` also runs in-process (the offline tests); it never exits there.

Exit codes: 0 success reported; 1 the handler failed (failure reported); 2 bad configuration (one line
on stderr; reported as a ConfigurationError when there is a token); 3 the token no longer waits.
The event is never logged: a restore's targets and a backup's wrapped key and lock token travel in it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

#: The handlers that may run here: the two whose work can outlast a Lambda.
ALLOWED = frozenset({"backup_dump", "restore_component"})
DEFAULT_BUDGET_SECONDS = 6 * 3600
DEFAULT_HEARTBEAT_SECONDS = 30.0
#: Step Functions' limits on SendTaskFailure's error and cause.
MAX_ERROR_CHARS = 256
MAX_CAUSE_CHARS = 32768
#: What SendTask* answers once Step Functions no longer waits for the token.
TOKEN_GONE = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
EXIT_OK, EXIT_FAILED, EXIT_CONFIGURATION, EXIT_TOKEN_GONE = 0, 1, 2, 3
#: The error reported when the task itself is misconfigured (the engine's name for it).
CONFIGURATION_ERROR = "ConfigurationError"

log = logging.getLogger("questboard_backup.task_runner")


class TaskConfigurationError(Exception):
    """The task's environment does not describe a task this runner may run."""


@dataclass(frozen=True)
class TaskRequest:
    handler: str
    event: Any
    token: str
    budget_seconds: float
    heartbeat_seconds: float


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise TaskConfigurationError(f"{name} must be a positive number of seconds, not {text[:20]!r}")
    return value


def read_request(environ: Mapping[str, str]) -> TaskRequest:
    """The task from its environment; a TaskConfigurationError, in one line, says what is wrong."""
    handler = environ.get("QB_TASK_HANDLER", "").strip()
    if handler not in ALLOWED:
        shown = repr(handler[:40]) if handler else "not set"
        raise TaskConfigurationError(
            f"QB_TASK_HANDLER {shown} is not a task this runner runs (allowed: {', '.join(sorted(ALLOWED))})"
        )
    token = environ.get("QB_TASK_TOKEN", "").strip()
    if not token:
        raise TaskConfigurationError("QB_TASK_TOKEN is not set (the state's $$.Task.Token)")
    try:
        event = json.loads(environ.get("QB_TASK_EVENT", ""))
    except ValueError:
        # Never quoted: the event may carry what must not be logged.
        raise TaskConfigurationError("QB_TASK_EVENT is not JSON (the state's input)") from None
    return TaskRequest(
        handler=handler,
        event=event,
        token=token,
        budget_seconds=_positive(environ, "QB_TASK_BUDGET_SECONDS", DEFAULT_BUDGET_SECONDS),
        heartbeat_seconds=_positive(environ, "QB_TASK_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS),
    )


class TaskContext:
    """What a handler and Powertools' ``inject_lambda_context`` read of Lambda's context object; the
    remaining time counts down from the task's budget, as a Lambda's from its timeout."""

    def __init__(
        self,
        handler: str,
        budget_seconds: float,
        environ: Mapping[str, str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._deadline = clock() + budget_seconds
        self.function_name = environ.get("QB_TASK_FUNCTION_NAME") or f"questboard-backup-{handler}-task"
        self.function_version = "$LATEST"
        self.invoked_function_arn = environ.get("QB_TASK_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(environ.get("QB_TASK_MEMORY_MB", "0") or 0)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = environ.get("QB_TASK_LOG_GROUP", "")
        self.log_stream_name = environ.get("QB_TASK_LOG_STREAM", "")
        self.identity = None
        self.client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _exit_now() -> None:
    """The task's process ends at once: nothing it could still do would be used, and the failure path
    may already be cleaning up what it writes."""
    log.error("Step Functions no longer waits for this task (timed out or stopped): stopping now")
    logging.shutdown()
    os._exit(EXIT_TOKEN_GONE)


def _note_gone() -> None:
    log.error("Step Functions no longer waits for this task (timed out or stopped): no more heartbeats")


class Heartbeat:
    """Sends a heartbeat at once and then every ``interval`` seconds from a daemon thread, until the
    block ends. When Step Functions answers that it no longer waits for the token, the beats stop and
    ``on_gone`` runs (the runner's process: ``_exit_now``); other failures are logged and retried."""

    def __init__(
        self,
        client: Any,
        token: str,
        interval: float,
        on_gone: Callable[[], None] = _note_gone,
    ) -> None:
        self._client = client
        self._token = token
        self._interval = interval
        self._on_gone = on_gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qb-task-heartbeat", daemon=True)
        self.sent = 0

    def beat(self) -> bool:
        """One heartbeat; False once the token is gone."""
        try:
            self._client.send_task_heartbeat(taskToken=self._token)
        except Exception as error:  # noqa: BLE001 - a missed heartbeat is retried, not fatal
            if _error_code(error) in TOKEN_GONE:
                return False
            log.warning("task heartbeat failed, retrying: %s", type(error).__name__)
            return True
        self.sent += 1
        return True

    def _run(self) -> None:
        while True:
            if not self.beat():
                if not self._stop.is_set():  # not the answer to a beat racing the task's own report
                    self._on_gone()
                return
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 10)


def failure_report(error: BaseException) -> tuple[str, str]:
    """(error, cause) as Lambda reports a handler's exception to Step Functions: the class name, and
    ``{"errorMessage", "errorType"}`` with every password and remembered secret left out."""
    from questboard_backup.redaction import redact_text

    name = type(error).__name__[:MAX_ERROR_CHARS]
    message = redact_text(str(error))
    cause = json.dumps({"errorMessage": message, "errorType": name})
    if len(cause) > MAX_CAUSE_CHARS:
        cut = message[: MAX_CAUSE_CHARS - 200] + " ..."
        cause = json.dumps({"errorMessage": cut, "errorType": name})
    return name, cause


def _stepfunctions_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("stepfunctions", config=Config(retries={"mode": "standard", "max_attempts": 5}))


def _report(call: Callable[..., Any], **arguments: Any) -> int | None:
    """Send one outcome; None when sent, else the exit code to end with."""
    try:
        call(**arguments)
    except Exception as error:  # noqa: BLE001 - reported in the log, the exit code says what happened
        if _error_code(error) in TOKEN_GONE:
            log.error("Step Functions no longer waits for this task: its outcome was not reported")
            return EXIT_TOKEN_GONE
        log.error("reporting the task's outcome failed: %s", type(error).__name__)
        return EXIT_FAILED
    return None


def run(
    request: TaskRequest, client: Any, environ: Mapping[str, str], *, exit_when_gone: bool = False
) -> int:
    """Run the handler under heartbeats, then (heartbeats stopped) report its outcome with the token.
    ``exit_when_gone``: the process is the task's own, and ends at once when the token is gone (else the
    handler runs to its end and its report finds the token gone: exit code 3 all the same)."""
    output = "null"
    failure: Exception | None = None
    on_gone = _exit_now if exit_when_gone else _note_gone
    with Heartbeat(client, request.token, request.heartbeat_seconds, on_gone):
        try:
            module = importlib.import_module(f"lambdas.{request.handler}")
            context = TaskContext(request.handler, request.budget_seconds, environ)
            output = json.dumps(module.handler(request.event, context))
        except Exception as error:  # noqa: BLE001 - every failure goes back to Step Functions
            failure = error
    if failure is not None:
        name, cause = failure_report(failure)
        log.error("task %s failed: %s: %s", request.handler, name, json.loads(cause)["errorMessage"])
        gone = _report(client.send_task_failure, taskToken=request.token, error=name, cause=cause)
        return gone if gone is not None else EXIT_FAILED
    sent = _report(client.send_task_success, taskToken=request.token, output=output)
    if sent == EXIT_FAILED:  # e.g. an output Step Functions refuses: fail the state now, not on a timeout
        _report(
            client.send_task_failure,
            taskToken=request.token,
            error="TaskOutputRejected",
            cause=json.dumps({"errorMessage": "SendTaskSuccess refused the handler's output"}),
        )
    return EXIT_OK if sent is None else sent


def main(
    environ: Mapping[str, str] | None = None, client: Any = None, *, exit_when_gone: bool = False
) -> int:
    """The task: its environment (default: this process's), a Step Functions client (default: boto3's).
    ``exit_when_gone`` only where the process is the task's own (``python -m lambdas.task_runner``)."""
    environ = os.environ if environ is None else environ
    # No X-Ray daemon beside a task: Powertools' tracer stays off unless the task definition says so.
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    try:
        request = read_request(environ)
    except TaskConfigurationError as error:
        print(f"task_runner: {error}", file=sys.stderr)
        token = environ.get("QB_TASK_TOKEN", "").strip()
        if token:  # fail the state now rather than on its heartbeat timeout
            _, cause = failure_report(error)
            _report(
                (client or _stepfunctions_client()).send_task_failure,
                taskToken=token,
                error=CONFIGURATION_ERROR,
                cause=cause,
            )
        return EXIT_CONFIGURATION
    return run(request, client or _stepfunctions_client(), environ, exit_when_gone=exit_when_gone)


if __name__ == "__main__":
    sys.exit(main(exit_when_gone=True))
