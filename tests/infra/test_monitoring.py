"""Alarms on failed, timed-out, missing and unstarted backups, all notifying the encrypted alert topic."""

from __future__ import annotations

from typing import Any

from tests.infra.conftest import Synthesized


def _alarm(synth: Synthesized, name: str) -> dict[str, Any]:
    return dict(synth.resources[synth.logical_id(synth.stack.alarms.alarms[name])]["Properties"])


def test_alert_topic_is_encrypted_with_its_own_key_and_tls_only(synth: Synthesized) -> None:
    topic = synth.resources[synth.logical_id(synth.stack.alerts.topic)]["Properties"]
    assert topic["KmsMasterKeyId"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.security.alerts_key), "Arn"]
    }
    policies = synth.of_type("AWS::SNS::TopicPolicy").values()
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )


def test_execution_failures_and_timeouts_alarm_at_the_first_one(synth: Synthesized) -> None:
    backup_id = synth.logical_id(synth.stack.backup.state_machine)
    restore_id = synth.logical_id(synth.stack.restore.state_machine)
    expected = {
        "BackupFailed": ("ExecutionsFailed", backup_id),
        "BackupTimedOut": ("ExecutionsTimedOut", backup_id),
        "RestoreFailed": ("ExecutionsFailed", restore_id),
    }
    for name, (metric, machine_id) in expected.items():
        alarm = _alarm(synth, name)
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/States", metric), name
        assert alarm["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": machine_id}}]
        assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_a_message_in_the_dead_letter_queue_alarms(synth: Synthesized) -> None:
    alarm = _alarm(synth, "ScheduleUndelivered")
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.schedules.dead_letter_queue), "QueueName"]
    }
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")


def test_seven_hours_without_a_successful_backup_alarm(synth: Synthesized) -> None:
    alarm = _alarm(synth, "NoRecentBackup")
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (7, 7)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 1)
    assert alarm["TreatMissingData"] == "breaching"
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    (expression,) = [m for m in metrics.values() if "Expression" in m]
    assert expression["Expression"] == "SUM([full, incremental])"
    for backup_type in ("full", "incremental"):
        stat = metrics[backup_type]["MetricStat"]
        assert stat["Metric"] == {
            "Namespace": "QuestBoardBackup",
            "MetricName": "backup_success_total",
            "Dimensions": [
                {"Name": "service", "Value": "questboard-backup"},
                {"Name": "type", "Value": backup_type},
            ],
        }
        assert (stat["Period"], stat["Stat"]) == (3600, "Sum")


def test_every_alarm_notifies_the_alert_topic(synth: Synthesized) -> None:
    topic = {"Ref": synth.logical_id(synth.stack.alerts.topic)}
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    assert len(alarms) == 5
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [topic]


def test_context_adds_an_email_subscription_and_an_extra_topic(disabled_synth: Synthesized) -> None:
    (subscription,) = disabled_synth.of_type("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == "ops@example.com"
    extra = "arn:aws:sns:ap-northeast-1:123456789012:chatops"
    for alarm in disabled_synth.of_type("AWS::CloudWatch::Alarm").values():
        assert extra in alarm["Properties"]["AlarmActions"]


def test_with_backups_disabled_the_silence_alarm_is_muted(
    synth: Synthesized, disabled_synth: Synthesized
) -> None:
    assert _alarm(synth, "NoRecentBackup")["ActionsEnabled"] is True
    assert _alarm(disabled_synth, "NoRecentBackup")["ActionsEnabled"] is False
