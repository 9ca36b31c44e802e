"""The AWS-native sources' settings: read by name, refused by name (one line, nothing done)."""

from __future__ import annotations

import pytest

from questboard_backup.errors import ConfigurationError
from questboard_backup.settings import Settings


def test_uploads_in_s3_and_config_in_ssm_and_secrets_manager_are_read() -> None:
    settings = Settings.from_env(
        {
            "BACKUP_UPLOADS_S3_URI": "s3://questboard-uploads/prod/uploads",
            "BACKUP_CONFIG_SSM_PATHS": "/questboard/prod, /questboard/shared",
            "BACKUP_CONFIG_SECRET_IDS": "questboard/prod/app,arn:aws:secretsmanager:ap-northeast-1:123456789012:secret:x-AbCdEf",
        }
    )
    assert settings.uploads_s3_uri == "s3://questboard-uploads/prod/uploads"
    assert settings.config_ssm_paths == ("/questboard/prod", "/questboard/shared")
    assert settings.config_secret_ids[1].endswith(":secret:x-AbCdEf")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BACKUP_UPLOADS_S3_URI", "https://questboard-uploads/prod"),
        ("BACKUP_UPLOADS_S3_URI", "s3://questboard-uploads"),  # no prefix: nowhere to stage beside it
        ("BACKUP_UPLOADS_S3_URI", "s3://Bad_Bucket/prod"),
        ("BACKUP_CONFIG_SSM_PATHS", "questboard/prod"),
        ("BACKUP_CONFIG_SECRET_IDS", "has space"),
    ],
)
def test_bad_values_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name) as raised:
        Settings.from_env({name: value})
    assert "\n" not in str(raised.value)
