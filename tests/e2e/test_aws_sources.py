"""Uploads in an S3 bucket and configuration in SSM Parameter Store and Secrets Manager, through the
synthesized workflows (moto): the backup holds all six components; the restore workflow puts the
uploads back and refuses the configuration by name (the CLI restores it, in one process), which the
CLI then does from the same set."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import boto3
import pytest

from questboard_backup.cli import main
from tests.offline import REGION, World

UPLOADS_BUCKET = "questboard-uploads-e2e"
PREFIX = "prod/uploads"


def uploads(client: Any) -> dict[str, tuple[bytes, str, dict[str, str]]]:
    return uploads_under(client, PREFIX)


def operator_cli(world: World, monkeypatch: pytest.MonkeyPatch, **settings: str) -> None:
    """The CLI as an operator's machine runs it: the bucket, the host and the key, no database, Redis
    or local files, and ``settings`` (the AWS sources it restores)."""
    for name, setting in {
        "BACKUP_S3_BUCKET": world.settings.s3_bucket,
        "BACKUP_HOSTNAME": world.settings.hostname,
        "BACKUP_KMS_KEY_ID": world.settings.kms_key_id,
        "BACKUP_DIR": str(world.uploads.parent / "cli-backups"),
        "AWS_DEFAULT_REGION": REGION,
        **settings,
    }.items():
        monkeypatch.setenv(name, setting)
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "BACKUP_FILES_PATHS",
        "BACKUP_CONFIG_PATHS",
        "BACKUP_ENCRYPTION_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws_sourced(world: World) -> World:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=UPLOADS_BUCKET)
    s3.put_object(Bucket=UPLOADS_BUCKET, Key=f"{PREFIX}/avatars/hero.png", Body=b"\x89PNG" + bytes(range(256)) * 40,
                  ContentType="image/png", Metadata={"owner": "hero-7"})  # fmt: skip
    s3.put_object(Bucket=UPLOADS_BUCKET, Key=f"{PREFIX}/docs/報告.txt", Body="クエスト完了".encode(),
                  ContentType="text/plain; charset=utf-8")  # fmt: skip
    s3.put_object(Bucket=UPLOADS_BUCKET, Key="elsewhere/keep.txt", Body=b"not ours")
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/questboard/prod/api_url", Value="https://quests.example", Type="String")
    ssm.put_parameter(Name="/questboard/prod/db/password", Value="s3cr3t-Pa55", Type="SecureString")
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="questboard/prod/app", SecretString=json.dumps({"jwt_key": "k-123"})
    )
    world.settings = replace(
        world.settings,
        uploads_s3_uri=f"s3://{UPLOADS_BUCKET}/{PREFIX}",
        config_ssm_paths=("/questboard/prod",),
        config_secret_ids=("questboard/prod/app",),
    )
    world.install()
    return world


def test_the_workflow_backs_up_uploads_in_s3_and_config_in_ssm_and_restores_the_uploads(
    aws_sourced: World,
) -> None:
    world = aws_sourced
    s3 = boto3.client("s3", region_name=REGION)
    before = uploads(s3)
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    published = json.loads(backup["output"])["published"]
    assert published["components"] == ["postgres", "redis", "files", "config", "s3uploads", "ssmconfig"]
    assert published["not_configured"] == []
    # Nothing of the configuration's values reached the bucket in the clear.
    for key in world.objects():
        body = s3.get_object(Bucket=world.settings.s3_bucket, Key=key)["Body"].read()
        assert b"s3cr3t-Pa55" not in body and b"k-123" not in body, key

    # The uploads change after the backup; the restore puts back exactly what was backed up.
    s3.put_object(Bucket=UPLOADS_BUCKET, Key=f"{PREFIX}/avatars/hero.png", Body=b"defaced")
    s3.put_object(Bucket=UPLOADS_BUCKET, Key=f"{PREFIX}/new-after-backup.txt", Body=b"later")
    s3.delete_object(Bucket=UPLOADS_BUCKET, Key=f"{PREFIX}/docs/報告.txt")
    restore = world.run("restore", {"backup": "latest", "only": ["s3uploads"]})
    assert restore["status"] == "SUCCEEDED", restore.get("cause")
    assert uploads(s3) == before
    keep = s3.get_object(Bucket=UPLOADS_BUCKET, Key="elsewhere/keep.txt")["Body"].read()
    assert keep == b"not ours"


def test_the_workflow_refuses_to_restore_the_configuration_and_the_cli_restores_it(
    aws_sourced: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = aws_sourced
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(
        Name="/questboard/prod/db/password", Value="changed", Type="SecureString", Overwrite=True
    )
    restore = world.run("restore", {"backup": "latest"})
    assert restore["status"] == "FAILED"
    assert "ssmconfig is restored with the CLI only" in restore["cause"] and "s3cr3t" not in restore["cause"]
    value = ssm.get_parameter(Name="/questboard/prod/db/password", WithDecryption=True)["Parameter"]["Value"]
    assert value == "changed"  # refused before anything was touched

    # The CLI, on an operator's machine, with the bucket, the host and the key.
    operator_cli(
        world,
        monkeypatch,
        BACKUP_CONFIG_SSM_PATHS="/questboard/prod",
        BACKUP_CONFIG_SECRET_IDS="questboard/prod/app",
    )
    code = main(["restore", "latest", "--only", "ssmconfig"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "s3cr3t-Pa55" not in out + err
    value = ssm.get_parameter(Name="/questboard/prod/db/password", WithDecryption=True)["Parameter"]["Value"]
    assert value == "s3cr3t-Pa55"


def test_the_cli_restores_uploads_and_config_to_named_targets_and_refuses_a_bad_one(
    aws_sourced: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = aws_sourced
    s3 = boto3.client("s3", region_name=REGION)
    before = uploads(s3)
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="questboard/copy/app", SecretString="{}"
    )
    operator_cli(
        world,
        monkeypatch,
        BACKUP_UPLOADS_S3_URI=f"s3://{UPLOADS_BUCKET}/{PREFIX}",
        BACKUP_CONFIG_SSM_PATHS="/questboard/prod",
        BACKUP_CONFIG_SECRET_IDS="questboard/prod/app",
    )
    code = main(["restore", "latest", "--only", "s3uploads,ssmconfig",
                 "--to-uploads-s3-uri", f"s3://{UPLOADS_BUCKET}/copy/uploads",
                 "--to-config-ssm-paths", "/questboard/copy", "--to-config-secret-ids", "questboard/copy/app"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    copied = {
        key.replace("copy/uploads/", f"{PREFIX}/", 1): value
        for key, value in uploads_under(s3, "copy/uploads").items()
    }
    assert copied == before and uploads(s3) == before  # the originals untouched
    ssm = boto3.client("ssm", region_name=REGION)
    value = ssm.get_parameter(Name="/questboard/copy/db/password", WithDecryption=True)["Parameter"]["Value"]
    assert value == "s3cr3t-Pa55" and "s3cr3t" not in out + err
    secret = boto3.client("secretsmanager", region_name=REGION).get_secret_value(
        SecretId="questboard/copy/app"
    )
    assert json.loads(secret["SecretString"]) == {"jwt_key": "k-123"}

    code = main(["restore", "latest", "--only", "s3uploads", "--to-uploads-s3-uri", "s3://just-a-bucket"])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--to-uploads-s3-uri" in err


def uploads_under(client: Any, prefix: str) -> dict[str, tuple[bytes, str, dict[str, str]]]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=UPLOADS_BUCKET, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            got = client.get_object(Bucket=UPLOADS_BUCKET, Key=item["Key"])
            found[item["Key"]] = (got["Body"].read(), got["ContentType"], got["Metadata"])
    return found
