"""The exception hierarchy: every error an operator can meet, each with its exit code.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; Lambda handlers let the
errors propagate so Step Functions can match on the class name. Messages never carry secrets.
"""

from __future__ import annotations


class BackupError(Exception):
    """Root of every error the engine raises on purpose."""

    exit_code = 1


class ConfigurationError(BackupError):
    """A setting is missing or invalid; nothing was done."""

    exit_code = 2


class BadRequestError(ConfigurationError):
    """A request's parameter is wrong (the admin API answers 400); nothing was done."""


class BackupDisabledError(BackupError):
    """Backups are disabled (BACKUP_ENABLED=false): a deliberate refusal, not a failure."""

    exit_code = 0


class LockedError(BackupError):
    """Another backup holds the lock."""

    exit_code = 3


class SourceUnreachableError(BackupError):
    """PostgreSQL, Redis or a file path cannot be read (or a restore target cannot be reached)."""

    exit_code = 4


class SourceError(BackupError):
    """A source tool (pg_dump, pg_restore, Redis) failed while working."""

    exit_code = 4


class DeadlineExceededError(SourceError):
    """A dump stopped itself before its time limit (a Lambda's 15 minutes) rather than be killed."""


class StorageError(BackupError):
    """A storage backend failed permanently (permissions, missing bucket, disk full)."""

    exit_code = 5


class TransientStorageError(StorageError):
    """A storage call failed in a way worth retrying (throttling, timeouts, 5xx)."""


class InsufficientSpaceError(StorageError):
    """BACKUP_DIR's filesystem has less free space than the next set is estimated to need; the backup
    was refused before writing any of it (questboard_backup.space)."""


class KeyServiceError(BackupError):
    """AWS KMS refused or failed a request (access denied, key disabled or pending deletion).

    Exit code 5, as for storage: a service the backup depends on failed, the data itself is not in
    question. A wrapped key KMS will not open is an IntegrityError; a key id naming no key, a
    ConfigurationError.
    """

    exit_code = 5


class TransientKeyServiceError(KeyServiceError):
    """A KMS call failed in a way worth retrying (throttling, KMS internal errors, timeouts)."""


class AlertError(BackupError):
    """A failure alert could not be published to SNS (access denied, missing topic); exit code 5."""

    exit_code = 5


class TransientAlertError(AlertError):
    """Publishing an alert failed in a way worth retrying (throttling, SNS internal errors, timeouts)."""


class SchedulerError(BackupError):
    """EventBridge Scheduler refused or failed to read or enable the backup schedules; exit code 5."""

    exit_code = 5


class IntegrityError(BackupError):
    """Stored bytes do not authenticate, hash, or match the manifest: a wrong key, corruption, truncation."""

    exit_code = 6


class NotFoundError(BackupError):
    """The named backup, component or object does not exist."""

    exit_code = 7


class RestoreVerificationError(BackupError):
    """A restore completed but the restored data does not match the manifest; the target was not swapped."""

    exit_code = 8
