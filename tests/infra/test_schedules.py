"""Scheduler starts full backups at 02:00 and incrementals at 08/14/20 in the configured time zone, and
the restore drill monthly."""

from __future__ import annotations

import json
from typing import Any

from infra import constants as names
from tests.infra.conftest import Synthesized


def _kind(schedule: dict[str, Any]) -> str:
    payload = json.loads(schedule["Properties"]["Target"]["Input"])
    return str(payload["type"]) if "type" in payload else "drill"


def _schedules(synth: Synthesized, with_drill: bool = False) -> dict[str, dict[str, Any]]:
    schedules = synth.of_type("AWS::Scheduler::Schedule").values()
    found = {_kind(s): s["Properties"] for s in schedules}
    if not with_drill:
        found.pop("drill", None)
    return found


def test_full_daily_at_two_and_incremental_every_six_hours_in_tokyo(synth: Synthesized) -> None:
    schedules = _schedules(synth)
    assert set(schedules) == {"full", "incremental"}
    assert schedules["full"]["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedules["incremental"]["ScheduleExpression"] == "cron(0 8,14,20 * * ? *)"
    for schedule in schedules.values():
        assert schedule["ScheduleExpressionTimezone"] == "Asia/Tokyo"
        assert schedule["State"] == "ENABLED"
        assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}


def test_incremental_never_runs_in_the_full_backups_slot(synth: Synthesized) -> None:
    hours = _schedules(synth)["incremental"]["ScheduleExpression"].split()[1]
    assert "2" not in hours.split(","), "02:00 belongs to the full backup"


def test_schedules_invoke_the_starter_with_the_scheduled_time_retries_and_a_dlq(synth: Synthesized) -> None:
    starter_id = synth.logical_id(synth.stack.functions[names.BACKUP_START])
    queue_id = synth.logical_id(synth.stack.schedules.dead_letter_queue)
    for kind, schedule in _schedules(synth).items():
        target = schedule["Target"]
        assert target["Arn"] == {"Fn::GetAtt": [starter_id, "Arn"]}, kind
        assert json.loads(target["Input"]) == {"type": kind, "scheduled_at": "<aws.scheduler.scheduled-time>"}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
        assert target["RetryPolicy"] == {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600}


def test_the_starter_alone_may_start_the_backup_state_machine_and_the_scheduler_only_invokes_it(
    synth: Synthesized,
) -> None:
    machine_id = synth.logical_id(synth.stack.backup.state_machine)
    starter = synth.resources[synth.logical_id(synth.stack.functions[names.BACKUP_START])]["Properties"]
    assert starter["Environment"]["Variables"]["BACKUP_STATE_MACHINE_ARN"] == {"Ref": machine_id}
    (role_arn,) = {json.dumps(s["Target"]["RoleArn"]) for s in _schedules(synth).values()}
    role_id = json.loads(role_arn)["Fn::GetAtt"][0]
    statements = [
        statement
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert {s["Action"] for s in statements} == {"lambda:InvokeFunction", "sqs:SendMessage"}  # + the DLQ
    # The backup state machine: only the starter; the restore state machine: only the drill's role.
    starters = [
        policy
        for policy in synth.of_type("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Action"] == "states:StartExecution" and statement["Resource"] == {"Ref": machine_id}
    ]
    assert len(starters) == 1
    (statement,) = [
        s
        for s in starters[0]["Properties"]["PolicyDocument"]["Statement"]
        if s["Action"] == "states:StartExecution"
    ]
    assert statement["Resource"] == {"Ref": machine_id}


def test_dead_letter_queue_is_encrypted_and_tls_only(synth: Synthesized) -> None:
    queue = synth.resources[synth.logical_id(synth.stack.schedules.dead_letter_queue)]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    synth.template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        "Action": "sqs:*",
                        "Principal": {"AWS": "*"},
                        "Resource": {
                            "Fn::GetAtt": [synth.logical_id(synth.stack.schedules.dead_letter_queue), "Arn"]
                        },
                    }
                ]
            }
        },
    )


def test_disabled_backups_deploy_disabled_schedules_in_the_configured_zone(
    disabled_synth: Synthesized,
) -> None:
    schedules = _schedules(disabled_synth)
    assert {s["State"] for s in schedules.values()} == {"DISABLED"}
    assert {s["ScheduleExpressionTimezone"] for s in schedules.values()} == {"Europe/Paris"}


def test_schedules_carry_the_names_the_cli_looks_for(synth: Synthesized) -> None:
    from questboard_backup.aws.scheduler import schedule_name

    names_found = sorted(s["Properties"]["Name"] for s in synth.of_type("AWS::Scheduler::Schedule").values())
    assert names_found == sorted(
        schedule_name("questboard", kind) for kind in ("full", "incremental", "drill")
    )


def test_the_restore_drill_starts_the_restore_workflow_monthly_in_drill_mode(synth: Synthesized) -> None:
    drill = _schedules(synth, with_drill=True)["drill"]
    assert drill["ScheduleExpression"] == "cron(0 5 1 * ? *)" == synth.stack.config.drill_schedule
    assert drill["ScheduleExpressionTimezone"] == "Asia/Tokyo" and drill["State"] == "ENABLED"
    target = drill["Target"]
    assert target["Arn"] == {"Ref": synth.logical_id(synth.stack.restore.state_machine)}
    assert json.loads(target["Input"]) == {"backup": "latest", "drill": True}
    queue_id = synth.logical_id(synth.stack.schedules.dead_letter_queue)
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    # Its role may start the restore state machine, and nothing else.
    role_id = synth.logical_id(synth.stack.schedules.drill_role)
    assert target["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    statements = [
        statement
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert [(s["Action"], s["Resource"]) for s in statements if "sqs" not in json.dumps(s["Action"])] == [
        ("states:StartExecution", {"Ref": synth.logical_id(synth.stack.restore.state_machine)})
    ]


def test_the_functions_get_the_drill_targets_checks_and_rto(synth: Synthesized) -> None:
    function = synth.resources[synth.logical_id(synth.stack.functions[names.RESTORE_REPORT])]["Properties"]
    variables = function["Environment"]["Variables"]
    config = synth.stack.config
    assert variables["BACKUP_DRILL_DATABASE"] == config.drill_database == "questboard_drill"
    assert variables["BACKUP_DRILL_REDIS_DB"] == "8"
    assert json.loads(variables["BACKUP_DRILL_CHECKS"]) == list(config.drill_checks)
    assert variables["BACKUP_DRILL_RTO_SECONDS"] == "3600"


def test_no_drill_target_means_no_drill_schedule(disabled_synth: Synthesized) -> None:
    assert "drill" not in _schedules(disabled_synth, with_drill=True)
