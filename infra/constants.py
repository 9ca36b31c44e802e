"""Names shared by the constructs, the stack and the infrastructure tests: ids, modules, metrics."""

from __future__ import annotations

from typing import Final

from aws_cdk import aws_logs as logs

STACK_NAME: Final = "QuestBoardBackup"

#: Powertools: one service for every function, so the alarm's metric has a single known dimension.
SERVICE_NAME: Final = "questboard-backup"
METRICS_NAMESPACE: Final = "QuestBoardBackup"
#: Emitted (Count 1) by backup_publish after every successful backup, dimensions service and type.
BACKUP_SUCCESS_METRIC: Final = "backup_success_total"
BACKUP_TYPES: Final = ("full", "incremental")

#: Object tag the S3 backend writes on every object; lifecycle rules filter on it.
TIER_TAG: Final = "tier"
#: Days an object of each tier lives in S3 (docs and questboard_backup.retention agree).
TIER_EXPIRATION_DAYS: Final[dict[str, int]] = {
    "incremental": 1,
    "daily": 7,
    "weekly": 30,
    "monthly": 365,
    "temp": 1,
}
#: Days before a monthly set moves to Glacier Instant Retrieval (see storage.py for the cost rationale).
MONTHLY_GLACIER_IR_AFTER_DAYS: Final = 30
#: Days a replaced or deleted object version is kept (undo window for an operator's mistake).
NONCURRENT_VERSION_DAYS: Final = 7
#: Staging (tier=temp) and incremental copies are short-lived: their old versions go after one day.
SHORT_LIVED_NONCURRENT_DAYS: Final = 1
ABORT_MULTIPART_AFTER_DAYS: Final = 1
ACCESS_LOG_RETENTION_DAYS: Final = 365

# Function modules in lambdas/ (handler = "{module}.handler"), as docs/serverless.md names them.
BACKUP_START: Final = "backup_start"
BACKUP_PREPARE: Final = "backup_prepare"
BACKUP_DUMP: Final = "backup_dump"
BACKUP_SEAL: Final = "backup_seal"
BACKUP_VERIFY: Final = "backup_verify"
BACKUP_PROMOTE: Final = "backup_promote"
BACKUP_PUBLISH: Final = "backup_publish"
BACKUP_RELEASE: Final = "backup_release"
BACKUP_FAILURE: Final = "backup_failure"
RESTORE_RESOLVE: Final = "restore_resolve"
RESTORE_VALIDATE: Final = "restore_validate"
RESTORE_COMPONENT: Final = "restore_component"
RESTORE_SWAP: Final = "restore_swap"
RESTORE_VERIFY: Final = "restore_verify"
RESTORE_REPORT: Final = "restore_report"
RESTORE_FAILURE: Final = "restore_failure"
#: Hourly: counts staged objects older than a day (metric STAGING_STALE_METRIC).
STORAGE_WATCH: Final = "storage_watch"
STAGING_STALE_METRIC: Final = "staging_stale_objects"
# The admin API (infra/api.py): its handler and its bearer-token authorizer.
API: Final = "api"
API_AUTHORIZER: Final = "api_authorizer"

#: Dump branches, in the order their entries appear in ``components``.
COMPONENTS: Final = ("postgres", "redis", "files", "config", "s3uploads", "ssmconfig")
#: The components a Fargate task may dump and stage (the engine's questboard_backup/runtime.py says
#: the same; tests/infra/test_fargate.py keeps them equal).
FARGATE_COMPONENTS: Final = ("postgres",)

#: Errors retried with backoff by every task (docs/serverless.md); LockedError and
#: BackupDisabledError are deliberately absent.
TRANSIENT_ERRORS: Final = (
    "TransientStorageError",
    "TransientKeyServiceError",
    "TransientAlertError",
    "SourceUnreachableError",
    "Lambda.ServiceException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
BACKUP_DISABLED_ERROR: Final = "BackupDisabledError"
RETRY_INTERVAL_SECONDS: Final = 5
RETRY_MAX_ATTEMPTS: Final = 3
RETRY_BACKOFF_RATE: Final = 2.0

BACKUP_STATE_MACHINE_TIMEOUT_HOURS: Final = 2
RESTORE_STATE_MACHINE_TIMEOUT_HOURS: Final = 4

FULL_BACKUP_INPUT: Final = {"type": "full"}
INCREMENTAL_BACKUP_INPUT: Final = {"type": "incremental"}
#: The monthly restore drill: the latest set into the stack's drill targets (lambdas/models.py RestoreRequest).
DRILL_INPUT: Final = {"backup": "latest", "drill": True}
SCHEDULE_RETRY_ATTEMPTS: Final = 3
SCHEDULE_MAX_EVENT_AGE_HOURS: Final = 1
DLQ_RETENTION_DAYS: Final = 14

#: Alarm when no backup succeeded in this many consecutive hours (RPO 6 h plus one hour of slack).
NO_SUCCESS_ALARM_HOURS: Final = 7

#: The admin API: its name in API Gateway, and its one stage (the first segment of every URL path).
API_NAME: Final = "questboard-backup-admin"
API_STAGE_NAME: Final = "prod"
#: Where the admin routes live under the stage; AdminApiUrl (a stack output) points here.
API_ADMIN_PATH: Final = "/api/admin/"

#: CloudWatch Logs retention of every function and state machine log group.
LOG_RETENTION: Final = logs.RetentionDays.THREE_MONTHS


def schedule_name(hostname: str, kind: str) -> str:
    """EventBridge Scheduler name of a backup schedule; `questboard-backup schedules` finds it by this."""
    return f"questboard-backup-{hostname}-{kind}"
