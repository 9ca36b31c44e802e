"""Encryption keys (data-key wrapping; the bucket; alerts) and the imported credentials secrets."""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import StackConfig
from infra.permissions import CONTEXT_KEY, s3_service

#: The key operations that touch key material (DescribeKey and the like stay open to IAM).
_CRYPTO_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]


class Security(Construct):
    """The customer-managed keys (rotated yearly) and the DATABASE_URL / REDIS_URL secrets.

    The backup key only wraps data keys, and its key policy refuses any use without a ``backup_id``
    encryption context; the functions that wrap or unwrap are granted it, nothing else. The bucket
    has a key of its own (SSE-KMS), usable only through S3, so reading the bucket never opens a
    backup. Alerts (SNS) get a third key, so CloudWatch's service principal never gets a grant on a
    key that protects backup data.
    """

    backup_key: kms.Key
    bucket_key: kms.Key
    alerts_key: kms.Key
    database_secret: secretsmanager.ISecret
    redis_secret: secretsmanager.ISecret | None

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self.backup_key = self._key_denying(
            "BackupKey",
            "wraps per-backup data keys (encryption context backup_id)",
            "DenyUseWithoutABackupId",
            {"Null": {f"kms:EncryptionContext:{CONTEXT_KEY}": "true"}},
        )
        self.bucket_key = self._key_denying(
            "BucketKey",
            "server-side encryption of the backup bucket (through S3 only)",
            "DenyUseOutsideS3",
            {"StringNotEquals": {"kms:ViaService": s3_service(self)}},
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

    def _key_denying(self, construct_id: str, what: str, sid: str, condition: dict[str, Any]) -> kms.Key:
        """A rotated, retained key whose policy denies every cryptographic use under ``condition``."""
        key = kms.Key(
            self,
            construct_id,
            description=f"Quest Board Backup: {what}",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid=sid,
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=_CRYPTO_ACTIONS,
                resources=["*"],
                conditions=condition,
            )
        )
        return key


def _import_secret(scope: Construct, construct_id: str, reference: str) -> secretsmanager.ISecret:
    """A secret by full ARN (with its 6-character suffix), partial ARN or name."""
    if not reference.startswith("arn:"):
        return secretsmanager.Secret.from_secret_name_v2(scope, construct_id, reference)
    name = reference.split(":secret:", 1)[-1]
    if len(name) > 7 and name[-7] == "-":
        return secretsmanager.Secret.from_secret_complete_arn(scope, construct_id, reference)
    return secretsmanager.Secret.from_secret_partial_arn(scope, construct_id, reference)
