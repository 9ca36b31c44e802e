"""The functions encrypt objects in S3 under the bucket's SSE key (BACKUP_S3_KMS_KEY_ID), never under
the data-key wrapping key (BACKUP_KMS_KEY_ID): whoever may read the bucket gets nothing that the
wrapping key's grants would open."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lambdas.dependencies import Dependencies, FunctionSettings

BUCKET = "questboard-sse-test"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "ap-northeast-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        kms = boto3.client("kms")
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"})
        yield {
            "s3": s3,
            "wrapping": kms.create_key()["KeyMetadata"]["Arn"],
            "bucket": kms.create_key()["KeyMetadata"]["Arn"],
        }


def test_the_functions_storage_names_the_bucket_key_not_the_wrapping_key(aws: dict[str, Any]) -> None:
    settings = FunctionSettings.from_env(
        {
            "BACKUP_S3_BUCKET": BUCKET,
            "BACKUP_HOSTNAME": "sse-host",
            "BACKUP_KMS_KEY_ID": aws["wrapping"],
            "BACKUP_S3_KMS_KEY_ID": aws["bucket"],
        }
    )
    storage = Dependencies(settings, clients=lambda name: boto3.client(name)).storage()
    storage.write_bytes("temp/questboard_full_20261201_020000/manifest.json", b"{}", "temp")
    head = aws["s3"].head_object(
        Bucket=BUCKET, Key="sse-host/temp/questboard_full_20261201_020000/manifest.json"
    )
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == aws["bucket"]
