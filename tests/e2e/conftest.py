"""The synthesized state machines run by moto's Step Functions interpreter, their Lambda tasks routed
in-process to the real handlers, against real PostgreSQL and Redis and moto S3/KMS/SNS/Secrets Manager/
DynamoDB: the offline world of tests/offline.py, provisioned inside ``mock_aws`` for each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from lambdas import dependencies as deps_module
from tests.dataset import load_postgres, load_redis, make_files
from tests.lambda_runtime import in_process_lambdas
from tests.offline import (
    FAKE_AWS_ENVIRONMENT,
    POWERTOOLS_ENVIRONMENT,
    World,
    provision,
    synthesize,
)
from tests.servers import RedisServer

BUCKET = "questboard-backups-e2e"
HOSTNAME = "e2e-host"


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synthesize(tmp_path_factory.mktemp("e2e-synth"))


class FlakyS3:
    """An S3 client that refuses writes of keys containing ``needle`` (the injected failure)."""

    def __init__(self, client: Any, needle: str) -> None:
        self._client, self._needle = client, needle

    def _refuse(self, operation: str, key: str) -> None:
        from botocore.exceptions import ClientError

        if self._needle in key:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "injected failure"}}, operation)

    def put_object(self, **kwargs: Any) -> Any:
        self._refuse("PutObject", kwargs["Key"])
        return self._client.put_object(**kwargs)

    def create_multipart_upload(self, **kwargs: Any) -> Any:
        self._refuse("CreateMultipartUpload", kwargs["Key"])
        return self._client.create_multipart_upload(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def world(
    template: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    fresh_database: str,
    fresh_redis_dbs: RedisServer,
    tmp_path: Path,
) -> Iterator[World]:
    for name, value in {**FAKE_AWS_ENVIRONMENT, **POWERTOOLS_ENVIRONMENT}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    load_postgres(fresh_database)
    load_redis(fresh_redis_dbs.url(0))
    uploads, config = make_files(tmp_path / "app")
    with (
        in_process_lambdas(),
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
    ):
        yield provision(
            template,
            database_url=fresh_database,
            redis=fresh_redis_dbs,
            uploads=uploads,
            config=config,
            bucket=BUCKET,
            hostname=HOSTNAME,
        )
        deps_module.install(None)
