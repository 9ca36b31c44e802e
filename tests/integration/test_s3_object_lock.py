"""S3 Object Lock against the moto server: a set put in its tier carries its tier's retention, a
locked version cannot be erased before then (governance: not without bypass rights; compliance: not
at all), and staged objects stay deletable."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from questboard_backup.settings import Settings
from questboard_backup.storage.s3 import S3Storage
from questboard_backup.wiring import Wiring

HOST = "lock-host"
SET = "questboard_full_20261201_020000"
_buckets = itertools.count()


@pytest.fixture
def locked_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A versioned bucket with Object Lock on and no default retention, as the stack creates it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    name = f"qb-locked-{next(_buckets)}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield name, client
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            try:
                client.delete_object(
                    Bucket=name, Key=item["Key"], VersionId=item["VersionId"], BypassGovernanceRetention=True
                )
            except ClientError as error:  # compliance: nobody may, this fixture included
                assert error.response["Error"]["Code"] == "AccessDenied"


def _storage(bucket: str, client: Any, mode: str) -> S3Storage:
    settings = Settings(s3_bucket=bucket, hostname=HOST, s3_object_lock=mode)
    return Wiring(settings, clients=lambda name: client).s3_storage(stage_in_temp=True)


def _stage_and_promote(storage: S3Storage, tier: str) -> None:
    storage.write_bytes(f"temp/{SET}/postgres.dump.zst.enc", b"sealed bytes", "temp")
    storage.write_bytes(f"temp/{SET}/manifest.json", b'{"manifest": true}', "temp")
    storage.promote(f"temp/{SET}", f"{tier}/{SET}", tier, "manifest.json")


@pytest.mark.parametrize(
    ("tier", "days"), [("daily", 7), ("weekly", 30), ("monthly", 365), ("incremental", 1)]
)
def test_a_promoted_set_carries_its_tiers_retention_and_staging_is_gone(
    locked_bucket: tuple[str, Any], tier: str, days: int
) -> None:
    bucket, client = locked_bucket
    before = datetime.now(UTC).replace(microsecond=0)
    _stage_and_promote(_storage(bucket, client, "GOVERNANCE"), tier)
    after = datetime.now(UTC) + timedelta(seconds=1)
    for name in ("postgres.dump.zst.enc", "manifest.json"):
        head = client.head_object(Bucket=bucket, Key=f"{HOST}/{tier}/{SET}/{name}")
        assert head["ObjectLockMode"] == "GOVERNANCE", name
        until = head["ObjectLockRetainUntilDate"]
        assert before + timedelta(days=days) <= until <= after + timedelta(days=days), name
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{HOST}/temp/").get("KeyCount")
    assert listed == 0, "staged objects carry no retention: promote deleted them"


def test_a_governance_locked_version_cannot_be_erased_without_bypass(locked_bucket: tuple[str, Any]) -> None:
    bucket, client = locked_bucket
    _stage_and_promote(_storage(bucket, client, "GOVERNANCE"), "daily")
    key = f"{HOST}/daily/{SET}/postgres.dump.zst.enc"
    version = client.head_object(Bucket=bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # A plain delete only hides the object behind a delete marker: the locked version stays.
    client.delete_object(Bucket=bucket, Key=key)
    assert client.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read() == b"sealed bytes"
    client.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)


def test_a_compliance_locked_version_cannot_be_erased_even_with_bypass(
    locked_bucket: tuple[str, Any],
) -> None:
    bucket, client = locked_bucket
    storage = _storage(bucket, client, "COMPLIANCE")
    storage.write_bytes(f"incremental/{SET}/redis.rdbx.zst.enc", b"written in place", "incremental")
    key = f"{HOST}/incremental/{SET}/redis.rdbx.zst.enc"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError) as refused:
        client.delete_object(
            Bucket=bucket, Key=key, VersionId=head["VersionId"], BypassGovernanceRetention=True
        )
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_staged_objects_locks_and_pointers_get_no_retention(locked_bucket: tuple[str, Any]) -> None:
    bucket, client = locked_bucket
    storage = _storage(bucket, client, "GOVERNANCE")
    storage.write_bytes(f"temp/{SET}/files.tar.zst.enc", b"staged", "temp")
    storage.write_bytes("latest.json", b"{}")
    assert storage.create_exclusive("locks/backup.json", b"{}")
    for key in (f"temp/{SET}/files.tar.zst.enc", "latest.json", "locks/backup.json"):
        head = client.head_object(Bucket=bucket, Key=f"{HOST}/{key}")
        assert "ObjectLockMode" not in head, key
        client.delete_object(Bucket=bucket, Key=f"{HOST}/{key}", VersionId=head["VersionId"])


def test_without_object_lock_settings_no_retention_is_asked(locked_bucket: tuple[str, Any]) -> None:
    bucket, client = locked_bucket
    _stage_and_promote(_storage(bucket, client, ""), "daily")
    head = client.head_object(Bucket=bucket, Key=f"{HOST}/daily/{SET}/manifest.json")
    assert "ObjectLockMode" not in head
