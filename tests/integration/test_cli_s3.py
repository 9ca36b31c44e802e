"""The CLI with BACKUP_S3_BUCKET against a moto server over HTTP: upload, list, verify and restore from S3 alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from questboard_backup.cli import main
from questboard_backup.sources.files import tree_listing
from tests.conftest import S3Bucket
from tests.dataset import pg_dump_text, redis_snapshot
from tests.integration.conftest import Deployment


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def with_s3(deployment: Deployment, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    monkeypatch.setenv("BACKUP_S3_BUCKET", s3_bucket.name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)  # boto3 honours it: the HTTP path is real
    return s3_bucket


def test_a_backup_goes_to_s3_tagged_and_restores_from_s3_alone(
    deployment: Deployment, with_s3: S3Bucket, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    result = json.loads(out)
    backup_id, tier = result["backup_id"], result["tier"]
    s3_uri = f"s3://{with_s3.name}/test-host/{tier}/{backup_id}"
    assert s3_uri in result["locations"]
    keys = [item["Key"] for item in with_s3.client.list_objects_v2(Bucket=with_s3.name)["Contents"]]
    prefix = f"test-host/{tier}/{backup_id}/"
    assert sorted(keys) == sorted(
        prefix + name
        for name in (
            "manifest.json",
            "postgres.dump.zst.enc",
            "postgres.part1.dump.zst.enc",  # the largest tables' rows, on further streams
            "postgres.part2.dump.zst.enc",
            "redis.rdbx.zst.enc",
            "files.tar.zst.enc",
            "config.tar.zst.enc",
        )
    )
    for key in keys:
        tags = with_s3.client.get_object_tagging(Bucket=with_s3.name, Key=key)["TagSet"]
        assert tags == [{"Key": "tier", "Value": tier}]
        assert with_s3.client.head_object(Bucket=with_s3.name, Key=key)["ServerSideEncryption"] == "AES256"

    shutil.rmtree(deployment.backup_dir)  # the local copy is gone: S3 alone must do
    code, out, _ = cli(capsys, "list", "--json")
    assert [(b["id"], b["storage"]) for b in json.loads(out)["backups"]] == [(backup_id, "s3")]
    code, _, err = cli(capsys, "verify", s3_uri)
    assert code == 0, err
    target_db = deployment.database_url + "_from_s3"
    code, _, err = cli(
        capsys,
        "restore",
        s3_uri,
        "--to-database-url",
        target_db,
        "--to-redis-url",
        f"{deployment.redis_base}/8",
        "--to-files-root",
        str(tmp_path / "restored"),
    )
    assert code == 0, err
    assert pg_dump_text(deployment.database_url) == pg_dump_text(target_db)
    source, target = (
        redis_snapshot(deployment.redis_base, range(0, 8)),
        redis_snapshot(deployment.redis_base, range(8, 16)),
    )
    assert source == {db - 8: keys for db, keys in target.items()}
    assert tree_listing(deployment.uploads) == tree_listing(
        tmp_path / "restored" / deployment.uploads.relative_to("/")
    )


def test_no_local_keeps_the_backup_in_s3_only(
    deployment: Deployment, with_s3: S3Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "full", "--no-local", "--json")
    assert code == 0, err
    assert all(location.startswith("s3://") for location in json.loads(out)["locations"])
    assert not any(any((deployment.backup_dir / tier).glob("*")) for tier in ("daily", "weekly", "monthly"))
    code, out, _ = cli(capsys, "status", "--json")
    assert json.loads(out)["backups"] == 1


def test_an_unreachable_s3_fails_the_backup_and_leaves_no_local_set(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.servers import free_port

    monkeypatch.setenv("BACKUP_S3_BUCKET", "questboard-backups")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, _, err = cli(capsys, "full")
    assert code == 5, err
    assert err.count("\n") == 1 and "super-secret-value" not in err
    assert not any(any((deployment.backup_dir / tier).glob("*")) for tier in ("daily", "weekly", "monthly"))
    assert not any((deployment.backup_dir / "temp").iterdir())


def test_latest_and_status_look_across_local_and_s3(
    deployment: Deployment,
    with_s3: S3Bucket,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import datetime, timedelta
    from typing import Any

    import questboard_backup.cli as cli_module

    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    local_and_s3 = json.loads(out)["backup_id"]

    class AnHourLater(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + timedelta(hours=1)

    monkeypatch.setattr(cli_module, "datetime", AnHourLater)  # a later backup id, without waiting
    code, out, err = cli(capsys, "full", "--no-local", "--json")
    assert code == 0, err
    s3_only = json.loads(out)["backup_id"]
    assert s3_only > local_and_s3
    code, out, _ = cli(capsys, "status", "--json")
    assert json.loads(out)["last_success"]["id"] == s3_only
    code, out, err = cli(capsys, "verify", "latest", "--json")
    assert code == 0 and json.loads(out)["backup_id"] == s3_only, err
