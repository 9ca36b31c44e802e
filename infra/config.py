"""Deployment settings read once from CDK context (cdk.json, or `-c key=value`) into a frozen object.

Every key, its default and its meaning are listed in DEFAULTS and in the README's context table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULTS: dict[str, Any] = {
    "hostname": "questboard",
    "backupsEnabled": True,
    "scheduleTimezone": "Asia/Tokyo",
    "fullBackupSchedule": "cron(0 2 * * ? *)",
    "incrementalBackupSchedule": "cron(0 8,14,20 * * ? *)",
    "vpcId": None,
    "subnets": None,
    "securityGroupIds": None,
    "createVpcEndpoints": True,
    "databaseSecret": None,
    "redisSecret": "",
    "bucketName": "",
    "alertEmail": "",
    "alertTopicArn": "",
    "logLevel": "INFO",
    "objectLockMode": "governance",
    "apiThrottleRate": 5,
    "apiThrottleBurst": 10,
    "apiAuthorizerCacheSeconds": 60,
    "downloadUrlExpirySeconds": 900,
    "apiWafAclArn": "",
    "expectedBackupBytes": 0,
    "alertSlackWorkspaceId": "",
    "alertSlackChannelId": "",
    "drillSchedule": "cron(0 5 1 * ? *)",
    "drillDatabase": "",
    "drillRedisDb": None,
    "drillFilesRoot": "",
    "drillChecks": [],
    "drillRtoSeconds": 3600,
    "uploadsFileSystemId": "",
    "uploadsAccessPointId": "",
    "filesMountPath": "/mnt/questboard",
    "filesPaths": [],
    "configPaths": [],
    "uploadsS3Uri": "",
    "configParameterPaths": [],
    "configSecretIds": [],
    "componentRuntime": "auto",
}

_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_VPC = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SG = re.compile(r"^sg-[0-9a-f]{8,17}$")
_ROUTE_TABLE = re.compile(r"^rtb-[0-9a-f]{8,17}$")
_AZ = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
_SCHEDULE = re.compile(r"^(cron|rate)\(.+\)$")
_EFS = re.compile(r"^fs-[0-9a-f]{8,40}$")
_EFS_ACCESS_POINT = re.compile(r"^fsap-[0-9a-f]{8,40}$")
_MOUNT_PATH = re.compile(r"^/mnt/[A-Za-z0-9._-]+$")
_SSM_PATH = re.compile(r"^/[A-Za-z0-9_.\-/]{1,1000}[A-Za-z0-9_.\-]$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_DRILL_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$")
_WAF_ACL_ARN = re.compile(
    r"^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:\d{12}:regional/webacl/[A-Za-z0-9_-]+/[0-9a-f-]+$"
)
#: AWS Chatbot's patterns (AWS::Chatbot::SlackChannelConfiguration): workspace "T0123ABCD", channel
#: "C0123ABCD" (public) or "G..." (private).
_SLACK_WORKSPACE = re.compile(r"^[0-9A-Z]{1,255}$")
_SLACK_CHANNEL = re.compile(r"^[A-Za-z0-9]{1,256}$")
#: S3's largest bucket is unbounded; a petabyte-scale threshold is already far past this tool's purpose.
_MAX_EXPECTED_BYTES = 10**18
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}
#: GOVERNANCE: an account admin with s3:BypassGovernanceRetention may still delete early;
#: COMPLIANCE: nobody, the root user included, until each object's retention ends.
_OBJECT_LOCK_MODES = {"GOVERNANCE", "COMPLIANCE"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ContextError(ValueError):
    """A context setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class SubnetConfig:
    subnet_id: str
    availability_zone: str
    route_table_id: str


@dataclass(frozen=True)
class StackConfig:
    hostname: str
    backups_enabled: bool
    schedule_timezone: str
    full_backup_schedule: str
    incremental_backup_schedule: str
    vpc_id: str
    subnets: tuple[SubnetConfig, ...]
    security_group_ids: tuple[str, ...]
    create_vpc_endpoints: bool
    database_secret: str
    redis_secret: str
    bucket_name: str
    alert_email: str
    alert_topic_arn: str
    log_level: str
    object_lock_mode: str = "GOVERNANCE"
    #: The admin API's stage-wide throttle: steady requests per second, and the burst above it.
    api_throttle_rate: float = 5
    api_throttle_burst: int = 10
    #: How long API Gateway caches an authorizer decision: how long a revoked token may still work.
    api_authorizer_cache_seconds: int = 60
    #: Lifetime of a presigned download URL (S3 allows SigV4 URLs up to 7 days; the API, 15 minutes).
    download_url_expiry_seconds: int = 900
    #: A regional WAFv2 web ACL to attach to the API's stage ("" = none).
    api_waf_acl_arn: str = ""
    #: The bucket's stored bytes that alarm (BucketOverExpectedSize); 0: derived from the retention
    #: policy and the newest full set's size (infra/monitoring.py, docs/monitoring-cloudwatch.md).
    expected_backup_bytes: int = 0
    #: AWS Chatbot: the alert topic goes to this Slack channel ("" and "" = no Chatbot).
    alert_slack_workspace_id: str = ""
    alert_slack_channel_id: str = ""
    #: Restore drills: when (a monthly schedule; drills run only when a drill target is named), the
    #: database beside production's and the Redis db N (the backup's db k into N+k) they restore into,
    #: a scratch folder for files, SQL smoke checks, and the RTO a drill is held to.
    drill_schedule: str = "cron(0 5 1 * ? *)"
    drill_database: str = ""
    drill_redis_db: int | None = None
    drill_files_root: str = ""
    drill_checks: tuple[str, ...] = ()
    drill_rto_seconds: int = 3600
    #: Uploads and configuration on EFS: the file system and access point the functions mount at
    #: files_mount_path (read-only for backups), and the paths beneath it the files and config
    #: components back up (BACKUP_FILES_PATHS, BACKUP_CONFIG_PATHS).
    uploads_file_system_id: str = ""
    uploads_access_point_id: str = ""
    files_mount_path: str = "/mnt/questboard"
    files_paths: tuple[str, ...] = ()
    config_paths: tuple[str, ...] = ()
    #: Uploads kept in S3 (``s3://bucket/prefix``), and configuration in SSM Parameter Store paths and
    #: Secrets Manager secrets (names): the s3uploads and ssmconfig sources.
    uploads_s3_uri: str = ""
    config_parameter_paths: tuple[str, ...] = ()
    config_secret_ids: tuple[str, ...] = ()
    #: Where PostgreSQL's dump and restore run: "auto" (a Fargate task when the projected duration
    #: exceeds the Lambda's), "lambda" (no Fargate path deployed) or "fargate" (always).
    component_runtime: str = "auto"

    @property
    def drills_enabled(self) -> bool:
        return bool(self.drill_database) or self.drill_redis_db is not None

    def files_environment(self) -> dict[str, str]:
        """Where the uploads and configuration are: BACKUP_FILES_PATHS and BACKUP_CONFIG_PATHS on the
        mounted file system, BACKUP_UPLOADS_S3_URI, BACKUP_CONFIG_SSM_PATHS, BACKUP_CONFIG_SECRET_IDS."""
        return {
            "BACKUP_FILES_PATHS": ",".join(self.files_paths),
            "BACKUP_CONFIG_PATHS": ",".join(self.config_paths),
            "BACKUP_UPLOADS_S3_URI": self.uploads_s3_uri,
            "BACKUP_CONFIG_SSM_PATHS": ",".join(self.config_parameter_paths),
            "BACKUP_CONFIG_SECRET_IDS": ",".join(self.config_secret_ids),
        }

    def drill_environment(self) -> dict[str, str]:
        """The functions' BACKUP_DRILL_* variables (lambdas/dependencies.py reads them)."""
        return {
            "BACKUP_DRILL_DATABASE": self.drill_database,
            "BACKUP_DRILL_REDIS_DB": "" if self.drill_redis_db is None else str(self.drill_redis_db),
            "BACKUP_DRILL_FILES_ROOT": self.drill_files_root,
            "BACKUP_DRILL_CHECKS": json.dumps(list(self.drill_checks)),
            "BACKUP_DRILL_RTO_SECONDS": str(self.drill_rto_seconds),
        }

    @classmethod
    def from_context(cls, get: Mapping[str, Any]) -> StackConfig:
        """Validate every setting; the first problem is raised by its context key."""

        def value(key: str) -> Any:
            raw = get.get(key)
            return DEFAULTS[key] if raw is None else raw

        slack_workspace_id, slack_channel_id = _slack(value)

        return cls(
            hostname=_matching(value, "hostname", _HOSTNAME),
            backups_enabled=_flag(value, "backupsEnabled"),
            schedule_timezone=_text(value, "scheduleTimezone", required=True),
            full_backup_schedule=_matching(value, "fullBackupSchedule", _SCHEDULE),
            incremental_backup_schedule=_matching(value, "incrementalBackupSchedule", _SCHEDULE),
            vpc_id=_matching(value, "vpcId", _VPC),
            subnets=_subnets(value("subnets")),
            security_group_ids=_ids(value, "securityGroupIds", _SG),
            create_vpc_endpoints=_flag(value, "createVpcEndpoints"),
            database_secret=_text(value, "databaseSecret", required=True),
            redis_secret=_text(value, "redisSecret"),
            bucket_name=_matching(value, "bucketName", _BUCKET, optional=True),
            alert_email=_matching(value, "alertEmail", _EMAIL, optional=True),
            alert_topic_arn=_matching(value, "alertTopicArn", _SNS_ARN, optional=True),
            log_level=_choice(value, "logLevel", _LOG_LEVELS),
            object_lock_mode=_choice(value, "objectLockMode", _OBJECT_LOCK_MODES),
            # API Gateway's default account quota: 10,000 requests per second, bursts of 5,000.
            api_throttle_rate=_number(value, "apiThrottleRate", 0.1, 10_000, whole=False),
            api_throttle_burst=int(_number(value, "apiThrottleBurst", 1, 5_000)),
            api_authorizer_cache_seconds=int(_number(value, "apiAuthorizerCacheSeconds", 0, 300)),
            download_url_expiry_seconds=int(_number(value, "downloadUrlExpirySeconds", 1, 900)),
            api_waf_acl_arn=_matching(value, "apiWafAclArn", _WAF_ACL_ARN, optional=True),
            expected_backup_bytes=int(_number(value, "expectedBackupBytes", 0, _MAX_EXPECTED_BYTES)),
            alert_slack_workspace_id=slack_workspace_id,
            alert_slack_channel_id=slack_channel_id,
            drill_schedule=_matching(value, "drillSchedule", _SCHEDULE),
            drill_database=_matching(value, "drillDatabase", _DRILL_DATABASE, optional=True),
            drill_redis_db=_drill_redis_db(value("drillRedisDb")),
            drill_files_root=_drill_files_root(value("drillFilesRoot")),
            drill_checks=_drill_checks(value("drillChecks")),
            drill_rto_seconds=int(_number(value, "drillRtoSeconds", 1, 7 * 86400)),
            **_efs_fields(value),
            **_aws_source_fields(value),
            component_runtime=_choice(value, "componentRuntime", {"AUTO", "LAMBDA", "FARGATE"}).lower(),
        )


def context_of(node: Any) -> dict[str, Any]:
    """Read every key of DEFAULTS from a construct node's context (None where unset)."""
    return {key: node.try_get_context(key) for key in DEFAULTS}


def _text(value: Any, key: str, required: bool = False) -> str:
    raw = value(key)
    if raw is None or (required and not str(raw).strip()):
        raise ContextError(f"context {key!r} is required (cdk.json or `-c {key}=...`)")
    if not isinstance(raw, str):
        raise ContextError(f"context {key!r} must be a string, not {type(raw).__name__}")
    return raw.strip()


def _matching(value: Any, key: str, pattern: re.Pattern[str], optional: bool = False) -> str:
    text = _text(value, key, required=not optional)
    if text and not pattern.match(text):
        raise ContextError(f"context {key!r} is not valid: {text!r}")
    return text


def _choice(value: Any, key: str, choices: set[str]) -> str:
    text = _text(value, key, required=True).upper()
    if text not in choices:
        raise ContextError(f"context {key!r} must be one of {sorted(choices)}, not {text!r}")
    return text


def _number(value: Any, key: str, low: float, high: float, whole: bool = True) -> float:
    """A number from ``low`` to ``high`` (``-c key=60`` arrives as a string); ``whole``: an integer."""
    raw = value(key)
    kind = "a whole number" if whole else "a number"
    try:
        if isinstance(raw, bool):  # True is an int to Python, not a count to an operator
            raise ValueError(raw)
        number = float(raw)
    except (TypeError, ValueError):
        raise ContextError(f"context {key!r} must be {kind} from {low:g} to {high:g}, not {raw!r}") from None
    if not low <= number <= high or (whole and not number.is_integer()):
        raise ContextError(f"context {key!r} must be {kind} from {low:g} to {high:g}, not {raw!r}")
    return number


def _slack(value: Any) -> tuple[str, str]:
    """Both Slack ids or neither: one alone would deploy a Chatbot configuration that cannot work."""
    workspace = _matching(value, "alertSlackWorkspaceId", _SLACK_WORKSPACE, optional=True)
    channel = _matching(value, "alertSlackChannelId", _SLACK_CHANNEL, optional=True)
    if workspace and not channel:
        raise ContextError("context 'alertSlackChannelId' is required when 'alertSlackWorkspaceId' is set")
    if channel and not workspace:
        raise ContextError("context 'alertSlackWorkspaceId' is required when 'alertSlackChannelId' is set")
    return workspace, channel


def _flag(value: Any, key: str) -> bool:
    raw = value(key)
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()  # `-c key=false` arrives as a string
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ContextError(f"context {key!r} must be true or false, not {raw!r}")


def _efs_fields(value: Any) -> dict[str, Any]:
    """EFS: the file system and access point go together, and the files and config paths lie beneath
    the mount path (a function has no files of its own: without a file system, no paths)."""
    file_system = _matching(value, "uploadsFileSystemId", _EFS, optional=True)
    access_point = _matching(value, "uploadsAccessPointId", _EFS_ACCESS_POINT, optional=True)
    mount = _matching(value, "filesMountPath", _MOUNT_PATH)
    if bool(file_system) != bool(access_point):
        raise ContextError(
            "context 'uploadsFileSystemId' and 'uploadsAccessPointId' go together: set both or neither"
        )
    paths = {}
    for key in ("filesPaths", "configPaths"):
        listed = _optional_list(value(key), key)
        for path in listed:
            if not isinstance(path, str) or not path.startswith(mount + "/") or "/../" in path + "/":
                raise ContextError(
                    f"context {key!r} must list paths beneath filesMountPath {mount}, not {path!r}"
                )
            if not file_system:
                raise ContextError(
                    f"context {key!r} needs uploadsFileSystemId: the functions have no files of their own"
                )
        paths[key] = tuple(listed)
    return {
        "uploads_file_system_id": file_system,
        "uploads_access_point_id": access_point,
        "files_mount_path": mount,
        "files_paths": paths["filesPaths"],
        "config_paths": paths["configPaths"],
    }


def _aws_source_fields(value: Any) -> dict[str, Any]:
    uri = _text(value, "uploadsS3Uri")
    if uri:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not _BUCKET.match(bucket) or not prefix.strip("/") or "*" in prefix:
            raise ContextError(f"context 'uploadsS3Uri' must be s3://BUCKET/PREFIX, not {uri!r}")
    found: dict[str, tuple[str, ...]] = {}
    for key, pattern in (("configParameterPaths", _SSM_PATH), ("configSecretIds", _SECRET_NAME)):
        listed = _optional_list(value(key), key)
        for item in listed:
            if not isinstance(item, str) or not pattern.match(item):
                raise ContextError(f"context {key!r} lists {item!r}, which is not valid")
        found[key] = tuple(listed)
    return {
        "uploads_s3_uri": uri,
        "config_parameter_paths": found["configParameterPaths"],
        "config_secret_ids": found["configSecretIds"],
    }


def _drill_redis_db(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not str(raw).isdigit() or not 0 <= int(raw) <= 15:
        raise ContextError(f"context 'drillRedisDb' must be a Redis db number 0-15 (or null), not {raw!r}")
    return int(raw)


def _drill_files_root(raw: Any) -> str:
    text = str(raw or "").strip()
    if text and (not text.startswith("/") or text.rstrip("/") == ""):
        raise ContextError(
            f"context 'drillFilesRoot' must be an absolute scratch folder other than /, not {text!r}"
        )
    return text


def _drill_checks(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):  # `-c drillChecks='[...]'` arrives as a string
        try:
            raw = json.loads(raw) if raw.strip() else []
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, list) or not all(isinstance(check, str) and check.strip() for check in raw):
        raise ContextError("context 'drillChecks' must be a list of SQL queries, each answering true")
    return tuple(check.strip() for check in raw)


def _optional_list(raw: Any, key: str) -> list[Any]:
    """A list that may be empty (``[]``, "", ``-c key='[]'``): else read as ``_json_list`` reads it."""
    if raw in ([], "", None) or (isinstance(raw, str) and raw.strip() == "[]"):
        return []
    return _json_list(raw, key)


def _json_list(raw: Any, key: str) -> list[Any]:
    if isinstance(raw, str):  # `-c key='[...]'` arrives as a string
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list) or not raw:
        raise ContextError(f"context {key!r} must be a non-empty list")
    return raw


def _ids(value: Any, key: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    raw = value(key)
    if raw is None:
        raise ContextError(f"context {key!r} is required (cdk.json or `-c {key}=...`)")
    ids = tuple(str(item).strip() for item in _json_list(raw, key))
    for item in ids:
        if not pattern.match(item):
            raise ContextError(f"context {key!r} holds an invalid id: {item!r}")
    return ids


def _subnets(raw: Any) -> tuple[SubnetConfig, ...]:
    key = "subnets"
    if raw is None:
        raise ContextError(f"context {key!r} is required (cdk.json or `-c {key}=...`)")
    subnets = []
    for item in _json_list(raw, key):
        if not isinstance(item, Mapping):
            raise ContextError(
                f"context {key!r}: each item is an object with subnetId, availabilityZone, routeTableId"
            )
        subnet = SubnetConfig(
            subnet_id=str(item.get("subnetId", "")),
            availability_zone=str(item.get("availabilityZone", "")),
            route_table_id=str(item.get("routeTableId", "")),
        )
        for field_name, text, pattern in (
            ("subnetId", subnet.subnet_id, _SUBNET),
            ("availabilityZone", subnet.availability_zone, _AZ),
            ("routeTableId", subnet.route_table_id, _ROUTE_TABLE),
        ):
            if not pattern.match(text):
                raise ContextError(f"context {key!r}: invalid {field_name} {text!r}")
        subnets.append(subnet)
    return tuple(subnets)
