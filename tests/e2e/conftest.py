"""The synthesized state machines run by moto's Step Functions interpreter, their Lambda tasks routed
in-process to the real handlers, against real PostgreSQL and Redis and moto S3/KMS/SNS/Secrets Manager."""

from __future__ import annotations

import importlib
import io
import json
import logging
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction

from lambdas import dependencies as deps_module
from lambdas.dependencies import Dependencies, FunctionSettings
from tests.dataset import load_postgres, load_redis, make_files
from tests.infra.asl import concrete_definition
from tests.infra.conftest import TEST_CONTEXT, _synth
from tests.servers import RedisServer

REGION = "us-east-1"
BUCKET = "questboard-backups-e2e"
HOSTNAME = "e2e-host"


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from infra.functions import LayerPaths

    root = tmp_path_factory.mktemp("e2e-layers")
    paths = LayerPaths(python_deps=root / "python", pg_tools=root / "pgtools")
    for path in (paths.python_deps, paths.pg_tools):
        path.mkdir()
        (path / "README").write_text("the e2e tests run the handlers in-process\n")
    synthesized = _synth(dict(TEST_CONTEXT), paths, tmp_path_factory.mktemp("e2e-cdk.out"))
    return dict(synthesized.template.to_json())


@dataclass
class FakeContext:
    function_name: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_seconds: int = 900

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


def _invoke_in_process(self: LambdaFunction, event: str | None = None) -> tuple[str, bool, str]:
    """Stand-in for moto's Docker invocation: import the function's handler and call it."""
    module_name, attribute = self.handler.rsplit(".", 1)
    handler = getattr(importlib.import_module(module_name), attribute)
    payload = json.loads(event) if isinstance(event, str) and event else (event or {})
    try:
        result = handler(payload, FakeContext(self.function_name, timeout_seconds=int(self.timeout)))
    except Exception as error:  # noqa: BLE001 - surfaces as the Lambda error, by class name, as on AWS
        return json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)}), True, ""
    return json.dumps(result), False, ""


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


@dataclass
class World:
    machines: dict[str, str]
    settings: FunctionSettings
    database_url: str
    redis: RedisServer
    uploads: Path
    config: Path
    queue_url: str
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, name: str) -> Any:
        return self.clients.get(name) or boto3.client(name, region_name=REGION)

    def install(self, **overrides: Any) -> Dependencies:
        secrets = boto3.client("secretsmanager", region_name=REGION)
        deps = Dependencies(
            self.settings,
            clients=lambda name: self.clients.get(name) or boto3.client(name, region_name=REGION),
            secrets=lambda arn: secrets.get_secret_value(SecretId=arn)["SecretString"],
        )
        deps_module.install(deps)
        return deps

    def run(self, machine: str, body: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.start_execution(
            stateMachineArn=self.machines[machine],
            name=f"{machine}-{uuid.uuid4().hex[:12]}",
            input=json.dumps(body),
        )["executionArn"]
        return self.wait(arn, timeout)

    def wait(self, execution_arn: str, timeout: float = 180.0) -> dict[str, Any]:
        """The execution's description once it has ended."""
        sfn = boto3.client("stepfunctions", region_name=REGION)
        deadline = time.monotonic() + timeout
        while True:
            description = sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return dict(description)
            assert time.monotonic() < deadline, f"{execution_arn} still running after {timeout}s"
            time.sleep(0.1)  # polling the interpreter's thread for completion, bounded by the deadline

    def objects(self, prefix: str = "") -> list[str]:
        s3 = boto3.client("s3", region_name=REGION)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def alerts(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs", region_name=REGION)
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]


@pytest.fixture
def world(
    template: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    fresh_database: str,
    fresh_redis_dbs: RedisServer,
    tmp_path: Path,
) -> Iterator[World]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "QuestBoardBackup",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    # Retry backoff without real waiting: replace the module's `time`, not the global time.sleep.
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=lambda seconds: None, time=time.time))
    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", _invoke_in_process)
    logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)

    load_postgres(fresh_database)
    load_redis(fresh_redis_dbs.url(0))
    uploads, config = make_files(tmp_path / "app")
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):  # type: ignore[arg-type]
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="alerts")["TopicArn"]
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        boto3.client("sns", region_name=REGION).subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        secrets = boto3.client("secretsmanager", region_name=REGION)
        database_secret = secrets.create_secret(Name="db", SecretString=json.dumps({"url": fresh_database}))[
            "ARN"
        ]
        redis_secret = secrets.create_secret(
            Name="redis", SecretString=json.dumps({"url": fresh_redis_dbs.url(0)})
        )["ARN"]
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="e2e", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )["Role"]["Arn"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("placeholder.py", "")
        awslambda = boto3.client("lambda", region_name=REGION)
        attrs: dict[tuple[str, str], str] = {}
        refs: dict[str, str] = {}
        for logical_id, resource in template["Resources"].items():
            refs[logical_id] = f"ref-{logical_id}"
            if resource["Type"] == "AWS::Lambda::Function":
                # Import now, as Lambda's init phase would, not inside the interpreter's worker threads.
                importlib.import_module(resource["Properties"]["Handler"].rsplit(".", 1)[0])
                arn = awslambda.create_function(
                    FunctionName=logical_id[:64],
                    Runtime="python3.12",
                    Role=role,
                    Handler=resource["Properties"]["Handler"],
                    Code={"ZipFile": archive.getvalue()},
                    Timeout=int(resource["Properties"]["Timeout"]),
                )["FunctionArn"]
                attrs[(logical_id, "Arn")] = arn
        sfn = boto3.client("stepfunctions", region_name=REGION)
        machines = {}
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] != "AWS::StepFunctions::StateMachine":
                continue
            asl = concrete_definition(template, logical_id, refs, attrs)
            kind = "backup" if "Prepare" in asl["States"] else "restore"
            machines[kind] = sfn.create_state_machine(name=kind, definition=json.dumps(asl), roleArn=role)[
                "stateMachineArn"
            ]
        settings = FunctionSettings(
            s3_bucket=BUCKET,
            hostname=HOSTNAME,
            kms_key_id=key_id,
            enabled=True,
            database_secret_arn=database_secret,
            redis_secret_arn=redis_secret,
            alert_topic_arn=topic,
            files_paths=(uploads,),
            config_paths=(config,),
            pg_split_min_bytes=0,  # the test database is small: split it all the same (parallel dump streams)
        )
        world = World(machines, settings, fresh_database, fresh_redis_dbs, uploads, config, queue_url)
        world.install()
        yield world
        deps_module.install(None)
