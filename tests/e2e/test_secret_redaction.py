"""No password reaches Step Functions' execution history, the functions' logs or the failure alerts: the
workflows run with a database secret whose password has every awkward character, and fail."""

from __future__ import annotations

import importlib
import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import pytest

from questboard_backup.address import BackupId
from questboard_backup.errors import SourceError
from tests.lambda_runtime import FakeContext
from tests.offline import REGION, World
from tests.servers import PostgresServer, free_port

PASSWORD = "s3cr@t#pa?ss%word&password=x/y z+"


def forms(password: str) -> list[str]:
    """Every way a password may show: as written, percent-encoded, form-encoded, JSON-escaped."""
    written = {password, quote(password, safe=""), quote(password), quote_plus(password)}
    return sorted(written | {json.dumps(form)[1:-1] for form in written})


def assert_nowhere(password: str, text: str) -> None:
    for form in forms(password):
        assert form not in text, f"{form!r} shows in: {text[:3000]}"


@pytest.fixture
def function_logs() -> Iterator[io.StringIO]:
    """What the functions write through Powertools (their CloudWatch log), while the test runs."""
    from lambdas.observability import logger

    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


def history(execution: dict[str, Any]) -> str:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    events = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
    assert events, "moto kept no history for the execution"
    return json.dumps(events, default=str) + json.dumps(execution, default=str)


@pytest.mark.parametrize("where", ["nothing listening", "wrong password", "malformed secret"])
def test_a_failing_workflow_shows_the_secret_password_nowhere(
    world: World,
    password_pg_server: PostgresServer,
    function_logs: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    caplog.set_level(logging.INFO)
    first = world.run("backup", {"type": "full"})
    assert first["status"] == "SUCCEEDED"  # something to restore
    port = password_pg_server.port if where == "wrong password" else free_port()
    fields = {"host": "127.0.0.1", "port": port, "username": "postgres", "password": PASSWORD}
    secret = json.dumps({"engine": "postgres", **fields, "dbname": "postgres", "sslmode": "disable"})
    if where == "malformed secret":  # a URL whose password nobody percent-encoded
        secret = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    boto3.client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId=world.settings.database_secret_arn, SecretString=secret
    )
    # Its own id: one taken in the same second as the first would be refused as reused, not fail here.
    taken = BackupId.parse(json.loads(first["output"])["backup"]["backup_id"])
    later = str(BackupId.at(taken.kind, taken.moment + timedelta(minutes=1)))
    backup = world.run("backup", {"type": "full", "backup_id": later})
    restore = world.run("restore", {"backup": "latest", "targets": {"database": "questboard_drill"}})
    expected = "ConfigurationError" if where == "malformed secret" else "SourceUnreachableError"
    for execution in (backup, restore):
        assert (execution["status"], execution.get("error")) == ("FAILED", expected), execution.get("cause")
        if expected == "SourceUnreachableError":  # the cause says where, from the parsed secret
            assert f"127.0.0.1:{port}" in execution["cause"]
    alerts = world.alerts()
    assert len([alert for alert in alerts if expected in alert["Message"]]) == 2, alerts
    out, err = capsys.readouterr()
    for text in (
        history(backup),
        history(restore),
        json.dumps(alerts),
        function_logs.getvalue(),
        caplog.text,
        out,
        err,
    ):
        assert_nowhere(PASSWORD, text)


def test_every_function_redacts_its_errors_before_step_functions_sees_them(template: dict[str, Any]) -> None:
    handlers = {
        resource["Properties"]["Handler"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function"
        and resource["Properties"]["Handler"].startswith("lambdas.")
    }
    assert len(handlers) > 5
    for name in sorted(handlers):
        module, attribute = name.rsplit(".", 1)
        handler = getattr(importlib.import_module(module), attribute)
        assert getattr(handler, "redacts_errors", False), (
            f"{name} is not wrapped by tracer.capture_lambda_handler"
        )


def test_a_handler_error_quoting_a_secret_it_read_keeps_its_class_and_loses_the_secret(world: World) -> None:
    from lambdas.dependencies import dependencies
    from lambdas.observability import logger, tracer

    boto3.client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId=world.settings.database_secret_arn,
        SecretString=json.dumps({"host": "db", "username": "u", "password": PASSWORD, "dbname": "q"}),
    )

    class Unhelpful(Exception):
        def __str__(self) -> str:
            return f"unhelpful {PASSWORD}"

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    def handler(event: dict[str, Any], context: Any) -> None:
        url = dependencies().database_url()  # reading the secret remembers its password
        if event["raise"] == "engine":
            raise SourceError(f"quoted {url} and {PASSWORD}")
        raise Unhelpful()

    with pytest.raises(SourceError) as engine:
        handler({"raise": "engine"}, FakeContext("handler"))
    with pytest.raises(Exception) as other:
        handler({"raise": "other"}, FakeContext("handler"))
    assert type(other.value).__name__ == "Unhelpful"  # what Step Functions matches on
    for error in (engine.value, other.value):
        assert_nowhere(PASSWORD, str(error))
    assert str(engine.value).startswith("quoted postgresql://u:***@db")
