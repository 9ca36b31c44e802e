"""Alerts: the encrypted SNS topic, and the alarms (failed, timed-out, missing and unstarted backups)
that publish to it.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra import constants as names


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
