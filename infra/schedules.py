"""EventBridge Scheduler schedules that start the backup state machine, with a dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration, TimeZone
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import Construct

from infra import constants as names
from infra.config import StackConfig


class BackupSchedules(Construct):
    """The two schedules (DISABLED when backups are disabled) and the queue of undelivered starts.

    Full backup daily at 02:00; incremental at 08:00, 14:00 and 20:00: a restore point every 6 hours
    (RPO 6 h), and the incremental never lands in the full's 02:00 slot, where it would only meet the
    full's lock. Times are in the configured time zone (default Asia/Tokyo).
    """

    full: scheduler.Schedule
    incremental: scheduler.Schedule
    #: The monthly restore drill (only when the stack names a drill target).
    drill: scheduler.Schedule | None = None
    dead_letter_queue: sqs.Queue

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        starter: lambda_.IFunction,
        config: StackConfig,
        restore_state_machine: sfn.IStateMachine | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(names.DLQ_RETENTION_DAYS),
        )
        NagSuppressions.add_resource_suppressions(
            self.dead_letter_queue,
            [
                NagPackSuppression(
                    id="AwsSolutions-SQS3",
                    reason="This queue is the schedules' dead-letter queue; an alarm watches it instead.",
                )
            ],
        )
        # Scheduler may invoke the starter function and nothing else.
        self.role = iam.Role(
            self, "InvokeStarterRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com")
        )
        time_zone = TimeZone.of(config.schedule_timezone)
        self.full = self._schedule(
            "FullBackup",
            config.full_backup_schedule,
            time_zone,
            names.FULL_BACKUP_INPUT,
            names.schedule_name(config.hostname, "full"),
            starter,
            config.backups_enabled,
        )
        self.incremental = self._schedule(
            "IncrementalBackup",
            config.incremental_backup_schedule,
            time_zone,
            names.INCREMENTAL_BACKUP_INPUT,
            names.schedule_name(config.hostname, "incremental"),
            starter,
            config.backups_enabled,
        )
        if restore_state_machine is not None and config.drills_enabled:
            # Its own role: it may start the restore state machine and nothing else.
            self.drill_role = iam.Role(
                self, "StartDrillRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com")
            )
            self.drill = scheduler.Schedule(
                self,
                "RestoreDrill",
                schedule_name=names.schedule_name(config.hostname, "drill"),
                description="Quest Board Backup: the monthly restore drill (latest set into the drill targets)",
                schedule=scheduler.ScheduleExpression.expression(config.drill_schedule, time_zone),
                enabled=config.backups_enabled,
                target=targets.StepFunctionsStartExecution(
                    restore_state_machine,
                    role=self.drill_role,
                    input=scheduler.ScheduleTargetInput.from_object(dict(names.DRILL_INPUT)),
                    dead_letter_queue=self.dead_letter_queue,
                    retry_attempts=names.SCHEDULE_RETRY_ATTEMPTS,
                    max_event_age=Duration.hours(names.SCHEDULE_MAX_EVENT_AGE_HOURS),
                ),
            )
        # After the targets exist: the grant's DefaultPolicy is created by them.
        NagSuppressions.add_resource_suppressions(
            self.role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="lambda:InvokeFunction on the starter function's versions and aliases (ARN:*) "
                    "as the Lambda target grants it; no other function or action.",
                    applies_to=[RegexAppliesTo(regex=r"/^Resource::<Functions[A-Za-z0-9]+\.Arn>:\*$/g")],
                )
            ],
            apply_to_children=True,
        )

    def _schedule(
        self,
        construct_id: str,
        expression: str,
        time_zone: TimeZone,
        payload: dict[str, str],
        name: str,
        starter: lambda_.IFunction,
        enabled: bool,
    ) -> scheduler.Schedule:
        return scheduler.Schedule(
            self,
            construct_id,
            schedule_name=name,
            description=f"Quest Board Backup: start a {payload['type']} backup",
            schedule=scheduler.ScheduleExpression.expression(expression, time_zone),
            enabled=enabled,
            # The starter names the execution after the backup id derived from the scheduled time, so a
            # retried or duplicated delivery cannot start a second backup for the same slot.
            target=targets.LambdaInvoke(
                starter,
                role=self.role,
                input=scheduler.ScheduleTargetInput.from_object(
                    {**payload, "scheduled_at": scheduler.ContextAttribute.scheduled_time}
                ),
                dead_letter_queue=self.dead_letter_queue,
                retry_attempts=names.SCHEDULE_RETRY_ATTEMPTS,
                # A start older than this is stale: the next scheduled run is the better backup.
                max_event_age=Duration.hours(names.SCHEDULE_MAX_EVENT_AGE_HOURS),
            ),
        )
