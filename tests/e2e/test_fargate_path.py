"""PostgreSQL on the Fargate path, through the synthesized workflows (moto): the dump and the staging
run as ECS tasks whose entrypoint is the real task runner (tests/fargate_tasks.py), with the same
contract as the Lambdas; the projection picks the path both ways; a failing task takes the failure
path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.dataset import large_objects, pg_dump_text
from tests.e2e.conftest import HOSTNAME
from tests.fargate_tasks import RoutedTasks, fargate_tasks_run_the_runner
from tests.offline import World


@pytest.fixture
def routed() -> Iterator[RoutedTasks]:
    with fargate_tasks_run_the_runner() as tasks:
        yield tasks


def handlers(routed: RoutedTasks) -> list[str]:
    return [environment["QB_TASK_HANDLER"] for environment in routed.started]


def test_a_backup_and_a_restore_on_fargate_give_identical_data(
    world: World, routed: RoutedTasks, tmp_path: Path
) -> None:
    world.settings = replace(world.settings, component_runtime="fargate")
    world.install()
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    assert handlers(routed) == ["backup_dump"] and routed.exit_codes == [0]
    assert [key for key in world.objects(f"{HOSTNAME}/") if "/postgres." in key]

    target_db = world.database_url.rsplit("/", 1)[1] + "_fargate"
    restore = world.run(
        "restore",
        {"backup": "latest", "only": ["postgres"], "targets": {"database": target_db}},
    )
    assert restore["status"] == "SUCCEEDED", restore.get("cause")
    assert handlers(routed) == ["backup_dump", "restore_component"]
    target_url = world.database_url.rsplit("/", 1)[0] + "/" + target_db
    assert pg_dump_text(world.database_url) == pg_dump_text(target_url)
    assert large_objects(world.database_url) == large_objects(target_url)
    # The task got the event and its token through the workflow's overrides.
    for environment in routed.started:
        assert environment["QB_TASK_TOKEN"]
        assert json.loads(environment["QB_TASK_EVENT"])["component"] == "postgres"


def test_auto_keeps_a_small_database_on_lambda_and_sends_one_over_the_budget_to_fargate(
    world: World, routed: RoutedTasks
) -> None:
    world.settings = replace(world.settings, component_runtime="auto")
    world.install()
    small = world.run("backup", {"type": "full"})
    assert small["status"] == "SUCCEEDED", small.get("cause")
    assert handlers(routed) == []  # projected well within the dump function's 15 minutes
    # A budget nothing fits in: the projection sends the dump, and the staging, to Fargate.
    world.settings = replace(world.settings, dump_timeout_seconds=0, restore_stage_timeout_seconds=0)
    world.install()
    large = world.run("backup", {"type": "incremental"})
    assert large["status"] == "SUCCEEDED", large.get("cause")
    assert handlers(routed) == ["backup_dump"]
    target_db = world.database_url.rsplit("/", 1)[1] + "_auto"
    restore = world.run(
        "restore", {"backup": "latest", "only": ["postgres"], "targets": {"database": target_db}}
    )
    assert restore["status"] == "SUCCEEDED", restore.get("cause")
    assert handlers(routed) == ["backup_dump", "restore_component"]


def test_a_failing_task_takes_the_failure_path(world: World, routed: RoutedTasks, tmp_path: Path) -> None:
    empty = tmp_path / "no-client-tools"
    empty.mkdir()
    world.settings = replace(world.settings, component_runtime="fargate", pg_bin_dir=empty)
    world.install()
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "FAILED"
    assert handlers(routed)[0] == "backup_dump" and routed.exit_codes[0] != 0
    # The task's own error class, as its Lambda would report it (SendTaskFailure). moto's interpreter
    # drops the cause a callback failure carries; on AWS it is the one-line message.
    assert backup["error"] == "SourceError"
    assert world.objects(f"{HOSTNAME}/") == []  # staging removed, lock released, no set
    (alert,) = world.alerts()
    assert "failed" in alert["Subject"] and "SourceError" in alert["Subject"]


def test_a_task_that_dies_without_reporting_takes_the_failure_path(world: World, routed: RoutedTasks) -> None:
    import boto3

    from infra.fargate import HEARTBEAT_SECONDS
    from tests.offline import REGION

    # The deployed heartbeat limit is 300 s; the same state machine with 2 s, so the test is quick.
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = world.machines["backup"]
    asl = sfn.describe_state_machine(stateMachineArn=machine)["definition"]
    assert f'"HeartbeatSeconds": {HEARTBEAT_SECONDS}' in asl
    sfn.update_state_machine(
        stateMachineArn=machine,
        definition=asl.replace(f'"HeartbeatSeconds": {HEARTBEAT_SECONDS}', '"HeartbeatSeconds": 2'),
    )
    world.settings = replace(world.settings, component_runtime="fargate")
    world.install()
    routed.die = True
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "FAILED"
    assert handlers(routed) == ["backup_dump"] and routed.exit_codes == []
    assert backup["error"].startswith("States.")  # the heartbeat's timeout
    assert world.objects(f"{HOSTNAME}/") == []  # staging removed, lock released, no set
    (alert,) = world.alerts()
    assert "failed" in alert["Subject"]
