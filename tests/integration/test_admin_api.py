"""The admin API's handlers with real API Gateway events (TOKEN authorizer event, REST proxy events),
against a moto server over HTTP (S3 with presigned URLs fetched for real, DynamoDB, Step Functions,
Secrets Manager) and sets the engine made. Each security case answers in the one error shape and
starts or signs nothing."""

from __future__ import annotations

import json
import logging
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from lambdas import dependencies as deps_module
from lambdas.dependencies import Dependencies, FunctionSettings
from questboard_backup.admin.tokens import TokenDocument
from questboard_backup.aws.catalog_table import CatalogTable
from questboard_backup.backup import run_backup
from questboard_backup.catalog import write_latest_pointer
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.manifest import format_time, parse_time
from questboard_backup.storage.s3 import S3Storage
from tests.catalog_table import create_catalog_table
from tests.conftest import S3Bucket
from tests.fake_source import FakeComponent, registered_fake

HOST = "api-host"
REGION = "us-east-1"
API_ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/api"
#: Three sets the engine makes: two fulls (daily, then monthly) and an incremental, oldest first.
SETS = (
    ("full", datetime(2024, 1, 3, 2, 0, 0, tzinfo=UTC)),
    ("incremental", datetime(2024, 1, 3, 8, 0, 0, tzinfo=UTC)),
    ("full", datetime(2024, 2, 1, 2, 0, 0, tzinfo=UTC)),
)
ROUTES = {
    ("POST", "/api/admin/backup"): "/api/admin/backup",
    ("GET", "/api/admin/backup/status"): "/api/admin/backup/status",
    ("POST", "/api/admin/backup/download-url"): "/api/admin/backup/download-url",
    ("GET", "/api/admin/openapi.json"): "/api/admin/openapi.json",
    ("GET", "/metrics"): "/metrics",
}


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class Api:
    bucket: S3Bucket
    storage: S3Storage
    table: CatalogTable
    machine: str
    tokens: dict[str, str]
    ids: list[str]
    endpoint: str
    key: str
    backup_dir: Path

    def sfn(self) -> Any:
        return boto3.client("stepfunctions", endpoint_url=self.endpoint, region_name=REGION)

    def executions(self) -> list[str]:
        return [e["name"] for e in self.sfn().list_executions(stateMachineArn=self.machine)["executions"]]

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "admin",
        body: Any = None,
        raw_body: str | None = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Answer:
        """API Gateway's part: the authorizer (401 when it refuses, 403 outside its policy), then the
        proxy event to the API function."""
        from lambdas import api, api_authorizer

        header = f"Bearer {self.tokens.get(token, token)}" if token else None
        resource = ROUTES.get((method, path))
        path_parameters = None
        if resource is None and method == "GET" and path.startswith("/api/admin/backup/"):
            resource, path_parameters = "/api/admin/backup/{backupId}", {"backupId": path.rsplit("/", 1)[1]}
        method_arn = f"{API_ARN}/{method}{path}"
        try:
            policy = api_authorizer.handler(
                {"type": "TOKEN", "authorizationToken": header, "methodArn": method_arn},
                Context("authorizer"),
            )
        except Exception as error:  # noqa: BLE001 - API Gateway's 401 is exactly this
            assert str(error) == "Unauthorized"
            return Answer(401, {"error": {"code": "UNAUTHORIZED", "message": "Unauthorized"}})
        if not _allows(policy["policyDocument"], method_arn):
            return Answer(403, {"error": {"code": "ACCESS_DENIED", "message": "not authorized"}})
        text = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
        headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "Content-Type": content_type}
        if header:
            headers["Authorization"] = header
        event = {
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": headers,
            "multiValueHeaders": {key: [value] for key, value in headers.items()},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
            "pathParameters": path_parameters,
            "stageVariables": None,
            "body": text,
            "isBase64Encoded": False,
            "requestContext": {
                "resourcePath": resource,
                "httpMethod": method,
                "path": f"/api{path}",
                "stage": "api",
                "requestId": secrets.token_hex(8),
                "identity": {"sourceIp": "203.0.113.7"},
                "authorizer": {**policy["context"], "principalId": policy["principalId"]},
            },
        }
        response = api.handler(event, Context("api"))
        if raw and response["statusCode"] == 200:
            return Answer(200, response["body"])
        return Answer(response["statusCode"], json.loads(response["body"]) if response["body"] else None)


def _allows(document: dict[str, Any], method_arn: str) -> bool:
    import fnmatch

    resources = [r for s in document["Statement"] if s["Effect"] == "Allow" for r in s["Resource"]]
    return any(fnmatch.fnmatchcase(method_arn, pattern) for pattern in resources)


@dataclass
class Context:
    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = "request"
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:api"


@pytest.fixture
def api(s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setattr(deps_module, "TOKENS_MAX_AGE_SECONDS", 0)  # revocation is seen at once here
    endpoint = s3_bucket.endpoint

    def client(name: str) -> Any:
        config = Config(signature_version="s3v4") if name == "s3" else None
        return boto3.client(name, endpoint_url=endpoint, region_name=REGION, config=config)

    dynamodb = client("dynamodb")
    table_name = f"catalog-{secrets.token_hex(4)}"
    create_catalog_table(dynamodb, table_name)
    document, admin = TokenDocument().add("ops-admin", "admin")
    document, reader = document.add("grafana", "read")
    document, revoked = document.add("old-laptop", "read")
    secret = client("secretsmanager").create_secret(
        Name=f"tokens-{secrets.token_hex(4)}", SecretString=document.dumps()
    )["ARN"]
    role = "arn:aws:iam::123456789012:role/sfn"
    machine = client("stepfunctions").create_state_machine(
        name=f"backup-{secrets.token_hex(4)}",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn=role,
    )["stateMachineArn"]
    storage = S3Storage(s3_bucket.name, HOST, s3_bucket.client)
    table = CatalogTable(table_name, HOST, dynamodb)
    key = secrets.token_urlsafe(24)
    wrapper = PassphraseKeyWrapper(key)
    source = tmp_path / "app" / "data.bin"
    source.parent.mkdir()
    ids = []
    for number, (kind, moment) in enumerate(SETS):
        source.write_bytes(f"quest board data {number}".encode() * 100)
        result = run_backup(kind, [FakeComponent(source)], [storage], wrapper, HOST, UTC, moment)
        write_latest_pointer(storage, result.manifest)
        table.record_success(
            result.manifest, storage.uri(f"{result.manifest.tier}/{result.manifest.backup_id}"), moment
        )
        ids.append(result.manifest.backup_id)
    settings = FunctionSettings(
        s3_bucket=s3_bucket.name,
        hostname=HOST,
        kms_key_id="unused-here",
        backup_dir=tmp_path / "var-backups",
        state_machine_arn=machine,
        catalog_table=table_name,
        api_tokens_secret=secret,
        full_schedule="cron(0 2 * * ? *)",
        incremental_schedule="cron(0 8,14,20 * * ? *)",
    )
    deps_module.install(Dependencies(settings, clients=client))
    tokens = {"admin": admin, "read": reader, "revoked": revoked}
    world = Api(s3_bucket, storage, table, machine, tokens, ids, endpoint, key, tmp_path / "var-backups")
    # Revoke the third token now: it was valid, it must not be any more.
    client("secretsmanager").put_secret_value(
        SecretId=secret, SecretString=document.revoke("old-laptop").dumps()
    )
    yield world
    deps_module.install(None)


def _error(answer: Answer, status: int) -> str:
    assert answer.status == status, answer.body
    assert set(answer.body) == {"error"} and {"code", "message"} <= set(answer.body["error"]), answer.body
    return str(answer.body["error"]["message"])


# Starting backups


def test_an_admin_token_starts_a_backup_named_after_its_id_and_a_second_start_is_409(api: Api) -> None:
    answer = api.call("POST", "/api/admin/backup", body={"type": "full"})
    assert answer.status == 202, answer.body
    backup_id = answer.body["backup_id"]
    assert backup_id.startswith("questboard_full_")
    assert answer.body["execution_arn"].endswith(f":{backup_id}")
    assert answer.body["status_url"].endswith("/api/admin/backup/status")
    assert api.executions() == [backup_id]
    message = _error(api.call("POST", "/api/admin/backup", body={"type": "incremental"}), 409)
    assert backup_id in message
    assert api.executions() == [backup_id]


def test_backups_disabled_is_409_and_starts_nothing(api: Api) -> None:
    deps = deps_module.dependencies()
    deps_module.install(Dependencies(_replace(deps.settings, enabled=False), clients=deps.client))
    assert _error(api.call("POST", "/api/admin/backup", body={"type": "full"}), 409) == "backups are disabled"
    assert api.executions() == []


def _replace(settings: FunctionSettings, **changes: Any) -> FunctionSettings:
    from dataclasses import replace

    return replace(settings, **changes)


@pytest.mark.parametrize(
    ("case", "call", "status"),
    [
        ("no token", {"token": None, "body": {"type": "full"}}, 401),
        ("unknown token", {"token": "qbb_" + "x" * 43, "body": {"type": "full"}}, 401),
        ("revoked token", {"token": "revoked", "body": {"type": "full"}}, 401),
        ("read token", {"token": "read", "body": {"type": "full"}}, 403),
        ("unknown type", {"body": {"type": "differential"}}, 422),
        ("extra field", {"body": {"type": "full", "force": True}}, 422),
        ("missing type", {"body": {}}, 422),
        ("malformed json", {"raw_body": '{"type": "full"'}, 422),
        ("oversized body", {"raw_body": json.dumps({"type": "full", "pad": "x" * 5000})}, 413),
        (
            "wrong content type",
            {"raw_body": "type=full", "content_type": "application/x-www-form-urlencoded"},
            415,
        ),
    ],
)
def test_a_bad_start_gets_its_status_in_the_one_error_shape_and_starts_nothing(
    api: Api, case: str, call: dict[str, Any], status: int
) -> None:
    _error(api.call("POST", "/api/admin/backup", **call), status)
    assert api.executions() == []


def test_a_token_in_the_query_string_is_not_a_token(api: Api) -> None:
    answer = api.call("GET", "/api/admin/backup/status", token=None, query={"token": api.tokens["admin"]})
    _error(answer, 401)


def test_a_read_token_reads_and_its_policy_covers_only_read_routes(api: Api) -> None:
    from lambdas import api_authorizer

    assert api.call("GET", "/api/admin/backup/status", token="read").status == 200
    policy = api_authorizer.handler(
        {
            "type": "TOKEN",
            "authorizationToken": f"Bearer {api.tokens['read']}",
            "methodArn": f"{API_ARN}/GET/metrics",
        },
        Context("authorizer"),
    )
    assert policy["principalId"] == "grafana" and policy["context"] == {
        "token_name": "grafana",
        "scope": "read",
    }
    assert _allows(policy["policyDocument"], f"{API_ARN}/GET/api/admin/backup/status")
    assert _allows(policy["policyDocument"], f"{API_ARN}/POST/api/admin/backup/download-url")
    assert not _allows(policy["policyDocument"], f"{API_ARN}/POST/api/admin/backup")


def test_the_api_function_checks_the_scope_itself(api: Api) -> None:
    """Behind a misconfigured authorizer (or a cached admin policy), a read context still cannot start."""
    from lambdas import api as api_module

    event = {
        "resource": "/api/admin/backup",
        "path": "/api/admin/backup",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"type": "full"}),
        "isBase64Encoded": False,
        "requestContext": {
            "stage": "api",
            "requestId": "r",
            "identity": {"sourceIp": "203.0.113.7"},
            "authorizer": {"token_name": "grafana", "scope": "read", "principalId": "grafana"},
        },
    }
    response = api_module.handler(event, Context("api"))
    assert response["statusCode"] == 403 and json.loads(response["body"])["error"]["code"] == "ACCESS_DENIED"
    event["requestContext"]["authorizer"] = {}  # type: ignore[index]
    assert api_module.handler(event, Context("api"))["statusCode"] == 401
    assert api.executions() == []


# Status and detail


def test_status_reports_last_results_retained_sets_storage_and_next_runs(api: Api) -> None:
    api.table.record_failure(
        "incremental", "questboard_incremental_20240201_080000", "SourceUnreachableError"
    )
    body = api.call("GET", "/api/admin/backup/status", token="read").body
    assert body["hostname"] == HOST and body["enabled"] is True and body["running"] is None
    full, incremental = body["last_success"]["full"], body["last_success"]["incremental"]
    assert full["id"] == api.ids[2] and full["tier"] == "monthly" and full["stored_bytes"] > 0
    assert incremental["id"] == api.ids[1]
    assert body["last_failure"]["incremental"]["error"] == "SourceUnreachableError"
    assert body["failures_total"] == {"full": 0, "incremental": 1}
    assert [item["id"] for item in body["backups"]] == list(reversed(api.ids))
    assert {item["tier"] for item in body["backups"]} == {"daily", "incremental", "monthly"}
    assert body["storage"]["daily"]["sets"] == 1 and body["storage"]["monthly"]["sets"] == 1
    assert body["storage"]["daily"]["stored_bytes"] == body["backups"][2]["stored_bytes"]
    assert body["next_runs"]["full"] and body["next_runs"]["incremental"]


def test_status_pages_through_every_retained_set(api: Api) -> None:
    seen: list[str] = []
    query: dict[str, str] = {"limit": "1"}
    for _ in range(10):
        body = api.call("GET", "/api/admin/backup/status", query=query).body
        seen += [item["id"] for item in body["backups"]]
        if not body["next_token"]:
            break
        query = {"limit": "1", "next_token": body["next_token"]}
    assert seen == list(reversed(api.ids))
    tiered = api.call("GET", "/api/admin/backup/status", query={"tier": "monthly"}).body
    assert [item["id"] for item in tiered["backups"]] == [api.ids[2]]


@pytest.mark.parametrize(
    "query", [{"limit": "0"}, {"limit": "1000"}, {"limit": "x"}, {"tier": "yearly"}, {"next_token": "forged"}]
)
def test_bad_status_parameters_are_refused_in_the_error_shape(api: Api, query: dict[str, str]) -> None:
    answer = api.call("GET", "/api/admin/backup/status", query=query)
    assert answer.status in (400, 422)
    _error(answer, answer.status)


def test_status_shows_the_running_backup_and_its_step(api: Api) -> None:
    started = api.call("POST", "/api/admin/backup", body={"type": "full"}).body
    running = api.call("GET", "/api/admin/backup/status").body["running"]
    assert running["backup_id"] == started["backup_id"]
    assert running["execution_arn"] == started["execution_arn"]


def test_detail_describes_one_set_and_unknown_or_malformed_ids_are_refused(api: Api) -> None:
    body = api.call("GET", f"/api/admin/backup/{api.ids[0]}", token="read").body
    assert body["backup_id"] == api.ids[0] and body["tier"] == "daily"
    assert body["location"] == f"s3://{api.bucket.name}/{HOST}/daily/{api.ids[0]}"
    (component,) = body["components"]
    assert component["name"] == "fake" and component["counts"]["bytes"] == len(b"quest board data 0") * 100
    assert [item["name"] for item in body["objects"]] == ["fake.zst.enc"] or body["objects"]
    assert body["verification"]["published_by_workflow"] is True
    _error(api.call("GET", "/api/admin/backup/questboard_full_20230101_020000"), 404)
    _error(api.call("GET", "/api/admin/backup/questboard_full_00000000_000000"), 404)  # no such time
    _error(api.call("GET", "/api/admin/backup/..%2F..%2Fetc"), 422)


# Download URLs


def _download(api: Api, urls: dict[str, Any], into: Path) -> Path:
    folder = into / urls["folder"]
    folder.mkdir(parents=True)
    for item in urls["files"]:
        response = requests.get(item["url"], timeout=30)  # plain HTTP, no AWS credentials
        assert response.status_code == 200, item["name"]
        (folder / item["name"]).write_bytes(response.content)
    return folder


@pytest.mark.parametrize(
    "spelling",
    [
        "id",
        "latest",
        "s3",
        "s3-archive",
        "local",
    ],
)
def test_download_urls_for_every_spelling_of_a_set_fetch_a_folder_verify_accepts(
    api: Api,
    spelling: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    newest = api.ids[2]
    path = {
        "id": newest,
        "latest": "latest",
        "s3": f"s3://{api.bucket.name}/{HOST}/monthly/{newest}",
        "s3-archive": f"s3://{api.bucket.name}/{HOST}/monthly/{newest}.tar.gz",
        "local": f"{api.backup_dir}/monthly/{newest}.tar.gz",
    }[spelling]
    answer = api.call("POST", "/api/admin/backup/download-url", token="read", body={"backupPath": path})
    assert answer.status == 200, answer.body
    body = answer.body
    assert body["backup_id"] == newest and body["folder"] == f"monthly/{newest}"
    assert body["expires_in"] == 900
    names = [item["name"] for item in body["files"]]
    assert names[0] == "manifest.json" and len(names) >= 2
    for item in body["files"]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(item["url"]).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and int(query["X-Amz-Expires"][0]) <= 900
    folder = _download(api, body, tmp_path / "download")
    from questboard_backup import cli

    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", api.key)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "cli-backups"))
    monkeypatch.setenv("BACKUP_S3_BUCKET", "")
    monkeypatch.setenv("BACKUP_ENV_FILE", "")
    with registered_fake(tmp_path / "app" / "data.bin", tmp_path / "restored.bin"):
        assert cli.main(["verify", str(folder)]) == 0, capsys.readouterr()
    assert newest in capsys.readouterr().out


def test_a_lower_configured_expiry_is_used(api: Api) -> None:
    deps = deps_module.dependencies()
    deps_module.install(Dependencies(_replace(deps.settings, url_expiry_seconds=60), clients=deps.client))
    body = api.call("POST", "/api/admin/backup/download-url", body={"backupPath": api.ids[0]}).body
    assert body["expires_in"] == 60
    assert all("X-Amz-Expires=60&" in item["url"] for item in body["files"])


@pytest.mark.parametrize(
    "path",
    [
        "s3://{bucket}/{host}/daily/../monthly/{id}",
        "{dir}/daily/../../etc/passwd",
        "s3://another-bucket/{host}/daily/{id}",
        "s3://{bucket}/another-host/daily/{id}",
        "s3://{bucket}/{host}/locks/backup.lock",
        "s3://{bucket}/{host}/daily/{id}/../../latest.json",
        "/etc/passwd",
        "/tmp/daily/{id}.tar.gz",
        "{dir}/logs/backup_20240101.log",
        "questboard_full_20230101_020000",
        "s3://questboard-backups/prod/daily/backup.tar.gz",
        "../daily/{id}",
        "daily/{id}",
    ],
)
def test_backup_paths_outside_this_deployment_are_404_and_nothing_is_signed(api: Api, path: str) -> None:
    spelled = path.format(bucket=api.bucket.name, host=HOST, id=api.ids[0], dir=api.backup_dir)
    answer = api.call("POST", "/api/admin/backup/download-url", body={"backupPath": spelled})
    message = _error(answer, 404)
    assert "http" not in json.dumps(answer.body) and "X-Amz" not in message


@pytest.mark.parametrize(
    ("call", "status"),
    [
        ({"body": {"backupPath": ""}}, 422),
        ({"body": {"backupPath": "x" * 2000}}, 422),
        ({"body": {"path": "latest"}}, 422),
        ({"raw_body": "[]"}, 422),
        ({"raw_body": json.dumps({"backupPath": "latest", "pad": "y" * 5000})}, 413),
        ({"raw_body": "latest", "content_type": "text/plain"}, 415),
    ],
)
def test_malformed_download_requests_are_refused(api: Api, call: dict[str, Any], status: int) -> None:
    _error(api.call("POST", "/api/admin/backup/download-url", **call), status)


# Audit and the document


def test_every_call_leaves_an_audit_line_without_the_token(api: Api) -> None:
    from lambdas.observability import logger

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    collect = Collect()
    collect.setFormatter(logger.registered_formatter)
    logger.addHandler(collect)
    try:
        api.call("POST", "/api/admin/backup", token="read", body={"type": "full"})
        api.call("POST", "/api/admin/backup", token="admin", body={"type": "weekly"})
        api.call("GET", f"/api/admin/backup/{api.ids[0]}")
    finally:
        logger.removeHandler(collect)
    records = [json.loads(line)["audit"] for line in lines if '"audit"' in line]
    # The read token's POST was refused by the authorizer's policy (API Gateway's access log has it).
    assert [(r["token"], r["route"], r["status"]) for r in records] == [
        ("ops-admin", "POST /api/admin/backup", 422),
        ("ops-admin", "GET /api/admin/backup/{backupId}", 200),
    ]
    assert records[1]["backup_id"] == api.ids[0] and records[1]["source_ip"] == "203.0.113.7"
    assert all(token not in "".join(lines) for token in api.tokens.values())


def test_the_openapi_document_is_served_behind_auth(api: Api) -> None:
    _error(api.call("GET", "/api/admin/openapi.json", token=None), 401)
    document = api.call("GET", "/api/admin/openapi.json", token="read").body
    assert document["openapi"].startswith("3.1")
    assert document["security"] == [{"bearer": []}]
    assert "/api/admin/backup/download-url" in document["paths"]


# What the review of the first version found


class DenyingS3:
    """S3 as the api function's role sees it on AWS: a missing key is AccessDenied (403), not 404,
    for a reader that may list only its own prefix."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def get_object(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        try:
            return self._client.get_object(**kwargs)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                denied = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}  # fmt: skip
                raise ClientError(denied, "GetObject") from None
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _with(api: Api, **changes: Any) -> None:
    deps = deps_module.dependencies()
    clients = changes.pop("clients", deps.client)
    deps_module.install(Dependencies(_replace(deps.settings, **changes), clients=clients))


def test_a_missing_set_is_404_when_s3_answers_403_as_it_does_on_aws(api: Api) -> None:
    deps = deps_module.dependencies()
    s3 = DenyingS3(deps.client("s3"))
    _with(api, clients=lambda name: s3 if name == "s3" else deps.client(name))
    missing = "questboard_full_20230101_020000"
    for path in (
        missing,
        f"s3://{api.bucket.name}/{HOST}/daily/{missing}",
        f"{api.backup_dir}/daily/{missing}.tar.gz",
    ):
        _error(api.call("POST", "/api/admin/backup/download-url", body={"backupPath": path}), 404)
    _error(api.call("GET", f"/api/admin/backup/{missing}"), 404)
    assert api.call("POST", "/api/admin/backup/download-url", body={"backupPath": api.ids[0]}).status == 200


def test_a_misconfigured_api_is_a_500_not_the_callers_fault(api: Api) -> None:
    _with(api, catalog_table="")
    message = _error(api.call("GET", "/api/admin/backup/status"), 500)
    assert "misconfigured" in message


def test_a_schedule_form_next_run_cannot_read_is_unknown_not_an_error(api: Api) -> None:
    _with(api, full_schedule="cron(0 2 ? * 2#1 *)")
    body = api.call("GET", "/api/admin/backup/status").body
    assert body["next_runs"]["full"] is None and body["next_runs"]["incremental"]


def test_an_older_success_recorded_late_does_not_hide_the_newer_one(api: Api) -> None:
    from questboard_backup.catalog import read_manifest

    older = read_manifest(api.storage, f"daily/{api.ids[0]}")
    newer = read_manifest(api.storage, f"monthly/{api.ids[2]}")
    # Finished a second earlier, and finished in the same second (wall-clock seconds tie often:
    # then the later-started set, the greater id, is the newer one).
    earlier = format_time(parse_time(newer.finished_at) - timedelta(seconds=1))
    for finished_at in (earlier, newer.finished_at):
        api.table.record_success(replace(older, finished_at=finished_at), "s3://late", SETS[2][1])
        body = api.call("GET", "/api/admin/backup/status").body
        assert body["last_success"]["full"]["id"] == api.ids[2], finished_at
