"""Settings: every variable by its seed name, every bad value reported by name before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from questboard_backup.errors import ConfigurationError
from questboard_backup.settings import Settings

GOOD = {
    "DATABASE_URL": "postgresql://qb:pw@db.internal:5432/questboard",
    "REDIS_URL": "redis://cache:6379/0",
    "BACKUP_FILES_PATHS": "/srv/uploads, /srv/avatars",
    "BACKUP_CONFIG_PATHS": "/etc/questboard",
    "BACKUP_ENABLED": "true",
    "BACKUP_DIR": "/var/backups/questboard",
    "BACKUP_S3_BUCKET": "questboard-backups",
    "BACKUP_HOSTNAME": "prod-server",
    "BACKUP_RETENTION_DAYS": "30",
    "BACKUP_ENCRYPTION": "true",
    "BACKUP_ENCRYPTION_KEY": "a-long-enough-passphrase",
}


def test_every_seed_variable_is_read_by_its_name() -> None:
    settings = Settings.from_env(GOOD)
    assert settings.database_url == GOOD["DATABASE_URL"]
    assert settings.redis_url == GOOD["REDIS_URL"]
    assert settings.files_paths == (Path("/srv/uploads"), Path("/srv/avatars"))
    assert settings.config_paths == (Path("/etc/questboard"),)
    assert settings.enabled is True
    assert settings.backup_dir == Path("/var/backups/questboard")
    assert settings.s3_bucket == "questboard-backups"
    assert settings.hostname == "prod-server"
    assert settings.retention_days == 30
    assert settings.encryption_key == GOOD["BACKUP_ENCRYPTION_KEY"]


def test_the_compression_level_is_read_and_defaults_to_zstd_level_1() -> None:
    assert Settings.from_env({}).compression_level == 1
    assert Settings.from_env({"BACKUP_COMPRESSION_LEVEL": "-3"}).compression_level == -3


def test_defaults_are_the_seeds() -> None:
    settings = Settings.from_env({})
    assert settings.backup_dir == Path("/var/backups/questboard")
    assert settings.enabled is True
    assert settings.s3_bucket == ""
    assert settings.retention_days == 30
    assert settings.hostname


def test_the_encryption_key_never_shows_in_repr() -> None:
    assert GOOD["BACKUP_ENCRYPTION_KEY"] not in repr(Settings.from_env(GOOD))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://x@y/z"),
        ("DATABASE_URL", "postgresql://host:notaport/db"),
        ("REDIS_URL", "http://cache"),
        ("BACKUP_FILES_PATHS", "relative/path"),
        ("BACKUP_CONFIG_PATHS", "/ok,also-relative"),
        ("BACKUP_ENABLED", "maybe"),
        ("BACKUP_DIR", "backups"),
        ("BACKUP_S3_BUCKET", "Bad_Bucket"),
        ("BACKUP_HOSTNAME", "prod/server"),
        ("BACKUP_RETENTION_DAYS", "thirty"),
        ("BACKUP_RETENTION_DAYS", "0"),
        ("BACKUP_ENCRYPTION", "false"),
        ("BACKUP_ENCRYPTION_KEY", "short"),
    ],
)
def test_a_bad_setting_is_reported_by_name_in_one_line(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**GOOD, name: value})
    message = str(caught.value)
    assert name in message
    assert "\n" not in message


def test_a_password_in_a_bad_url_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"DATABASE_URL": "mysql://u:hunter2secret@h/db"})
    assert "hunter2secret" not in str(caught.value)


def test_required_settings_are_named_when_missing() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ConfigurationError, match="BACKUP_ENCRYPTION_KEY"):
        settings.require_encryption_key()
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        settings.require_database_url()


def test_the_lambdas_read_the_compression_level_by_the_same_name_and_rule() -> None:
    from lambdas.dependencies import FunctionSettings

    required = {"BACKUP_S3_BUCKET": "bucket-b", "BACKUP_HOSTNAME": "h", "BACKUP_KMS_KEY_ID": "k"}
    assert FunctionSettings.from_env(required).compression_level == 1
    assert FunctionSettings.from_env({**required, "BACKUP_COMPRESSION_LEVEL": "-2"}).compression_level == -2
    with pytest.raises(ConfigurationError, match="BACKUP_COMPRESSION_LEVEL must be between -7 and 9, not 12"):
        FunctionSettings.from_env({**required, "BACKUP_COMPRESSION_LEVEL": "12"})


@pytest.mark.parametrize("value", ["yes", "on", "1", "false", "off", "0"])
def test_the_cli_and_the_lambdas_read_backup_enabled_by_the_same_rule(value: str) -> None:
    from lambdas.dependencies import FunctionSettings

    required = {"BACKUP_S3_BUCKET": "bucket-b", "BACKUP_HOSTNAME": "h", "BACKUP_KMS_KEY_ID": "k"}
    environ = {**required, "BACKUP_ENABLED": value}
    assert FunctionSettings.from_env(environ).enabled == Settings.from_env(environ).enabled
    assert Settings.from_env(environ).enabled is (value in ("yes", "on", "1"))
    with pytest.raises(ConfigurationError, match="BACKUP_ENABLED must be true or false, not 'maybe'"):
        FunctionSettings.from_env({**required, "BACKUP_ENABLED": "maybe"})
