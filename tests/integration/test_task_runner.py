"""``python -m lambdas.task_runner``, the Fargate task's process, run as ECS would run it: a subprocess
whose environment is the container overrides a ``.waitForTaskToken`` state sent, against Step Functions,
SQS, S3, KMS and Secrets Manager on the moto server (and a real PostgreSQL).

moto cannot run ``ecs:runTask.waitForTaskToken`` (its ECS integration passes RunTask's parameters
unconverted and fails), so the state here is ``sqs:sendMessage.waitForTaskToken`` whose message is the
very ``ContainerOverrides`` the ECS state would pass (``$$.Task.Token``, ``States.JsonToString($)``):
the test reads it and starts the runner with that environment, as ECS starts the container with it.
What is proved is what the state machine sees: the execution succeeds with the handler's exact output,
fails with the handler's error class and Lambda's cause (redacted), stays alive on heartbeats, fails
on the heartbeat timeout when the task dies, and that the runner quits when nobody waits for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core.config import default_user_config
from moto.core.responses import EmptyResult
from moto.stepfunctions.responses import StepFunctionResponse

from lambdas import task_runner
from questboard_backup.aws.kms import KmsKeyWrapper
from questboard_backup.backup import plan_backup
from questboard_backup.errors import SourceUnreachableError
from tests.conftest import S3Bucket

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
HOSTNAME = "task-host"
PASSWORD = "Tr0ub4dor-task-pw"
LOCK_TOKEN = "lock-token-4f1c9a7e"
#: The state's HeartbeatSeconds in the heartbeat tests (the runner beats every 0.2 s there).
HEARTBEAT_SECONDS = 2
WAIT = 30.0


def _send_task_failure_with_its_cause(self: StepFunctionResponse) -> EmptyResult:
    """moto 5.2's SendTaskFailure handler drops ``cause``; Step Functions keeps it (it becomes the
    state's and the execution's Cause). The same call, passing it on."""
    self.stepfunction_backend.send_task_failure(  # type: ignore[call-arg]
        self._get_param("taskToken"), error=self._get_param("error"), cause=self._get_param("cause")
    )
    return EmptyResult()


def _state_machine(queue_url: str, handler: str, heartbeat_seconds: int) -> dict[str, Any]:
    """One task state as the Fargate one will be, its ContainerOverrides sent to a queue instead."""
    environment = [
        {"Name": "QB_TASK_HANDLER", "Value": handler},
        {"Name": "QB_TASK_TOKEN", "Value.$": "$$.Task.Token"},
        {"Name": "QB_TASK_EVENT", "Value.$": "States.JsonToString($)"},
    ]
    return {
        "StartAt": "Task",
        "States": {
            "Task": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "HeartbeatSeconds": heartbeat_seconds,
                "TimeoutSeconds": 120,
                "Parameters": {
                    "QueueUrl": queue_url,
                    "MessageBody": {"ContainerOverrides": [{"Name": "task", "Environment": environment}]},
                },
                "End": True,
            }
        },
    }


@dataclass
class Launched:
    execution_arn: str
    #: The container's environment overrides, as ECS would set them.
    overrides: dict[str, str]


@dataclass
class TaskWorld:
    endpoint: str
    bucket: str
    kms_key_id: str
    queue_url: str
    backup: dict[str, Any]
    tmp: Path
    machines: dict[tuple[str, int], str] = field(default_factory=dict)

    def client(self, name: str) -> Any:
        return boto3.client(name, endpoint_url=self.endpoint, region_name=REGION)

    def launch(self, event: Any, handler: str = "backup_dump", heartbeat_seconds: int = 60) -> Launched:
        """Start an execution and take the task's overrides from its message, as ECS receives them."""
        sfn, sqs = self.client("stepfunctions"), self.client("sqs")
        if (handler, heartbeat_seconds) not in self.machines:
            self.machines[handler, heartbeat_seconds] = sfn.create_state_machine(
                name=f"task-{uuid.uuid4().hex[:10]}",
                definition=json.dumps(_state_machine(self.queue_url, handler, heartbeat_seconds)),
                roleArn="arn:aws:iam::123456789012:role/sfn",
            )["stateMachineArn"]
        arn = sfn.start_execution(
            stateMachineArn=self.machines[handler, heartbeat_seconds],
            name=uuid.uuid4().hex,
            input=json.dumps(event),
        )["executionArn"]
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            answer = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
            for message in answer.get("Messages", []):
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                (override,) = json.loads(message["Body"])["ContainerOverrides"]
                return Launched(arn, {item["Name"]: item["Value"] for item in override["Environment"]})
        raise AssertionError(f"the task of {arn} was never launched: {self.describe(arn)}")

    def environment(self, launched: Launched, **extra: str) -> dict[str, str]:
        """The task definition's environment (as the stack gives the functions) plus the overrides."""
        return {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO),  # /var/task on Fargate (the code asset's root)
            "HOME": str(self.tmp),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "POWERTOOLS_SERVICE_NAME": "questboard-backup",
            "POWERTOOLS_METRICS_NAMESPACE": "QuestBoardBackup",
            "BACKUP_S3_BUCKET": self.bucket,
            "BACKUP_HOSTNAME": HOSTNAME,
            "BACKUP_KMS_KEY_ID": self.kms_key_id,
            "BACKUP_DIR": str(self.tmp / "backups"),
            "QB_TASK_HEARTBEAT_SECONDS": "0.2",
            **launched.overrides,
            **extra,
        }

    def run(self, launched: Launched, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lambdas.task_runner"],
            env=self.environment(launched, **extra),
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, launched: Launched, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "lambdas.task_runner"],
            env=self.environment(launched, **extra),
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def describe(self, execution_arn: str) -> dict[str, Any]:
        return dict(self.client("stepfunctions").describe_execution(executionArn=execution_arn))

    def ended(self, execution_arn: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (description := self.describe(execution_arn))["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"{execution_arn} still running after {timeout} s"
            time.sleep(0.05)  # polling the interpreter's thread, bounded by the deadline
        return description

    def database_secret(self, url: str) -> str:
        return str(
            self.client("secretsmanager").create_secret(
                Name=f"db-{uuid.uuid4().hex[:8]}", SecretString=json.dumps({"url": url})
            )["ARN"]
        )


@pytest.fixture
def world(
    moto_server: str, s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TaskWorld]:
    # The interpreter runs executions (its SQS client calls localhost:$MOTO_PORT), and keeps causes.
    monkeypatch.setenv("MOTO_PORT", moto_server.rsplit(":", 1)[1])
    monkeypatch.setitem(default_user_config["stepfunctions"], "execute_state_machine", True)
    monkeypatch.setattr(StepFunctionResponse, "send_task_failure", _send_task_failure_with_its_cause)
    kms = boto3.client("kms", endpoint_url=moto_server, region_name=REGION)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    plan, _data_key = plan_backup("full", HOSTNAME, KmsKeyWrapper(key_id, kms), UTC)
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name=REGION)
    queue_url = sqs.create_queue(QueueName=f"tasks-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    yield TaskWorld(
        endpoint=moto_server,
        bucket=s3_bucket.name,
        kms_key_id=key_id,
        queue_url=queue_url,
        backup={**plan.to_dict(), "lock_token": LOCK_TOKEN},
        tmp=tmp_path,
    )
    sqs.delete_queue(QueueUrl=queue_url)


def _nothing_secret_in(world: TaskWorld, launched: Launched, *texts: str) -> None:
    """The runner logs neither the task token nor the event's lock token and wrapped data key, nor the
    database password."""
    secrets = (
        launched.overrides["QB_TASK_TOKEN"],
        LOCK_TOKEN,
        PASSWORD,
        str(world.backup["key"]["ciphertext"]),
    )
    for text in texts:
        for secret in secrets:
            assert secret not in text


# (a) success


def test_a_task_that_succeeds_ends_the_state_with_exactly_the_handlers_output(world: TaskWorld) -> None:
    # No Redis secret in this deployment: the real backup_dump handler returns a skipped entry.
    launched = world.launch({"component": "redis", "backup": world.backup})
    done = world.run(launched)
    assert done.returncode == task_runner.EXIT_OK, done.stderr
    execution = world.ended(launched.execution_arn)
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"]) == {"name": "redis", "skipped": True}
    _nothing_secret_in(world, launched, done.stdout, done.stderr)


def test_a_real_postgresql_dump_runs_unchanged_under_the_runner(
    world: TaskWorld, fresh_database: str
) -> None:
    import psycopg2

    with psycopg2.connect(fresh_database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE quests (id serial PRIMARY KEY, title text)")
        cur.execute("INSERT INTO quests (title) SELECT 'quest ' || g FROM generate_series(1, 500) g")
    secret = world.database_secret(fresh_database)
    launched = world.launch({"component": "postgres", "backup": world.backup})
    done = world.run(launched, DATABASE_SECRET_ARN=secret, QB_TASK_BUDGET_SECONDS="3600")
    assert done.returncode == task_runner.EXIT_OK, done.stderr
    execution = world.ended(launched.execution_arn)
    assert execution["status"] == "SUCCEEDED", execution
    entry = json.loads(execution["output"])
    assert entry["name"] == "postgres" and entry["facts"]["tables"]
    listed = world.client("s3").list_objects_v2(Bucket=world.bucket, Prefix=f"{HOSTNAME}/")["Contents"]
    sizes = {
        item["Key"].rsplit("/", 1)[1]: item["Size"]
        for item in listed
        if world.backup["backup_id"] in item["Key"]
    }
    streams = [entry, *entry.get("parts", [])]
    assert {stream["object"]: stream["stored_bytes"] for stream in streams} == sizes  # staged, complete
    _nothing_secret_in(world, launched, done.stdout, done.stderr)


# (b) failure


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (
            "backup_dump",
            "invalid task input: component: Value error, unknown component 'postgres://qb:***@db.internal/app'",
        ),
        ("restore_component", "invalid task input: component: required"),
    ],
)
def test_a_handler_error_fails_the_state_with_its_class_name_and_a_redacted_cause(
    world: TaskWorld, handler: str, message: str
) -> None:
    if handler == "backup_dump":  # a component named by a URL quoting a password
        event: dict[str, Any] = {
            "component": f"postgres://qb:{PASSWORD}@db.internal/app",
            "backup": world.backup,
        }
    else:  # a restore step without its component
        event = {
            "restore": {
                "bucket": world.bucket,
                "hostname": HOSTNAME,
                "set_prefix": f"{HOSTNAME}/daily/x",
                "backup_id": "x",
                "timestamp": "2026-12-03T00:00:00Z",
            }
        }
    launched = world.launch(event, handler=handler)
    done = world.run(launched)
    assert done.returncode == task_runner.EXIT_FAILED
    execution = world.ended(launched.execution_arn)
    assert execution["status"] == "FAILED" and execution["error"] == "ConfigurationError"
    cause = json.loads(execution["cause"])
    assert cause == {"errorMessage": cause["errorMessage"], "errorType": "ConfigurationError"}
    assert cause["errorMessage"].startswith(message) and "\n" not in cause["errorMessage"]
    _nothing_secret_in(world, launched, execution["cause"], done.stdout, done.stderr)


def test_the_cause_is_lambdas_with_passwords_left_out_even_if_the_handler_let_one_through() -> None:
    error = SourceUnreachableError(f"cannot connect to postgresql://qb:{PASSWORD}@db.internal:5432/app")
    name, cause = task_runner.failure_report(error)
    assert name == "SourceUnreachableError"
    assert json.loads(cause) == {
        "errorMessage": "cannot connect to postgresql://qb:***@db.internal:5432/app",
        "errorType": "SourceUnreachableError",
    }
    huge = task_runner.failure_report(ValueError("x" * 100_000))[1]
    assert len(huge) <= task_runner.MAX_CAUSE_CHARS and json.loads(huge)["errorType"] == "ValueError"


def test_the_context_counts_down_from_the_budget_as_lambdas_from_its_timeout() -> None:
    now = [1000.0]
    context = task_runner.TaskContext(
        "backup_dump", 7200, {"QB_TASK_MEMORY_MB": "4096"}, clock=lambda: now[0]
    )
    assert context.get_remaining_time_in_millis() == 7_200_000
    now[0] += 1800.5
    assert context.get_remaining_time_in_millis() == 5_399_500
    now[0] += 9999
    assert context.get_remaining_time_in_millis() == 0
    assert (
        context.memory_limit_in_mb == 4096 and context.function_name == "questboard-backup-backup_dump-task"
    )
    assert uuid.UUID(context.aws_request_id)


# Heartbeats: a PostgreSQL that accepts the dump's connection and never answers holds the handler.


class Blackhole:
    """Accepts TCP connections and never answers until released; then closes them and refuses more."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._released.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self._listener.accept()
                self.connections.append(connection)

    def release(self) -> None:
        self._released.set()
        self._thread.join(WAIT)
        self._listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def held_database(world: TaskWorld) -> Iterator[tuple[Blackhole, str]]:
    hole = Blackhole()
    url = f"postgresql://qb:{PASSWORD}@127.0.0.1:{hole.port}/app?sslmode=disable&gssencmode=disable"
    yield hole, world.database_secret(url)
    hole.release()


def _wait_for(condition: Any, what: str, runner: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert runner.poll() is None, f"the runner ended before {what}: {runner.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_heartbeats_keep_a_long_task_alive_and_its_error_fails_the_state(
    world: TaskWorld, held_database: tuple[Blackhole, str]
) -> None:
    hole, secret = held_database
    launched = world.launch(
        {"component": "postgres", "backup": world.backup}, heartbeat_seconds=HEARTBEAT_SECONDS
    )
    runner = world.start(launched, DATABASE_SECRET_ARN=secret)
    _wait_for(lambda: hole.connections, "the dump to connect", runner)
    # Without heartbeats the state would time out HEARTBEAT_SECONDS after it began; watch it live on.
    until = time.monotonic() + HEARTBEAT_SECONDS + 0.5
    while time.monotonic() < until:
        assert world.describe(launched.execution_arn)["status"] == "RUNNING"
        assert runner.poll() is None
        time.sleep(0.1)  # watching the state over a span of time, not waiting for readiness
    hole.release()  # the server hangs up: the handler's connect fails
    stdout, stderr = runner.communicate(timeout=WAIT)
    assert runner.returncode == task_runner.EXIT_FAILED, stderr
    execution = world.ended(launched.execution_arn)
    assert execution["status"] == "FAILED" and execution["error"] == "SourceUnreachableError"
    cause = json.loads(execution["cause"])
    assert cause["errorType"] == "SourceUnreachableError"
    assert cause["errorMessage"].startswith("cannot connect to PostgreSQL at postgresql://qb@127.0.0.1:")
    _nothing_secret_in(world, launched, execution["cause"], stdout, stderr)


def test_a_task_that_dies_fails_the_state_on_its_heartbeat_timeout(
    world: TaskWorld, held_database: tuple[Blackhole, str]
) -> None:
    hole, secret = held_database
    launched = world.launch(
        {"component": "postgres", "backup": world.backup}, heartbeat_seconds=HEARTBEAT_SECONDS
    )
    runner = world.start(launched, DATABASE_SECRET_ARN=secret)
    _wait_for(lambda: hole.connections, "the dump to connect", runner)
    runner.send_signal(signal.SIGKILL)  # as a task whose host is lost: nothing more is said
    runner.communicate(timeout=WAIT)
    killed = time.monotonic()
    execution = world.ended(launched.execution_arn)
    # Step Functions names a missed heartbeat States.Timeout in the history (Catch and Retry may also
    # name it States.HeartbeatTimeout); long before the state's own TimeoutSeconds (120).
    assert execution["status"] == "FAILED" and execution["error"] in {
        "States.Timeout",
        "States.HeartbeatTimeout",
    }
    assert time.monotonic() - killed < HEARTBEAT_SECONDS + 5


def test_the_runner_quits_at_once_when_nobody_waits_for_its_answer(
    world: TaskWorld, held_database: tuple[Blackhole, str]
) -> None:
    hole, secret = held_database
    launched = world.launch(
        {"component": "postgres", "backup": world.backup}, heartbeat_seconds=HEARTBEAT_SECONDS
    )
    runner = world.start(launched, DATABASE_SECRET_ARN=secret)
    _wait_for(lambda: hole.connections, "the dump to connect", runner)
    world.client("stepfunctions").stop_execution(executionArn=launched.execution_arn, error="Stopped")
    stopped = time.monotonic()
    # Its handler still waiting on the database (which would give up only after its 5 s connect timeout):
    # the next heartbeat is refused and the process ends there and then.
    stdout, stderr = runner.communicate(timeout=WAIT)
    assert runner.returncode == task_runner.EXIT_TOKEN_GONE, stderr
    assert time.monotonic() - stopped < 2.5
    assert "no longer waits for this task" in stdout
    _nothing_secret_in(world, launched, stdout, stderr)


# (c) refused


@pytest.mark.parametrize("handler", ["backup_prepare", "os", "../backup_dump", ""])
def test_a_handler_outside_the_allow_list_is_refused_in_one_line_and_fails_the_state(
    world: TaskWorld, handler: str
) -> None:
    launched = world.launch({"component": "redis", "backup": world.backup})
    done = world.run(launched, QB_TASK_HANDLER=handler)
    assert done.returncode == task_runner.EXIT_CONFIGURATION
    lines = done.stderr.strip().splitlines()
    shown = repr(handler) if handler else "not set"
    assert lines == [
        f"task_runner: QB_TASK_HANDLER {shown} is not a task this runner runs "
        "(allowed: backup_dump, restore_component)"
    ]
    assert done.stdout == ""
    # The state fails at once, not on its heartbeat timeout (60 s here).
    execution = world.ended(launched.execution_arn, timeout=10)
    assert execution["status"] == "FAILED" and execution["error"] == "ConfigurationError"
    assert json.loads(execution["cause"])["errorMessage"].startswith("QB_TASK_HANDLER")


def test_a_task_without_its_token_or_with_a_broken_event_is_refused_in_one_line(world: TaskWorld) -> None:
    launched = world.launch({"component": "redis", "backup": world.backup})
    no_token = world.run(launched, QB_TASK_TOKEN="")
    assert no_token.returncode == task_runner.EXIT_CONFIGURATION
    assert no_token.stderr.strip().splitlines() == [
        "task_runner: QB_TASK_TOKEN is not set (the state's $$.Task.Token)"
    ]
    broken = world.run(launched, QB_TASK_EVENT='{"password": "' + PASSWORD)
    assert broken.returncode == task_runner.EXIT_CONFIGURATION
    assert broken.stderr.strip().splitlines() == [
        "task_runner: QB_TASK_EVENT is not JSON (the state's input)"
    ]
    execution = world.ended(launched.execution_arn, timeout=10)
    assert execution["status"] == "FAILED" and execution["error"] == "ConfigurationError"


def test_in_process_the_runner_never_ends_the_process_and_returns_3_for_a_gone_token(
    world: TaskWorld, held_database: tuple[Blackhole, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the offline workflows run it (tests/fargate_tasks.py): ``main(environ, client)`` on a thread of
    the test's process, which must survive a token nobody waits for."""
    from lambdas import dependencies as deps_module

    hole, secret = held_database
    launched = Launched("none", {"QB_TASK_TOKEN": "no-such-token", "QB_TASK_HANDLER": "backup_dump"})
    environ = world.environment(
        launched,
        DATABASE_SECRET_ARN=secret,
        QB_TASK_EVENT=json.dumps({"component": "postgres", "backup": world.backup}),
    )
    for name, value in environ.items():
        monkeypatch.setenv(name, value)  # the handler's dependencies read this process's environment
    deps_module.install(None)
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(task_runner.main(environ, world.client("stepfunctions")))
    )
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        # The handler holds the database connection while the heartbeats, refused, have stopped.
        while not hole.connections or any(t.name == "qb-task-heartbeat" for t in threading.enumerate()):
            assert time.monotonic() < deadline and thread.is_alive(), (codes, hole.connections)
            time.sleep(0.02)
        assert thread.is_alive() and codes == []
    finally:
        hole.release()
        thread.join(WAIT)
        deps_module.install(None)
    assert codes == [task_runner.EXIT_TOKEN_GONE]
