"""Failure notifications: a failed backup is announced on a real HTTP webhook and on SNS (moto, read
back through an SQS subscription) with its cause, host, backup id and run log, and never a secret; a
notification that cannot be sent is a warning that changes nothing else."""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from questboard_backup.cli import main
from questboard_backup.notify import notify_failure
from questboard_backup.settings import Settings
from tests.servers import free_port
from tests.webhook_receiver import WebhookReceiver

PASSWORD = "Sup3r-Secret-Pw"
BACKUP_ID = "questboard_full_20261203_020000"
LOG = Path("/var/backups/questboard/logs/backup_20261203_020000.log")
_names = itertools.count()


def settings_with(**variables: str) -> Settings:
    return Settings.from_env(
        {
            "BACKUP_HOSTNAME": "cron-host-1",
            "BACKUP_ENCRYPTION_KEY": "a-long-enough-passphrase",
            "DATABASE_URL": f"postgresql://qb:{PASSWORD}@127.0.0.1:5432/questboard",
            **variables,
        }
    )


def a_cause_quoting_the_password() -> str:
    return f"PostgreSQL postgresql://qb:{PASSWORD}@127.0.0.1:5432/questboard is unreachable (password {PASSWORD})"


def test_the_webhook_receives_cause_host_backup_id_and_log_as_slack_json(webhook: WebhookReceiver) -> None:
    url = f"{webhook.url}/services/T000/B000/very-secret-path"
    settings = settings_with(BACKUP_ALERT_WEBHOOK_URL=url)
    assert notify_failure(settings, "full", BACKUP_ID, a_cause_quoting_the_password(), LOG) == ("webhook",)
    post = webhook.next_post()
    assert post.path == "/services/T000/B000/very-secret-path"
    assert post.content_type.startswith("application/json")
    assert list(post.body) == ["text"]
    text = post.body["text"]
    assert text.startswith(f"The full backup {BACKUP_ID} on host cron-host-1 failed: PostgreSQL ")
    assert "is unreachable" in text and f"Run log: {LOG} on cron-host-1" in text
    assert PASSWORD not in text and "very-secret-path" not in text


def test_an_unreachable_webhook_is_a_warning_that_never_names_it(caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_with(BACKUP_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/very-secret-path")
    with caplog.at_level(logging.WARNING, logger="questboard_backup"):
        assert notify_failure(settings, "incremental", None, "it broke", None) == ()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        "the failure notification was not posted to BACKUP_ALERT_WEBHOOK_URL: "
    )
    assert "very-secret-path" not in warning.getMessage() and "127.0.0.1" not in warning.getMessage()


def test_a_webhook_answering_an_error_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    receiver = WebhookReceiver(status=500).start()
    try:
        settings = settings_with(BACKUP_ALERT_WEBHOOK_URL=f"{receiver.url}/very-secret-path")
        with caplog.at_level(logging.WARNING, logger="questboard_backup"):
            assert notify_failure(settings, "full", BACKUP_ID, "it broke", LOG) == ()
        assert receiver.next_post().body["text"].startswith(f"The full backup {BACKUP_ID}")
    finally:
        receiver.stop()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "HTTP Error 500" in warning.getMessage() and "very-secret-path" not in warning.getMessage()


# SNS


@dataclass
class Subscribed:
    topic_arn: str
    sqs: Any
    queue_url: str

    def messages(self) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
        return [json.loads(message["Body"]) for message in answer.get("Messages", [])]


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake credentials, and AWS_ENDPOINT_URL naming the moto server, as an operator would point boto3."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAQBTESTFAKEKEY000",
        "AWS_SECRET_ACCESS_KEY": "qb-fake-secret-access-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_server,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_server


@pytest.fixture
def alert_topic(aws: str) -> Iterator[Subscribed]:
    """An SNS topic on moto with an SQS queue subscribed to it."""
    import boto3

    sns = boto3.client("sns", endpoint_url=aws, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=aws, region_name="us-east-1")
    name = f"qb-alerts-{next(_names)}"
    topic_arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    yield Subscribed(topic_arn, sqs, queue_url)
    sns.delete_topic(TopicArn=topic_arn)
    sqs.delete_queue(QueueUrl=queue_url)


def test_sns_subscribers_receive_the_failure_with_its_subject(alert_topic: Subscribed) -> None:
    settings = settings_with(BACKUP_ALERT_SNS_TOPIC_ARN=alert_topic.topic_arn)
    assert notify_failure(settings, "full", BACKUP_ID, a_cause_quoting_the_password(), LOG) == ("sns",)
    (message,) = alert_topic.messages()
    assert message["Subject"] == f"[questboard-backup] cron-host-1: full backup {BACKUP_ID} failed"
    assert message["Message"].startswith(f"The full backup {BACKUP_ID} on host cron-host-1 failed: ")
    assert f"Run log: {LOG}" in message["Message"]
    assert PASSWORD not in json.dumps(message)


def test_both_channels_are_used_when_both_are_set_and_one_failing_does_not_stop_the_other(
    alert_topic: Subscribed, caplog: pytest.LogCaptureFixture, webhook: WebhookReceiver
) -> None:
    missing_topic = alert_topic.topic_arn + "-missing"
    settings = settings_with(
        BACKUP_ALERT_SNS_TOPIC_ARN=missing_topic, BACKUP_ALERT_WEBHOOK_URL=f"{webhook.url}/hook-path"
    )
    with caplog.at_level(logging.WARNING, logger="questboard_backup"):
        assert notify_failure(settings, "full", BACKUP_ID, "it broke", LOG) == ("webhook",)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("the failure notification was not published to SNS: AlertError: ")
    assert webhook.next_post().body["text"].startswith(f"The full backup {BACKUP_ID}")
    settings = settings_with(
        BACKUP_ALERT_SNS_TOPIC_ARN=alert_topic.topic_arn, BACKUP_ALERT_WEBHOOK_URL=f"{webhook.url}/hook-path"
    )
    assert notify_failure(settings, "full", BACKUP_ID, "it broke", LOG) == ("sns", "webhook")
    assert len(alert_topic.messages()) == 1 and webhook.next_post().path == "/hook-path"


# Through the CLI


@pytest.fixture
def failing_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's settings for a backup that fails: its PostgreSQL (whose URL quotes a password) does not
    answer. Returns BACKUP_DIR."""
    backup_dir = tmp_path / "backups"
    for name in (
        "REDIS_URL",
        "BACKUP_FILES_PATHS",
        "BACKUP_CONFIG_PATHS",
        "BACKUP_S3_BUCKET",
        "BACKUP_ENV_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "DATABASE_URL": f"postgresql://qb:{PASSWORD}@127.0.0.1:{free_port()}/questboard",
        "BACKUP_DIR": str(backup_dir),
        "BACKUP_HOSTNAME": "cron-host-1",
        "BACKUP_ENCRYPTION_KEY": "a-long-enough-passphrase",
        "BACKUP_ENABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no stray ./.env
    return backup_dir


def test_a_failed_backup_through_the_cli_posts_its_one_line_error_to_the_webhook(
    failing_backup: Path,
    webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BACKUP_ALERT_WEBHOOK_URL", f"{webhook.url}/services/T000/B000/very-secret-path")
    code = main(["full"])
    _out, err = capsys.readouterr()
    assert code == 4, err
    (error_line,) = err.splitlines()
    assert error_line.startswith("error: ")
    text = webhook.next_post().body["text"]
    match = re.fullmatch(
        r"The full backup (questboard_full_\d{8}_\d{6}) on host cron-host-1 failed: (.*)\n"
        r"Run log: (\S+) on cron-host-1",
        text,
    )
    assert match, text
    backup_id, cause, log = match.groups()
    assert cause == error_line.removeprefix("error: ")
    assert Path(log).parent == failing_backup / "logs" and Path(log).is_file()
    assert "run failed: SourceUnreachableError" in Path(log).read_text()
    assert backup_id[-15:] == Path(log).stem.removeprefix("backup_")
    assert PASSWORD not in text and "very-secret-path" not in err


def test_an_unreachable_webhook_leaves_the_failed_backup_its_error_and_exit_code(
    failing_backup: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BACKUP_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/very-secret-path")
    code = main(["full"])
    _out, err = capsys.readouterr()
    assert code == 4, err
    lines = err.splitlines()
    assert len([line for line in lines if line.startswith("error: ")]) == 1
    assert any(
        "the failure notification was not posted to BACKUP_ALERT_WEBHOOK_URL" in line for line in lines
    )
    assert "very-secret-path" not in err and PASSWORD not in err


def test_a_failed_restore_is_announced_too_but_a_listing_is_not(
    failing_backup: Path,
    webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BACKUP_ALERT_WEBHOOK_URL", f"{webhook.url}/hook")
    assert main(["restore"]) == 0  # no backup named: the listing, not a run
    code = main(["restore", "questboard_full_20240101_020000"])
    _out, err = capsys.readouterr()
    assert code == 7, err
    text = webhook.next_post().body["text"]
    assert text.startswith("The restore on host cron-host-1 failed: no backup named"), text
    assert PASSWORD not in text
