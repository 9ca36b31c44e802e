"""The Quest Board Backup stack: composes one construct per capability and exposes their outputs."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra import constants as names
from infra.api import AdminApi
from infra.catalog import BackupCatalog
from infra.config import StackConfig
from infra.fargate import FargatePath
from infra.files_mount import FilesMount
from infra.functions import BackupFunctions, FunctionDependencies, LayerPaths
from infra.monitoring import (
    AlertTopic,
    BackupAlarms,
    BackupDashboard,
    SlackAlerts,
    StorageAlarms,
    resource_name,
)
from infra.network import Network
from infra.schedules import BackupSchedules
from infra.security import Security
from infra.storage import BackupStorage
from infra.workflows import BackupWorkflow, RestoreWorkflow


class QuestBoardBackupStack(Stack):
    """Bucket, keys, network endpoints, functions, state machines, schedules, alarms, the catalog
    table and the admin API."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        layer_paths: LayerPaths | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.security = Security(self, "Security", config=config)
        self.storage = BackupStorage(
            self, "Storage", key=self.security.bucket_key, bucket_name=config.bucket_name
        )
        self.network = Network(self, "Network", config=config)
        self.alerts = AlertTopic(self, "Alerts", key=self.security.alerts_key, alert_email=config.alert_email)
        self.files_mount = FilesMount(
            self, "FilesMount", config=config, security_groups=self.network.security_groups
        )
        function_deps = FunctionDependencies(
            bucket=self.storage.bucket,
            key=self.security.backup_key,
            bucket_key=self.security.bucket_key,
            object_lock_mode=config.object_lock_mode,
            alert_topic=self.alerts.topic,
            database_secret=self.security.database_secret,
            redis_secret=self.security.redis_secret,
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            security_groups=self.network.security_groups,
            hostname=config.hostname,
            backups_enabled=config.backups_enabled,
            log_level=config.log_level,
            schedule_timezone=config.schedule_timezone,
            drill_environment=config.drill_environment(),
            files_environment=config.files_environment(),
            files_mounts=self.files_mount.mounts,
            source_config=config,
            component_runtime=config.component_runtime,
        )
        self.functions = BackupFunctions(
            self, "Functions", deps=function_deps, layer_paths=layer_paths or LayerPaths()
        )
        # The same handlers on ECS Fargate, for a PostgreSQL too large for 15 minutes (docs/fargate.md).
        self.fargate: FargatePath | None = None
        if config.component_runtime != "lambda":
            self.fargate = FargatePath(
                self,
                "Fargate",
                deps=function_deps,
                layer_paths=layer_paths or LayerPaths(),
                environment=self.functions.environment,
            )
        self.backup = BackupWorkflow(self, "Backup", functions=self.functions, fargate=self.fargate)
        self.restore = RestoreWorkflow(self, "Restore", functions=self.functions, fargate=self.fargate)
        starter = self.functions[names.BACKUP_START]
        starter.add_environment("BACKUP_STATE_MACHINE_ARN", self.backup.state_machine.state_machine_arn)
        self.backup.state_machine.grant_start_execution(starter)
        self.schedules = BackupSchedules(
            self,
            "Schedules",
            starter=starter,
            config=config,
            restore_state_machine=self.restore.state_machine,
        )
        self.catalog = BackupCatalog(self, "Catalog")
        self.catalog.add_writer(self.functions[names.BACKUP_PUBLISH])
        for module in (names.BACKUP_FAILURE, names.RESTORE_REPORT, names.RESTORE_FAILURE):
            self.catalog.add_recorder(self.functions[module])
        self.catalog.add_reader(self.functions[names.API])
        self.api = AdminApi(
            self,
            "AdminApi",
            handler=self.functions[names.API],
            authorizer=self.functions[names.API_AUTHORIZER],
            backup_state_machine=self.backup.state_machine,
            config=config,
        )
        topics: list[sns.ITopic] = [self.alerts.topic]
        if config.alert_topic_arn:
            topics.append(sns.Topic.from_topic_arn(self, "ExtraAlertTopic", config.alert_topic_arn))
        self.alarms = BackupAlarms(
            self,
            "Alarms",
            backup_state_machine=self.backup.state_machine,
            restore_state_machine=self.restore.state_machine,
            dead_letter_queue=self.schedules.dead_letter_queue,
            topics=topics,
            backups_enabled=config.backups_enabled,
        )
        self.storage_alarms = StorageAlarms(
            self,
            "StorageAlarms",
            bucket=self.storage.bucket,
            backup_state_machine=self.backup.state_machine,
            failure_function=self.functions[names.BACKUP_FAILURE],
            topics=topics,
            watch_function=self.functions[names.STORAGE_WATCH],
            expected_backup_bytes=config.expected_backup_bytes,
        )
        self.dashboard = BackupDashboard(
            self,
            "Dashboard",
            dashboard_name=resource_name(config.hostname),
            bucket=self.storage.bucket,
            backup_state_machine=self.backup.state_machine,
            restore_state_machine=self.restore.state_machine,
            alarms=[*self.alarms.alarms.values(), *self.storage_alarms.alarms.values()],
            expected_backup_bytes=config.expected_backup_bytes,
        )
        self.slack: SlackAlerts | None = None
        if config.alert_slack_workspace_id:
            self.slack = SlackAlerts(
                self,
                "SlackAlerts",
                name=resource_name(config.hostname),
                workspace_id=config.alert_slack_workspace_id,
                channel_id=config.alert_slack_channel_id,
                topics=[self.alerts.topic],
            )
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name)
        # What a DR restore with the CLI needs besides the bucket (docs/dr-runbook.md): BACKUP_KMS_KEY_ID.
        CfnOutput(self, "BackupKeyArn", value=self.security.backup_key.key_arn)
        CfnOutput(self, "BackupStateMachineArn", value=self.backup.state_machine.state_machine_arn)
        CfnOutput(self, "RestoreStateMachineArn", value=self.restore.state_machine.state_machine_arn)
        CfnOutput(self, "AlertTopicArn", value=self.alerts.topic.topic_arn)
        CfnOutput(self, "AdminApiUrl", value=self.api.admin_url)
        # `questboard-backup token create` stores token hashes here (BACKUP_API_TOKENS_SECRET).
        CfnOutput(self, "ApiTokensSecretArn", value=self.api.tokens_secret.secret_arn)
        CfnOutput(self, "CatalogTableName", value=self.catalog.table.table_name)
