"""Encryption keys (backups; alerts) and the imported credentials secrets."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import StackConfig


class Security(Construct):
    """The customer-managed keys (rotated yearly) and the DATABASE_URL / REDIS_URL secrets.

    The backup key wraps every backup's data key and encrypts the bucket; only the functions are
    granted it. Alerts (SNS) get a key of their own, so CloudWatch's service principal never gets a
    grant on the key that protects backup data.
    """

    backup_key: kms.Key
    alerts_key: kms.Key
    database_secret: secretsmanager.ISecret
    redis_secret: secretsmanager.ISecret | None

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self.backup_key = kms.Key(
            self,
            "BackupKey",
            description="Quest Board Backup: wraps per-backup data keys and encrypts the backup bucket",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.alerts_key = kms.Key(
            self,
            "AlertsKey",
            description="Quest Board Backup: encrypts the alert topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # CloudWatch alarms publish to the encrypted topic; the account is the only caller allowed.
        self.alerts_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )
        self.database_secret = _import_secret(self, "DatabaseSecret", config.database_secret)
        self.redis_secret = (
            _import_secret(self, "RedisSecret", config.redis_secret) if config.redis_secret else None
        )


def _import_secret(scope: Construct, construct_id: str, reference: str) -> secretsmanager.ISecret:
    """A secret by full ARN (with its 6-character suffix), partial ARN or name."""
    if not reference.startswith("arn:"):
        return secretsmanager.Secret.from_secret_name_v2(scope, construct_id, reference)
    name = reference.split(":secret:", 1)[-1]
    if len(name) > 7 and name[-7] == "-":
        return secretsmanager.Secret.from_secret_complete_arn(scope, construct_id, reference)
    return secretsmanager.Secret.from_secret_partial_arn(scope, construct_id, reference)
