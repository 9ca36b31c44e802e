"""Failure notifications from the CLI: a failed backup is announced on SNS (BACKUP_ALERT_SNS_TOPIC_ARN)
and/or a Slack-compatible webhook (BACKUP_ALERT_WEBHOOK_URL): the one-line cause, the host, the backup
id and the run log, never a secret. A notification that cannot be sent is a warning; the run's own
error and exit code stand.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from questboard_backup.address import KINDS
from questboard_backup.connections import password_of
from questboard_backup.errors import BackupError
from questboard_backup.operations import attempt_of
from questboard_backup.redaction import MIN_REMEMBERED_LENGTH, redact_text
from questboard_backup.settings import Settings

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10
#: SNS refuses longer subjects; the webhook and the message carry the rest.
SUBJECT_LENGTH = 100
CAUSE_LENGTH = 500


@dataclass(frozen=True)
class FailureNotice:
    """What is sent: a subject (SNS's, one ASCII line) and the text (SNS's message, the webhook's)."""

    subject: str
    text: str


def _secrets(settings: Settings) -> list[str]:
    """What must never leave in a notice, whether or not the CLI remembered it: the sources' passwords,
    the encryption key, the webhook URL (whoever has it may post to the channel) and its path."""
    found = [
        password_of(settings.database_url) or "",
        password_of(settings.redis_url) or "",
        settings.encryption_key,
    ]
    if settings.alert_webhook_url:
        parts = urlsplit(settings.alert_webhook_url)
        found += [settings.alert_webhook_url, parts.path, parts.query]
    return sorted((s for s in found if len(s) >= MIN_REMEMBERED_LENGTH), key=len, reverse=True)


def _clean(text: str, settings: Settings) -> str:
    for secret in _secrets(settings):
        text = text.replace(secret, "***")
    return redact_text(text)


def failure_notice(
    settings: Settings, command: str, backup_id: str | None, cause: str, log_path: Path | None
) -> FailureNotice:
    """The notice of a failed ``command`` (a backup type, "full" or "incremental", or another command)."""
    what = f"{command} backup" if command in KINDS else command
    if backup_id:
        what += f" {backup_id}"
    # Secrets out first, then cut: a secret straddling the cut would otherwise be half replaced.
    reason = _clean(" ".join(cause.split()), settings)[:CAUSE_LENGTH] or "no details"
    subject = f"[questboard-backup] {settings.hostname}: {what} failed"[:SUBJECT_LENGTH]
    log_line = (
        f"Run log: {log_path} on {settings.hostname}"
        if log_path
        else "Run log: none (it failed before one began)"
    )
    text = f"The {what} on host {settings.hostname} failed: {reason}\n{log_line}"
    return FailureNotice(_clean(subject, settings), _clean(text, settings))


def _slack_escaped(text: str) -> str:
    """Slack reads ``<...>`` as links and mentions; its documentation asks for these three escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post_webhook(url: str, text: str, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> None:
    """POST ``{"text": text}`` to a Slack-compatible incoming webhook; OSError (HTTPError for an answer
    that is not 2xx), http.client.HTTPException or ValueError when it does not arrive."""
    body = json.dumps({"text": _slack_escaped(text)}).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json; charset=utf-8"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read(4096)


def notify_failure(
    settings: Settings, command: str, backup_id: str | None, cause: str, log_path: Path | None
) -> tuple[str, ...]:
    """Announce a failed run wherever the settings say (SNS, webhook, both or neither); returns where
    it was delivered ("sns", "webhook"). Never raises: what fails is logged as a warning."""
    if not (settings.alert_sns_topic_arn or settings.alert_webhook_url):
        return ()
    notice = failure_notice(settings, command, backup_id, cause, log_path)
    delivered: list[str] = []
    if settings.alert_sns_topic_arn:
        try:
            from questboard_backup.aws.sns import SnsAlerts, sns_client

            SnsAlerts(settings.alert_sns_topic_arn, sns_client(settings.alert_sns_topic_arn)).publish(
                notice.subject, notice.text
            )
            delivered.append("sns")
        except Exception as error:  # noqa: BLE001 - an alert that fails must not hide the run's own error
            logger.warning(
                "the failure notification was not published to SNS: %s: %s",
                type(error).__name__,
                _clean(str(error), settings),
            )
    if settings.alert_webhook_url:
        try:
            post_webhook(settings.alert_webhook_url, notice.text)
            delivered.append("webhook")
        except Exception as error:  # noqa: BLE001 - as above; the URL is a secret, never logged
            logger.warning(
                "the failure notification was not posted to BACKUP_ALERT_WEBHOOK_URL: %s: %s",
                type(error).__name__,
                _clean(str(error), settings),
            )
    if delivered:
        logger.info("failure notification sent channels=%s", ",".join(delivered))
    return tuple(delivered)


def notify_failed_backup(
    settings: Settings, command: str, error: BaseException, cause: str
) -> tuple[str, ...]:
    """``notify_failure`` for the error a backup command ended with: the backup id and run log are the
    ones ``backup_now`` attached to it (none when it failed before the backup began). A deliberate
    refusal that is no failure (exit code 0: backups disabled) is not announced."""
    if isinstance(error, BackupError) and error.exit_code == 0:
        return ()
    attempt = attempt_of(error)
    return notify_failure(
        settings, command, attempt.backup_id if attempt else None, cause, attempt.log if attempt else None
    )
