"""Alarms on failed, timed-out, missing and unstarted backups, on the bucket's size and on staged
objects left behind, all notifying the encrypted alert topic; the dashboard; the Slack channel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra import monitoring
from infra.application import cdk_json_context
from infra.config import DEFAULTS, ContextError, StackConfig
from tests.infra.conftest import Synthesized

REPO = Path(__file__).resolve().parents[2]


def _alarm(synth: Synthesized, name: str) -> dict[str, Any]:
    alarms = {**synth.stack.alarms.alarms, **synth.stack.storage_alarms.alarms}
    return dict(synth.resources[synth.logical_id(alarms[name])]["Properties"])


def _metric_stats(alarm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}


def _returned_expression(alarm: dict[str, Any]) -> str:
    (returned,) = [m for m in alarm["Metrics"] if m.get("ReturnData", True)]
    return str(returned["Expression"])


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
    assert len(alarms) == 8
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


def test_the_policy_explains_38_full_sets_and_6_days_of_incrementals() -> None:
    """16 daily (7 days + 7 noncurrent + 2 roundings), 6 weekly, 14 monthly, 2 staged copies."""
    assert monitoring.policy_full_sets() == 38
    assert monitoring.policy_incremental_days() == 6


def _bucket_size_stats(synth: Synthesized, alarm: dict[str, Any]) -> None:
    bucket = {"Ref": synth.logical_id(synth.stack.storage.bucket)}
    stats = _metric_stats(alarm)
    for metric_id, storage_type in (
        ("standard", "StandardStorage"),
        ("glacier_ir", "GlacierInstantRetrievalStorage"),
    ):
        assert stats[metric_id]["Metric"] == {
            "Namespace": "AWS/S3",
            "MetricName": "BucketSizeBytes",
            "Dimensions": [
                {"Name": "BucketName", "Value": bucket},
                {"Name": "StorageType", "Value": storage_type},
            ],
        }
        assert (stats[metric_id]["Period"], stats[metric_id]["Stat"]) == (86400, "Average")
    assert (alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (1, "notBreaching")
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_bucket_alarms_past_what_the_retention_policy_explains_by_default(synth: Synthesized) -> None:
    alarm = _alarm(synth, "BucketOverExpectedSize")
    _bucket_size_stats(synth, alarm)
    assert alarm["Threshold"] == 1.25
    assert _returned_expression(alarm) == "stored / expected"
    expressions = {m["Id"]: m["Expression"] for m in alarm["Metrics"] if "Expression" in m}
    assert expressions["stored"] == "FILL(standard, 0) + FILL(glacier_ir, 0)"
    assert expressions["expected"] == "38 * full + 6 * FILL(incremental, 0)"
    stats = _metric_stats(alarm)
    for metric_id, statistic in (("full", "Maximum"), ("incremental", "Sum")):
        assert stats[metric_id]["Metric"] == {
            "Namespace": "QuestBoardBackup",
            "MetricName": "backup_size_bytes",
            "Dimensions": [
                {"Name": "service", "Value": "questboard-backup"},
                {"Name": "type", "Value": metric_id},
            ],
        }
        assert (stats[metric_id]["Period"], stats[metric_id]["Stat"]) == (86400, statistic)


def test_expected_backup_bytes_sets_a_fixed_threshold(disabled_synth: Synthesized) -> None:
    alarm = _alarm(disabled_synth, "BucketOverExpectedSize")
    _bucket_size_stats(disabled_synth, alarm)
    assert alarm["Threshold"] == 500_000_000_000
    assert _returned_expression(alarm) == "FILL(standard, 0) + FILL(glacier_ir, 0)"


def test_a_backup_that_may_have_left_staged_objects_alarms_at_once(synth: Synthesized) -> None:
    alarm = _alarm(synth, "StagingLeftBehind")
    assert _returned_expression(alarm) == "SUM([aborted, timed_out, cleanup_failed, failure_errors])"
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"
    machine = [
        {"Name": "StateMachineArn", "Value": {"Ref": synth.logical_id(synth.stack.backup.state_machine)}}
    ]
    failure = synth.stack.functions["backup_failure"]
    stats = _metric_stats(alarm)
    assert stats["aborted"]["Metric"] == {
        "Namespace": "AWS/States",
        "MetricName": "ExecutionsAborted",
        "Dimensions": machine,
    }
    assert stats["timed_out"]["Metric"]["MetricName"] == "ExecutionsTimedOut"
    assert stats["timed_out"]["Metric"]["Dimensions"] == machine
    assert stats["failure_errors"]["Metric"] == {
        "Namespace": "AWS/Lambda",
        "MetricName": "Errors",
        "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": synth.logical_id(failure)}}],
    }
    assert stats["cleanup_failed"]["Metric"] == {
        "Namespace": "QuestBoardBackup",
        "MetricName": "backup_staging_cleanup_failed_total",
    }
    for stat in stats.values():
        assert (stat["Period"], stat["Stat"]) == (300, "Sum")


def test_the_cleanup_failure_filter_matches_the_line_the_engine_logs(synth: Synthesized) -> None:
    (metric_filter,) = synth.of_type("AWS::Logs::MetricFilter").values()
    properties = metric_filter["Properties"]
    log_group = synth.stack.functions["backup_failure"].log_group
    assert properties["LogGroupName"] == {"Ref": synth.logical_id(log_group)}
    assert properties["FilterPattern"] == '{ $.message = "cleanup failed storage=*" }'
    assert properties["MetricTransformations"] == [
        {
            "MetricNamespace": "QuestBoardBackup",
            "MetricName": "backup_staging_cleanup_failed_total",
            "MetricValue": "1",
        }
    ]
    # discard_backup logs it (logger.exception) when it cannot delete a failed run's staged objects.
    engine = (REPO / "questboard_backup" / "backup.py").read_text(encoding="utf-8")
    assert 'logger.exception("cleanup failed storage=%s"' in engine


def _dashboard_body(synth: Synthesized) -> dict[str, Any]:
    """The body with every CloudFormation token (inside a JSON string already) made TOKEN."""
    (dashboard,) = synth.of_type("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    return dict(json.loads("".join(part if isinstance(part, str) else "TOKEN" for part in parts)))


def _widget_metrics(widget: dict[str, Any]) -> list[list[Any]]:
    return list(widget.get("properties", {}).get("metrics", []))


def test_the_dashboard_shows_the_four_metrics_executions_and_the_bucket(synth: Synthesized) -> None:
    (dashboard,) = synth.of_type("AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == "questboard-backup-questboard"
    body = _dashboard_body(synth)
    named = {
        (row[0], row[1])
        for widget in body["widgets"]
        for row in _widget_metrics(widget)
        if isinstance(row[0], str) and row[0] != "."
    }
    for metric in (
        "backup_last_success_timestamp",
        "backup_duration_seconds",
        "backup_size_bytes",
        "backup_failure_total",
    ):
        assert ("QuestBoardBackup", metric) in named, metric
    for metric in ("ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"):
        assert ("AWS/States", metric) in named, metric
    assert ("AWS/S3", "BucketSizeBytes") in named
    assert any(widget["type"] == "alarm" for widget in body["widgets"])


def test_every_dashboard_expression_uses_only_ids_its_widget_defines(
    synth: Synthesized, disabled_synth: Synthesized
) -> None:
    functions = {"FILL", "REPEAT", "EPOCH", "SUM"}
    for synthesized in (synth, disabled_synth):
        expressions = 0
        for widget in _dashboard_body(synthesized)["widgets"]:
            rows = _widget_metrics(widget)
            options = [row[-1] for row in rows if isinstance(row[-1], dict)]
            ids = {option["id"] for option in options if "id" in option}
            for option in options:
                if "expression" not in option:
                    continue
                expressions += 1
                words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", option["expression"]))
                assert words - functions <= ids, option["expression"]
                assert option["expression"].count("(") == option["expression"].count(")")
        assert expressions >= 4


def test_the_dashboard_shows_the_age_of_the_last_success_per_type(synth: Synthesized) -> None:
    expressions = {
        option["expression"]
        for widget in _dashboard_body(synth)["widgets"]
        for row in _widget_metrics(widget)
        for option in row[-1:]
        if isinstance(option, dict) and "expression" in option
    }
    for backup_type in ("full", "incremental"):
        assert f"FILL(last_{backup_type}, REPEAT)" in expressions
        assert f"(EPOCH(carried_{backup_type}) - carried_{backup_type}) / 3600" in expressions


def test_no_slack_channel_unless_both_ids_are_set(synth: Synthesized) -> None:
    assert synth.stack.slack is None
    assert not synth.of_type("AWS::Chatbot::SlackChannelConfiguration")


def test_the_slack_channel_receives_the_alert_topic_notifications_only(disabled_synth: Synthesized) -> None:
    (channel,) = disabled_synth.of_type("AWS::Chatbot::SlackChannelConfiguration").values()
    properties = channel["Properties"]
    assert (properties["SlackWorkspaceId"], properties["SlackChannelId"]) == ("T0123ABCDEF", "C0123ABCDEF")
    assert properties["SnsTopicArns"] == [
        {"Ref": disabled_synth.logical_id(disabled_synth.stack.alerts.topic)}
    ]
    assert properties["ConfigurationName"] == "questboard-backup-questboard"
    guardrails = json.dumps(properties["GuardrailPolicies"])
    assert "CloudWatchReadOnlyAccess" in guardrails and "AdministratorAccess" not in guardrails
    role_arn = properties["IamRoleArn"]["Fn::GetAtt"][0]
    assert not [
        policy
        for policy in disabled_synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_arn} in policy["Properties"]["Roles"]
    ]
    assert not disabled_synth.resources[role_arn]["Properties"].get("ManagedPolicyArns")


def _context(**overrides: Any) -> dict[str, Any]:
    context = {key: value for key, value in cdk_json_context().items() if key in DEFAULTS}
    return {**context, **overrides}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"alertSlackWorkspaceId": "T0123ABCDEF"}, "alertSlackChannelId"),
        ({"alertSlackChannelId": "C0123ABCDEF"}, "alertSlackWorkspaceId"),
        (
            {"alertSlackWorkspaceId": "not a workspace", "alertSlackChannelId": "C0123"},
            "alertSlackWorkspaceId",
        ),
        ({"alertSlackWorkspaceId": "T0123", "alertSlackChannelId": "#backups"}, "alertSlackChannelId"),
    ],
)
def test_a_half_or_malformed_slack_setting_is_refused_by_name(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ContextError, match=named):
        StackConfig.from_context(_context(**overrides))


def test_an_hourly_watch_counts_staging_older_than_a_day_and_an_alarm_watches_the_count(
    synth: Synthesized,
) -> None:
    from infra import constants as names

    watch = synth.stack.functions[names.STORAGE_WATCH]
    rule = synth.resources[synth.logical_id(synth.stack.storage_alarms.watch_rule)]["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 hour)"
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [synth.logical_id(watch), "Arn"]}
    alarm = synth.resources[synth.logical_id(synth.stack.storage_alarms.alarms["StagingOlderThanADay"])]
    props = alarm["Properties"]
    assert props["MetricName"] == names.STAGING_STALE_METRIC and props["Namespace"] == names.METRICS_NAMESPACE
    assert props["Threshold"] == 0 and props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["Period"] == 3600 and props["Statistic"] == "Maximum" and props["AlarmActions"]
