"""A Quest Board deployment to back up: its database, Redis, files and config, and the CLI's settings;
a mounted uploads folder for files restores run as root; a webhook receiving failure notifications."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.dataset import load_postgres, load_redis, make_files
from tests.servers import PostgresServer, RedisServer
from tests.webhook_receiver import WebhookReceiver


@dataclass
class Deployment:
    database_url: str
    redis_base: str
    uploads: Path
    config: Path
    backup_dir: Path
    env: dict[str, str]
    pg: PostgresServer

    def set_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)


@pytest.fixture
def deployment(
    pg_server: PostgresServer,
    redis_server: RedisServer,
    fresh_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Deployment]:
    redis.Redis(port=redis_server.port).flushall()
    load_postgres(fresh_database)
    load_redis(redis_server.url(0))
    uploads, config = make_files(tmp_path / "app")
    backup_dir = tmp_path / "backups"
    env = {
        "DATABASE_URL": fresh_database,
        "REDIS_URL": redis_server.url(0),
        "BACKUP_FILES_PATHS": str(uploads),
        "BACKUP_CONFIG_PATHS": str(config),
        "BACKUP_DIR": str(backup_dir),
        "BACKUP_HOSTNAME": "test-host",
        "BACKUP_ENCRYPTION_KEY": secrets.token_urlsafe(24),
        "BACKUP_S3_BUCKET": "",
        "BACKUP_ENABLED": "true",
        # The test database is small: split it all the same, so the CLI tests run the parallel streams.
        "BACKUP_PG_SPLIT_MIN_MB": "0",
    }
    monkeypatch.chdir(tmp_path)  # no stray ./.env
    deployment = Deployment(
        fresh_database, f"redis://127.0.0.1:{redis_server.port}", uploads, config, backup_dir, env, pg_server
    )
    deployment.set_env(monkeypatch)
    yield deployment
    redis.Redis(port=redis_server.port).flushall()


@pytest.fixture(params=["tmpfs", "bind"])
def mounted_uploads(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """``live/srv/uploads`` as a mount point: a tmpfs (another device) or a bind mount (the same one)."""
    uploads = tmp_path / "live" / "srv" / "uploads"
    uploads.mkdir(parents=True)
    if request.param == "tmpfs":
        command = ["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(uploads)]
    else:
        (tmp_path / "disk").mkdir()
        command = ["mount", "--bind", str(tmp_path / "disk"), str(uploads)]
    subprocess.run(command, check=True, capture_output=True)
    try:
        yield uploads
    finally:
        subprocess.run(["umount", str(uploads)], check=True, capture_output=True)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A Slack-compatible webhook on a local port, recording what is posted to it."""
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()
