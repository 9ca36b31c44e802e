"""The backup bucket (SSE-KMS, TLS only, versioned, Object Lock, tiered lifecycle by object tag) and
its access-log bucket. The cost rationale of the storage classes is on ``lifecycle_rules``.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constants import (
    ABORT_MULTIPART_AFTER_DAYS,
    ACCESS_LOG_RETENTION_DAYS,
    MONTHLY_GLACIER_IR_AFTER_DAYS,
    NONCURRENT_VERSION_DAYS,
    SHORT_LIVED_NONCURRENT_DAYS,
    TIER_EXPIRATION_DAYS,
    TIER_TAG,
)


def lifecycle_rules() -> list[s3.LifecycleRule]:
    """One rule per tier (by tag), plus one bucket-wide rule for uploads and old versions.

    Tags, not prefixes: keys are ``{hostname}/{tier}/{id}/...`` and a lifecycle prefix cannot
    wildcard the hostname, so the S3 backend tags every object ``tier=<tier>`` (staged objects
    ``tier=temp``, re-tagged with their final tier when promoted).

    Storage classes, for cost: STANDARD_IA and GLACIER_IR bill at least 30 and 90 days. The
    incremental (1 day), daily (7) and weekly (30) tiers would pay that minimum for days they never
    live (weekly's 30 days in IA cost as much as STANDARD, plus transition and retrieval fees), so
    they stay STANDARD. Monthly sets live 365 days and move to GLACIER_IR after 30: about a sixth of
    STANDARD's price per GB-month for the remaining 335 days (well past its 90-day minimum), still
    millisecond reads; its retrieval fee (about 3x IA's) only matters for a rare restore of a
    months-old set. The first 30 days stay STANDARD because the newest monthly set is also a recent
    full backup, the one a restore or a drill is most likely to read.
    """
    rules = [
        s3.LifecycleRule(
            id="all-objects",
            abort_incomplete_multipart_upload_after=Duration.days(ABORT_MULTIPART_AFTER_DAYS),
            noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS),
            expired_object_delete_marker=True,
        )
    ]
    for tier, days in TIER_EXPIRATION_DAYS.items():
        transitions = None
        if tier == "monthly":
            transitions = [
                s3.Transition(
                    storage_class=s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
                    transition_after=Duration.days(MONTHLY_GLACIER_IR_AFTER_DAYS),
                )
            ]
        short_lived = days <= SHORT_LIVED_NONCURRENT_DAYS
        rules.append(
            s3.LifecycleRule(
                id=f"tier-{tier}",
                tag_filters={TIER_TAG: tier},
                expiration=Duration.days(days),
                transitions=transitions,
                noncurrent_version_expiration=(
                    Duration.days(SHORT_LIVED_NONCURRENT_DAYS) if short_lived else None
                ),
            )
        )
    return rules


class BackupStorage(Construct):
    """The bucket every backup set is written to, and the bucket its access logs go to."""

    bucket: s3.Bucket
    access_log_bucket: s3.Bucket

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, bucket_name: str = "") -> None:
        super().__init__(scope, construct_id)
        # Server access logs cannot be delivered to an SSE-KMS bucket, hence SSE-S3 here. Not logged
        # itself (its writes would log themselves); cdk-nag accepts a log target bucket as such.
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-logs", expiration=Duration.days(ACCESS_LOG_RETENTION_DAYS))
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self,
            "Backups",
            bucket_name=bucket_name or None,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            # One KMS call per bucket key period instead of per object part: cheaper multipart uploads.
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            # No default retention: staged objects must stay deletable. The functions put each object
            # in its tier with that tier's retention (BACKUP_S3_OBJECT_LOCK), then lifecycle expires it.
            object_lock_enabled=True,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="backups/",
            lifecycle_rules=lifecycle_rules(),
            removal_policy=RemovalPolicy.RETAIN,
        )
