"""What each function may do to the backup bucket and its two keys, as named scopes: the table in
``functions.py`` gives every function its scopes, and these grants turn them into IAM statements.

Backups survive a leaked function credential: no scope deletes outside the staging prefix and the
lock (nothing gets ``s3:DeleteObjectVersion`` or ``s3:BypassGovernanceRetention``), and only
``PUBLISH`` sets Object Lock retention. Reading the bucket does not open a backup: objects are sealed
under per-backup data keys that only the wrapping key unwraps, and only with a backup id as the
encryption context; the bucket's SSE key works only through S3.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NamedTuple

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import IConstruct

from questboard_backup.address import KINDS, STAGING, TIERS, BackupId
from questboard_backup.aws.kms import CONTEXT_KEY
from questboard_backup.catalog import LATEST_POINTER
from questboard_backup.lock import SHARED_LOCK_KEY


def _backup_id_like() -> str:
    """Any backup id as an IAM ``StringLike`` pattern, from the address module's own format: the
    kind becomes ``*``, each digit of the time ``?``."""
    example = str(BackupId.at(KINDS[0], datetime(2000, 1, 1, tzinfo=UTC)))
    return re.sub(r"\d", "?", example.replace(f"_{KINDS[0]}_", "_*_", 1))


#: Backup ids as IAM sees them in the encryption context.
BACKUP_ID_LIKE = _backup_id_like()
LOCK_FOLDER = SHARED_LOCK_KEY.split("/", 1)[0]


class S3Scope(Enum):
    """One thing a function does with the bucket (keys relative to ``{hostname}/``)."""

    READ = "read"  # every object and listing: a restore may read another host's sets
    READ_OWN = "read_own"  # this deployment's objects and listings only (the admin API)
    STAGE = "stage"  # write a set being made under temp/
    PUBLISH = "publish"  # copy a verified set into its tier, with its retention
    POINTER = "pointer"  # move latest.json
    LOCK = "lock"  # take, renew and release the backup lock under locks/
    RENEW_LOCK = "renew_lock"  # rewrite the lock it holds (a step that must still hold it), never delete
    CLEAN_STAGING = "clean_staging"  # delete what is under temp/ (staged sets, unfinished uploads)


class KmsAccess(Enum):
    GENERATE_DATA_KEY = "generate"  # wraps a fresh data key for a new backup
    DECRYPT = "decrypt"  # unwraps an existing backup's data key


#: The scopes that only read: the bucket key's Decrypt is all they get of it.
READ_SCOPES = frozenset({S3Scope.READ, S3Scope.READ_OWN})

_PUT = ("s3:PutObject", "s3:PutObjectTagging")


class S3Statement(NamedTuple):
    """Actions on resources given as suffixes of the bucket ARN ("" = the bucket), under conditions."""

    actions: tuple[str, ...]
    resources: list[str]
    conditions: dict[str, dict[str, Any]] | None = None


def s3_statements(hostname: str, scope: S3Scope) -> list[S3Statement]:
    """The IAM statements of one scope."""
    own, staging = f"/{hostname}/*", f"/{hostname}/{STAGING}/*"
    tiers = [f"/{hostname}/{tier}/*" for tier in TIERS]
    statements: dict[S3Scope, list[S3Statement]] = {
        S3Scope.READ: [S3Statement(("s3:ListBucket",), [""]), S3Statement(("s3:GetObject",), ["/*"])],
        # A listing is refused unless its prefix is inside this deployment's folder.
        S3Scope.READ_OWN: [
            S3Statement(("s3:ListBucket",), [""], {"StringLike": {"s3:prefix": [f"{hostname}/*"]}}),
            S3Statement(("s3:GetObject",), [own]),
        ],
        S3Scope.STAGE: [S3Statement((*_PUT, "s3:AbortMultipartUpload"), [staging])],
        # The source's tags are read by CopyObject; retention needs its own action.
        S3Scope.PUBLISH: [
            S3Statement(("s3:GetObjectTagging",), [staging]),
            S3Statement((*_PUT, "s3:PutObjectRetention"), tiers),
        ],
        S3Scope.POINTER: [S3Statement(("s3:PutObject",), [f"/{hostname}/{LATEST_POINTER}"])],
        S3Scope.LOCK: [S3Statement(("s3:PutObject", "s3:DeleteObject"), [f"/{hostname}/{LOCK_FOLDER}/*"])],
        S3Scope.RENEW_LOCK: [S3Statement(("s3:PutObject",), [f"/{hostname}/{LOCK_FOLDER}/*"])],
        S3Scope.CLEAN_STAGING: [
            S3Statement(("s3:ListBucketMultipartUploads",), [""]),
            S3Statement(("s3:DeleteObject", "s3:AbortMultipartUpload"), [staging]),
        ],
    }
    return statements[scope]


def wildcard_resources(hostname: str) -> set[str]:
    """Every object resource pattern ``s3_statements`` uses (cdk-nag's IAM5 is told about each)."""
    return {
        resource
        for scope in S3Scope
        for statement in s3_statements(hostname, scope)
        for resource in statement.resources
        if resource.endswith("*")
    }


def grant_bucket(
    grantee: iam.IGrantable,
    bucket: s3.IBucket,
    bucket_key: kms.IKey,
    hostname: str,
    scopes: frozenset[S3Scope],
) -> None:
    """The scopes' S3 actions, and the bucket key's through S3 only (SSE-KMS): Decrypt to read,
    GenerateDataKey too to write."""
    for scope in sorted(scopes, key=lambda item: item.value):
        for statement in s3_statements(hostname, scope):
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=list(statement.actions),
                resource_arns=[bucket.bucket_arn + suffix for suffix in statement.resources],
                conditions=statement.conditions,
            )
    if not scopes:
        return
    writes = bool(scopes - READ_SCOPES)
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["kms:Decrypt", "kms:GenerateDataKey"] if writes else ["kms:Decrypt"],
        resource_arns=[bucket_key.key_arn],
        conditions={"StringEquals": {"kms:ViaService": s3_service(bucket_key)}},
    )


def grant_wrapping_key(grantee: iam.IGrantable, key: kms.IKey, access: KmsAccess) -> None:
    """One action on the data-key wrapping key, only with a backup id as the encryption context."""
    action = "kms:GenerateDataKey" if access is KmsAccess.GENERATE_DATA_KEY else "kms:Decrypt"
    iam.Grant.add_to_principal(
        grantee=grantee, actions=[action], resource_arns=[key.key_arn], conditions=backup_id_context()
    )


def backup_id_context() -> dict[str, dict[str, object]]:
    """The encryption context must be exactly ``{backup_id: <a backup id>}``."""
    return {
        "StringLike": {f"kms:EncryptionContext:{CONTEXT_KEY}": BACKUP_ID_LIKE},
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": [CONTEXT_KEY]},
    }


def s3_service(scope: IConstruct) -> str:
    return f"s3.{Stack.of(scope).region}.amazonaws.com"
