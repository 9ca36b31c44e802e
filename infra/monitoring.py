"""Alerts: the encrypted SNS topic, the alarms that publish to it (failed, timed-out, missing and
unstarted backups; the bucket past its expected size; staged objects left behind), the CloudWatch
dashboard, and the optional AWS Chatbot Slack channel. docs/monitoring-cloudwatch.md explains each.
"""

from __future__ import annotations

import math
import re
from typing import Final

from aws_cdk import Duration
from aws_cdk import aws_chatbot as chatbot
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra import constants as names

# What backup_publish emits after every success (EMF, dimensions service and type) and backup_failure
# on every failure (dimension service only); tests/unit/test_cloudwatch_exporter_config.py reads the
# handlers, and tests/infra/test_monitoring.py checks the dashboard names these.
LAST_SUCCESS_METRIC: Final = "backup_last_success_timestamp"
DURATION_METRIC: Final = "backup_duration_seconds"
SIZE_METRIC: Final = "backup_size_bytes"
FAILURE_METRIC: Final = "backup_failure_total"
RESTORE_SUCCESS_METRIC: Final = "restore_success_total"
RESTORE_FAILURE_METRIC: Final = "restore_failure_total"

#: Counted by a metric filter on backup_failure's log group, from the line the engine logs when
#: ``discard_backup`` could not delete a failed run's staged objects (questboard_backup/backup.py).
STAGING_CLEANUP_FAILED_METRIC: Final = "backup_staging_cleanup_failed_total"
CLEANUP_FAILED_MESSAGE: Final = "cleanup failed storage="

#: S3's daily storage metric, by storage class: sets stay STANDARD, monthly sets move to GLACIER_IR.
S3_NAMESPACE: Final = "AWS/S3"
BUCKET_SIZE_METRIC: Final = "BucketSizeBytes"
STORAGE_TYPES: Final = {"standard": "StandardStorage", "glacier_ir": "GlacierInstantRetrievalStorage"}
#: S3 lifecycle rounds each expiry up to the next midnight UTC: up to a day more per action.
LIFECYCLE_ROUNDING_DAYS: Final = 1
#: The derived alarm fires when the bucket holds this much more than the policy accounts for.
EXPECTED_SIZE_HEADROOM: Final = 1.25
#: Dashboard thresholds: a full is overdue after 26 hours; any backup after NO_SUCCESS_ALARM_HOURS.
FULL_OVERDUE_HOURS: Final = 26


def policy_full_sets() -> int:
    """Full sets' worth of bytes the retention policy can hold at once, an upper bound.

    A full set stays current for its tier's days, then noncurrent for NONCURRENT_VERSION_DAYS, each
    rounded up to a midnight. Counted as if every day's full went to the daily tier, one a week to
    the weekly tier and one every 28 days to the monthly tier; plus the newest set's staged copy,
    deleted at promotion and kept one day as a noncurrent version. With today's constants:
    16 daily + 6 weekly + 14 monthly + 2 staged = 38.
    """

    def held(days: int) -> int:
        return days + names.NONCURRENT_VERSION_DAYS + 2 * LIFECYCLE_ROUNDING_DAYS

    days = names.TIER_EXPIRATION_DAYS
    staged = names.SHORT_LIVED_NONCURRENT_DAYS + LIFECYCLE_ROUNDING_DAYS
    return (
        held(days["daily"])
        + math.ceil(held(days["weekly"]) / 7)
        + math.ceil(held(days["monthly"]) / 28)
        + staged
    )


def policy_incremental_days() -> int:
    """Days of incremental backups the policy can hold at once: a day current and a day noncurrent,
    each rounded up, plus their staged copies' noncurrent day (6 with today's constants)."""
    current = names.TIER_EXPIRATION_DAYS["incremental"] + LIFECYCLE_ROUNDING_DAYS
    noncurrent = names.SHORT_LIVED_NONCURRENT_DAYS + LIFECYCLE_ROUNDING_DAYS
    return current + noncurrent + noncurrent


def resource_name(hostname: str) -> str:
    """``questboard-backup-{hostname}`` with what a dashboard or Chatbot name refuses made ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"questboard-backup-{hostname}")


def backup_metric(
    metric_name: str,
    statistic: str,
    period: Duration,
    backup_type: str | None = None,
    label: str | None = None,
) -> cloudwatch.Metric:
    """A metric the functions emit: dimension service, and type where the emitter adds one."""
    dimensions = {"service": names.SERVICE_NAME}
    if backup_type is not None:
        dimensions["type"] = backup_type
    return cloudwatch.Metric(
        namespace=names.METRICS_NAMESPACE,
        metric_name=metric_name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=period,
        label=label or backup_type or metric_name,
    )


def bucket_size_metric(bucket: s3.IBucket, storage_type: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=S3_NAMESPACE,
        metric_name=BUCKET_SIZE_METRIC,
        dimensions_map={"BucketName": bucket.bucket_name, "StorageType": storage_type},
        statistic="Average",
        period=Duration.days(1),
        label=storage_type,
    )


def stored_bytes(bucket: s3.IBucket) -> cloudwatch.MathExpression:
    """The bucket's bytes in both storage classes its sets use (a class not used yet counts 0)."""
    return cloudwatch.MathExpression(
        expression=" + ".join(f"FILL({key}, 0)" for key in STORAGE_TYPES),
        using_metrics={key: bucket_size_metric(bucket, kind) for key, kind in STORAGE_TYPES.items()},
        label="stored bytes",
        period=Duration.days(1),
    )


def policy_expected_bytes() -> cloudwatch.MathExpression:
    """What the retention policy holds, from the newest sets' sizes (one day's full and incrementals)."""
    one_day = Duration.days(1)
    return cloudwatch.MathExpression(
        expression=f"{policy_full_sets()} * full + {policy_incremental_days()} * FILL(incremental, 0)",
        using_metrics={
            "full": backup_metric(SIZE_METRIC, "Maximum", one_day, "full"),
            "incremental": backup_metric(SIZE_METRIC, "Sum", one_day, "incremental"),
        },
        label="expected by the retention policy",
        period=one_day,
    )


class AlertTopic(Construct):
    """The topic operators subscribe to; the failure functions and the alarms publish to it."""

    topic: sns.Topic

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, alert_email: str = "") -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self, "Topic", display_name="Quest Board Backup alerts", master_key=key, enforce_ssl=True
        )
        if alert_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alert_email))


class BackupAlarms(Construct):
    """Failed or timed-out executions, no success for 7 hours, undelivered schedule starts.

    "No success" counts backup_success_total, which backup_publish emits (Powertools EMF, namespace
    QuestBoardBackup, dimensions service and type), over both types; no data at all is breaching.
    """

    alarms: dict[str, cloudwatch.Alarm]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        backup_state_machine: sfn.IStateMachine,
        restore_state_machine: sfn.IStateMachine,
        dead_letter_queue: sqs.IQueue,
        topics: list[sns.ITopic],
        backups_enabled: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        five_minutes = Duration.minutes(5)
        self.alarms = {
            "BackupFailed": self._at_least_one(
                "BackupFailed",
                backup_state_machine.metric_failed(period=five_minutes, statistic="Sum"),
                "A backup execution failed",
            ),
            "BackupTimedOut": self._at_least_one(
                "BackupTimedOut",
                backup_state_machine.metric_timed_out(period=five_minutes, statistic="Sum"),
                "A backup execution timed out",
            ),
            "RestoreFailed": self._at_least_one(
                "RestoreFailed",
                restore_state_machine.metric_failed(period=five_minutes, statistic="Sum"),
                "A restore execution failed",
            ),
            "ScheduleUndelivered": self._at_least_one(
                "ScheduleUndelivered",
                dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=five_minutes, statistic="Maximum"
                ),
                "A scheduled backup could not be started (a message is in the dead-letter queue)",
            ),
            "NoRecentBackup": self._no_recent_backup(actions_enabled=backups_enabled),
        }
        for alarm in self.alarms.values():
            for topic in topics:
                alarm.add_alarm_action(actions.SnsAction(topic))

    def _at_least_one(
        self, construct_id: str, metric: cloudwatch.IMetric, description: str
    ) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            alarm_description=description,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _no_recent_backup(self, actions_enabled: bool) -> cloudwatch.Alarm:
        # Seven hourly periods, all without a success: evaluated every hour, not every seven.
        hours = names.NO_SUCCESS_ALARM_HOURS
        successes = cloudwatch.MathExpression(
            # SUM over an array adds what each hour has; "+" would need both types in the same hour.
            expression=f"SUM([{', '.join(names.BACKUP_TYPES)}])",
            using_metrics={
                backup_type: cloudwatch.Metric(
                    namespace=names.METRICS_NAMESPACE,
                    metric_name=names.BACKUP_SUCCESS_METRIC,
                    dimensions_map={"service": names.SERVICE_NAME, "type": backup_type},
                    statistic="Sum",
                    period=Duration.hours(1),
                )
                for backup_type in names.BACKUP_TYPES
            },
            label="successful backups",
            period=Duration.hours(1),
        )
        return successes.create_alarm(
            self,
            "NoRecentBackup",
            alarm_description=f"No successful backup in the last {hours} hours (RPO is 6 hours)",
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=hours,
            datapoints_to_alarm=hours,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            # With backups disabled on purpose, silence is expected: keep the alarm, mute its actions.
            actions_enabled=actions_enabled,
        )


class StorageAlarms(Construct):
    """The bucket past the size the retention policy explains, and staged objects (``temp/``) that a
    backup may have left behind. docs/monitoring-cloudwatch.md gives the reasoning of both."""

    alarms: dict[str, cloudwatch.Alarm]
    cleanup_failed_filter: logs.MetricFilter

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        backup_state_machine: sfn.IStateMachine,
        failure_function: lambda_.Function,
        topics: list[sns.ITopic],
        watch_function: lambda_.IFunction,
        expected_backup_bytes: int = 0,
    ) -> None:
        super().__init__(scope, construct_id)
        # Every hour the watch counts what lies under temp/ for more than a day.
        self.watch_rule = events.Rule(
            self,
            "StagingWatchSchedule",
            description="Quest Board Backup: count staged objects older than a day",
            schedule=events.Schedule.rate(Duration.hours(1)),
            targets=[events_targets.LambdaFunction(watch_function, retry_attempts=2)],
        )
        self.cleanup_failed_filter = logs.MetricFilter(
            self,
            "CleanupFailedFilter",
            log_group=failure_function.log_group,
            metric_namespace=names.METRICS_NAMESPACE,
            metric_name=STAGING_CLEANUP_FAILED_METRIC,
            filter_pattern=logs.FilterPattern.string_value("$.message", "=", f"{CLEANUP_FAILED_MESSAGE}*"),
            metric_value="1",
        )
        self.alarms = {
            "BucketOverExpectedSize": self._bucket_size(bucket, expected_backup_bytes),
            "StagingLeftBehind": self._staging_left_behind(backup_state_machine, failure_function),
            "StagingOlderThanADay": cloudwatch.Alarm(
                self,
                "StagingOlderThanADay",
                alarm_description=(
                    "Objects under temp/ (staging) are older than a day: a run left them; see "
                    "docs/monitoring-cloudwatch.md"
                ),
                metric=cloudwatch.Metric(
                    namespace=names.METRICS_NAMESPACE,
                    metric_name=names.STAGING_STALE_METRIC,
                    dimensions_map={"service": names.SERVICE_NAME},
                    statistic="Maximum",
                    period=Duration.hours(1),
                ),
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
        }
        for alarm in self.alarms.values():
            for topic in topics:
                alarm.add_alarm_action(actions.SnsAction(topic))

    def _bucket_size(self, bucket: s3.IBucket, expected_backup_bytes: int) -> cloudwatch.Alarm:
        # S3 publishes BucketSizeBytes once a day; a day without it (or without a full backup, in the
        # derived form) is no evidence of growth.
        stored = stored_bytes(bucket)
        if expected_backup_bytes:
            return stored.create_alarm(
                self,
                "BucketOverExpectedSize",
                alarm_description=(
                    f"The backup bucket holds more than expectedBackupBytes ({expected_backup_bytes} bytes)"
                ),
                threshold=expected_backup_bytes,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        ratio = cloudwatch.MathExpression(
            expression="stored / expected",
            using_metrics={"stored": stored, "expected": policy_expected_bytes()},
            label="stored bytes / bytes the retention policy explains",
            period=Duration.days(1),
        )
        return ratio.create_alarm(
            self,
            "BucketOverExpectedSize",
            alarm_description=(
                f"The backup bucket holds more than {EXPECTED_SIZE_HEADROOM}x what the retention policy "
                f"explains ({policy_full_sets()} x the newest full set + {policy_incremental_days()} days "
                "of incrementals): expiry not working, sets that are not this stack's, or a set far larger "
                "than the others"
            ),
            threshold=EXPECTED_SIZE_HEADROOM,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _staging_left_behind(
        self, backup_state_machine: sfn.IStateMachine, failure_function: lambda_.Function
    ) -> cloudwatch.Alarm:
        # Promote moves a run's staged objects and the failure path deletes them: they stay behind
        # only when neither ran to the end. Each such event alarms at once, not a day later.
        five_minutes = Duration.minutes(5)
        causes = cloudwatch.MathExpression(
            expression="SUM([aborted, timed_out, cleanup_failed, failure_errors])",
            using_metrics={
                "aborted": backup_state_machine.metric_aborted(period=five_minutes, statistic="Sum"),
                "timed_out": backup_state_machine.metric_timed_out(period=five_minutes, statistic="Sum"),
                "cleanup_failed": self.cleanup_failed_filter.metric(period=five_minutes, statistic="Sum"),
                "failure_errors": failure_function.metric_errors(period=five_minutes, statistic="Sum"),
            },
            label="backups that may have left staged objects",
            period=five_minutes,
        )
        return causes.create_alarm(
            self,
            "StagingLeftBehind",
            alarm_description=(
                "A backup may have left staged objects under temp/: an execution was aborted or timed out, "
                "or the failure path could not delete them. S3 lifecycle expires them (tier=temp) after "
                "a day; see docs/monitoring-cloudwatch.md"
            ),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )


class BackupDashboard(Construct):
    """What the Grafana dashboard shows, in CloudWatch: time since the last success per type,
    durations, sizes, failures, the state machines' executions, the bucket's size, and the alarms."""

    dashboard: cloudwatch.Dashboard

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dashboard_name: str,
        bucket: s3.IBucket,
        backup_state_machine: sfn.IStateMachine,
        restore_state_machine: sfn.IStateMachine,
        alarms: list[cloudwatch.IAlarm],
        expected_backup_bytes: int = 0,
    ) -> None:
        super().__init__(scope, construct_id)
        hour = Duration.hours(1)
        ages = {backup_type: self._hours_since_success(backup_type) for backup_type in names.BACKUP_TYPES}
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=dashboard_name,
            # A week shows the daily fulls and the RPO sawtooth; the ages need a success in range.
            default_interval=Duration.days(7),
        )
        self.dashboard.add_widgets(
            cloudwatch.SingleValueWidget(
                title="Hours since the last successful backup",
                metrics=list(ages.values()),
                width=8,
                height=5,
            ),
            cloudwatch.GraphWidget(
                title="Hours since the last successful backup",
                left=list(ages.values()),
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=FULL_OVERDUE_HOURS, label="full overdue"),
                    cloudwatch.HorizontalAnnotation(
                        value=names.NO_SUCCESS_ALARM_HOURS, label="no backup at all (alarm)"
                    ),
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, label="hours", show_units=False),
                width=16,
                height=5,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Duration (seconds)",
                left=[backup_metric(DURATION_METRIC, "Maximum", hour, t) for t in names.BACKUP_TYPES],
                left_y_axis=cloudwatch.YAxisProps(min=0),
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Size stored per set (bytes)",
                left=[backup_metric(SIZE_METRIC, "Maximum", hour, t) for t in names.BACKUP_TYPES],
                left_y_axis=cloudwatch.YAxisProps(min=0),
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Failures and successes (per hour)",
                left=[
                    backup_metric(FAILURE_METRIC, "Sum", hour, label="backups failed"),
                    backup_metric(RESTORE_FAILURE_METRIC, "Sum", hour, label="restores failed"),
                ],
                right=[
                    *(
                        backup_metric(names.BACKUP_SUCCESS_METRIC, "Sum", hour, t, label=f"{t} succeeded")
                        for t in names.BACKUP_TYPES
                    ),
                    backup_metric(RESTORE_SUCCESS_METRIC, "Sum", hour, label="restores succeeded"),
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, label="failures", show_units=False),
                right_y_axis=cloudwatch.YAxisProps(min=0, label="successes", show_units=False),
                stacked=False,
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="State machine executions (per hour)",
                left=[
                    backup_state_machine.metric_succeeded(
                        period=hour, statistic="Sum", label="backup succeeded"
                    ),
                    backup_state_machine.metric_failed(period=hour, statistic="Sum", label="backup failed"),
                    backup_state_machine.metric_timed_out(
                        period=hour, statistic="Sum", label="backup timed out"
                    ),
                    backup_state_machine.metric_aborted(period=hour, statistic="Sum", label="backup aborted"),
                    restore_state_machine.metric_succeeded(
                        period=hour, statistic="Sum", label="restore succeeded"
                    ),
                    restore_state_machine.metric_failed(period=hour, statistic="Sum", label="restore failed"),
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
                width=12,
            ),
        )
        stored = stored_bytes(bucket)
        if expected_backup_bytes:
            threshold: cloudwatch.IMetric | None = None
            annotations = [
                cloudwatch.HorizontalAnnotation(value=expected_backup_bytes, label="alarm threshold")
            ]
        else:
            threshold = cloudwatch.MathExpression(
                expression=f"expected * {EXPECTED_SIZE_HEADROOM}",
                using_metrics={"expected": policy_expected_bytes()},
                label=f"alarm threshold ({EXPECTED_SIZE_HEADROOM} x what the retention policy explains)",
                period=Duration.days(1),
            )
            annotations = []
        bucket_widget = cloudwatch.GraphWidget(
            title="Backup bucket size (bytes, daily)",
            left=[stored] if threshold is None else [stored, threshold],
            left_annotations=annotations,
            left_y_axis=cloudwatch.YAxisProps(min=0),
            width=12,
        )
        self.dashboard.add_widgets(
            bucket_widget,
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=alarms, width=12),
        )

    @staticmethod
    def _hours_since_success(backup_type: str) -> cloudwatch.MathExpression:
        """Hours from the last success of ``backup_type`` to each hour: the timestamp Publish emits,
        carried forward (FILL REPEAT), subtracted from the hour it is carried to (EPOCH)."""
        last = backup_metric(LAST_SUCCESS_METRIC, "Maximum", Duration.hours(1), backup_type)
        carried = cloudwatch.MathExpression(
            expression=f"FILL(last_{backup_type}, REPEAT)",
            using_metrics={f"last_{backup_type}": last},
            period=Duration.hours(1),
        )
        return cloudwatch.MathExpression(
            expression=f"(EPOCH(carried_{backup_type}) - carried_{backup_type}) / 3600",
            using_metrics={f"carried_{backup_type}": carried},
            label=f"hours since the last {backup_type}",
            period=Duration.hours(1),
        )


class SlackAlerts(Construct):
    """AWS Chatbot posts what reaches the alert topic to one Slack channel (the workspace must have
    been authorized in the Chatbot console first). Notifications only: the channel role has no
    permissions, and the guardrail would cap any added later at reading CloudWatch."""

    channel: chatbot.SlackChannelConfiguration

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        workspace_id: str,
        channel_id: str,
        topics: list[sns.ITopic],
    ) -> None:
        super().__init__(scope, construct_id)
        self.channel = chatbot.SlackChannelConfiguration(
            self,
            "Channel",
            slack_channel_configuration_name=name,
            slack_workspace_id=workspace_id,
            slack_channel_id=channel_id,
            notification_topics=topics,
            guardrail_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("CloudWatchReadOnlyAccess")],
        )
