"""AWS calls of the ssmconfig component: default clients, and failures as the engine's errors.

A failure names the action, the parameter or secret, and the AWS error code, never the service's message:
SSM's and Secrets Manager's validation messages can quote the value sent (``Value '...' at 'value' failed
to satisfy constraint``), and botocore's parameter checks quote it too. Throttling, 5xx and dropped
connections (``aws.failures.classify``) become SourceUnreachableError, which the workflows retry.
"""

from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from questboard_backup.aws.failures import classify
from questboard_backup.errors import BackupError, SourceError, SourceUnreachableError
from questboard_backup.storage.s3_client import RETRIES

AWS_ERRORS = (BotoCoreError, ClientError)
_RETRY_VARIABLES = {"mode": "AWS_RETRY_MODE", "max_attempts": "AWS_MAX_ATTEMPTS"}


def error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return ""


def failure(label: str, action: str, where: str, error: BotoCoreError | ClientError) -> BackupError:
    """One line: what was being done to which name, and the AWS error code (never its message)."""
    found = classify(error)
    kind = SourceUnreachableError if found.transient else SourceError
    return kind(f"{label}: cannot {action} {where}: {found.code}")


def default_client(service: str) -> Any:
    """A boto3 client with timeouts, and botocore's standard retries unless AWS_MAX_ATTEMPTS /
    AWS_RETRY_MODE choose their own (as the engine's S3 client does)."""
    import boto3
    from botocore.config import Config

    chosen = {
        key: value for key, value in RETRIES.items() if not os.environ.get(_RETRY_VARIABLES[key], "").strip()
    }
    retries: Any = {"retries": chosen} if chosen else {}
    return boto3.client(service, config=Config(connect_timeout=10, read_timeout=60, **retries))
