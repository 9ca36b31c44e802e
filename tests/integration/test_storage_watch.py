"""The hourly staging watch: objects under this host's temp/ older than a day are counted and emitted
(the StagingOlderThanADay alarm's metric); fresh staging, other hosts and the tiers are not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from lambdas import dependencies as deps_module
from lambdas.dependencies import Dependencies, FunctionSettings
from tests.conftest import S3Bucket


class Context:
    function_name = "storage_watch"
    memory_limit_in_mb = 512
    aws_request_id = "watch"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:storage_watch"


@pytest.fixture
def watch(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "QuestBoardBackup")

    def client(name: str) -> Any:
        return boto3.client(name, endpoint_url=s3_bucket.endpoint, region_name="us-east-1",
                            config=Config(signature_version="s3v4"))  # fmt: skip

    settings = FunctionSettings(s3_bucket=s3_bucket.name, hostname="watched", kms_key_id="unused")
    deps_module.install(Dependencies(settings, clients=client))
    for key in ("watched/temp/questboard_full_20240101_020000/postgres.dump.zst.enc",
                "watched/temp/questboard_full_20240101_020000/redis.rdbx.zst.enc",
                "watched/daily/questboard_full_20240101_020000/manifest.json",
                "other-host/temp/questboard_full_20240101_020000/postgres.dump.zst.enc"):  # fmt: skip
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key, Body=b"x" * 10)
    yield s3_bucket
    deps_module.install(None)


def _emitted(out: str) -> dict[str, float]:
    for line in out.splitlines():
        if '"_aws"' in line:
            document = json.loads(line)
            return {name: document[name][0] for name in ("staging_stale_objects", "staging_stale_bytes")}
    raise AssertionError(f"no metrics emitted: {out[:500]}")


def test_staging_older_than_a_day_is_counted_and_fresh_staging_is_not(
    watch: S3Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    from lambdas import storage_watch

    later = (datetime.now(UTC) + timedelta(days=1, hours=1)).isoformat()
    result = storage_watch.handler({"time": later}, Context())
    assert result["stale_objects"] == 2 and result["stale_bytes"] == 20
    assert _emitted(capsys.readouterr().out) == {"staging_stale_objects": 2, "staging_stale_bytes": 20}
    now = datetime.now(UTC).isoformat()
    assert storage_watch.handler({"time": now}, Context())["stale_objects"] == 0
    assert _emitted(capsys.readouterr().out)["staging_stale_objects"] == 0
