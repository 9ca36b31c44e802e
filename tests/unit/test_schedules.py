"""The deployed schedules: shown with their next run, enabled by setup; the next-run arithmetic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from questboard_backup.aws.scheduler import DeployedSchedules, next_run, schedule_name
from questboard_backup.errors import NotFoundError


def test_the_daily_full_backup_fires_next_at_two_in_tokyo() -> None:
    after = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    upcoming = next_run("cron(0 2 * * ? *)", "Asia/Tokyo", after)
    assert upcoming is not None and upcoming.isoformat() == "2024-01-02T02:00:00+09:00"


def test_the_incremental_fires_at_the_next_of_its_hours() -> None:
    after = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    upcoming = next_run("cron(0 8,14,20 * * ? *)", "Asia/Tokyo", after)
    assert upcoming is not None and upcoming.isoformat() == "2024-01-01T14:00:00+09:00"
    assert next_run("cron(30 */6 ? * 2 *)", "UTC", after) == datetime(
        2024, 1, 1, 0, 30, tzinfo=UTC
    )  # a Monday


def test_unsupported_expressions_have_no_computed_next_run() -> None:
    assert next_run("rate(6 hours)", "UTC", datetime(2024, 1, 1, tzinfo=UTC)) is None
    assert next_run("cron(0 2 ? * MON-FRI *)", "UTC", datetime(2024, 1, 1, tzinfo=UTC)) is None


@pytest.fixture
def scheduler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    with mock_aws():
        client = boto3.client("scheduler")
        target = {
            "Arn": "arn:aws:states:ap-northeast-1:123456789012:stateMachine:backup",
            "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
            "Input": json.dumps({"type": "full"}),
        }
        for kind, expression, state in (
            ("full", "cron(0 2 * * ? *)", "DISABLED"),
            ("incremental", "cron(0 8,14,20 * * ? *)", "ENABLED"),
        ):
            client.create_schedule(
                Name=schedule_name("prod", kind), ScheduleExpression=expression, ScheduleExpressionTimezone="Asia/Tokyo",
                FlexibleTimeWindow={"Mode": "OFF"}, Target=target, State=state,
            )  # fmt: skip
        yield client


def test_show_lists_both_schedules_with_state_and_next_run(scheduler: Any) -> None:
    infos = DeployedSchedules(scheduler, "prod").show(now=datetime(2024, 1, 1, tzinfo=UTC))
    assert [(i.kind, i.state) for i in infos] == [("full", "DISABLED"), ("incremental", "ENABLED")]
    assert infos[1].next_run is not None and infos[1].next_run.hour == 14
    assert "next: -" in infos[0].line() and "2024-01-01T14:00:00+09:00" in infos[1].line()


def test_setup_enables_a_disabled_schedule_and_keeps_its_settings(scheduler: Any) -> None:
    schedules = DeployedSchedules(scheduler, "prod")
    assert schedules.enable() == [schedule_name("prod", "full")]
    body = scheduler.get_schedule(Name=schedule_name("prod", "full"))
    assert body["State"] == "ENABLED"
    assert (
        body["ScheduleExpression"] == "cron(0 2 * * ? *)"
        and body["ScheduleExpressionTimezone"] == "Asia/Tokyo"
    )
    assert json.loads(body["Target"]["Input"]) == {"type": "full"}
    assert schedules.enable() == []


def test_a_hostname_without_deployed_schedules_is_named_in_the_error(scheduler: Any) -> None:
    with pytest.raises(NotFoundError, match="questboard-backup-staging-full"):
        DeployedSchedules(scheduler, "staging").show()
