"""Failure alerts: a readable one-paragraph message, published to an SNS topic."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from questboard_backup.aws.failures import classify
from questboard_backup.errors import AlertError, TransientAlertError


def describe_failure(kind: str, backup_id: str, error: str, cause: str) -> tuple[str, str]:
    """Subject and message for a failed run; ``cause`` may be a Lambda error document (JSON)."""
    reason = cause
    try:
        document = json.loads(cause)
    except (TypeError, ValueError):
        document = None
    if isinstance(document, dict):
        reason = str(document.get("errorMessage") or document.get("Cause") or cause)
    reason = " ".join(reason.split())[:500] or "no details"
    subject = f"[questboard-backup] {kind} {backup_id} failed: {error}"[:100]
    message = (
        f"The {kind} {backup_id} failed with {error}: {reason}\n"
        "Partial objects were removed and the lock released. Logs: the Step Functions execution and "
        "the CloudWatch log groups of the questboard-backup functions."
    )
    return subject, message


#: A failed CLI run's alert must not hold it for minutes: short timeouts, few attempts.
CLIENT_TIMEOUT_SECONDS = 10
CLIENT_ATTEMPTS = 3


def sns_client(topic_arn: str) -> Any:
    """A client for ``topic_arn`` in the topic's own region (the host's default may be another one)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CLIENT_TIMEOUT_SECONDS,
        read_timeout=CLIENT_TIMEOUT_SECONDS,
        retries={"max_attempts": CLIENT_ATTEMPTS, "mode": "standard"},
    )
    return boto3.client("sns", region_name=topic_arn.split(":")[3], config=config)


class SnsAlerts:
    def __init__(self, topic_arn: str, client: Any) -> None:
        self._topic_arn = topic_arn
        self._sns = client

    def publish(self, subject: str, message: str) -> None:
        try:
            self._sns.publish(TopicArn=self._topic_arn, Subject=subject, Message=message)
        except (BotoCoreError, ClientError) as error:
            failure = classify(error)
            error_class = TransientAlertError if failure.transient else AlertError
            raise error_class(f"SNS Publish to {self._topic_arn} failed: {failure}") from None
