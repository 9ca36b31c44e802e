"""`make bench` (API part): the admin API's status latency and AWS calls per request with 10 and 500
retained sets (locally, against moto), and the API handlers' cold import time.

Status answers from the catalog table: its latency and its AWS calls must stay flat as sets pile up
(targets: at most 3 AWS calls, p99 under 200 ms warm, the 500-set p50 within 1.5x of the 10-set one).
Cold import: a fresh interpreter imports each handler module (target under 300 ms); the raw floor,
boto3 alone, is measured in the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REGION = "us-east-1"
SIZES = (10, 500)
REQUESTS = 200
TARGET_CALLS = 3
TARGET_P99_MS = 200.0
TARGET_FLAT = 1.5
TARGET_IMPORT_MS = 300.0


def _manifest(number: int, now: datetime) -> Any:
    from questboard_backup.address import BackupId, tier_for
    from questboard_backup.manifest import ComponentEntry, Manifest

    kind = "full" if number % 4 == 0 else "incremental"
    moment = now - timedelta(hours=6 * number)
    backup_id = str(BackupId.at(kind, moment))
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    component = ComponentEntry("postgres", "postgres.dump.zst.enc", 10**9, 3 * 10**8, "0" * 64, 60.0, {})
    return Manifest(
        backup_id=backup_id,
        type=kind,
        tier=tier_for(kind, moment, UTC),
        hostname="bench",
        started_at=stamp,
        finished_at=stamp,
        tool_version="bench",
        key={},
        components=(component,),
    )


def status_run(sets: int) -> dict[str, float]:
    import boto3
    from moto import mock_aws

    from lambdas import api, dependencies
    from lambdas.dependencies import Dependencies, FunctionSettings
    from questboard_backup.address import SetAddress
    from questboard_backup.aws.catalog_table import SUMMARY, CatalogTable, _item, set_key, set_record
    from tests.catalog_table import create_catalog_table

    calls = {"n": 0}

    def counted(name: str) -> Any:
        client = boto3.client(name, region_name=REGION)
        client.meta.events.register("before-call", lambda **_: calls.__setitem__("n", calls["n"] + 1))
        return client

    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_catalog_table(dynamodb, "catalog")
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="bench-bucket")
        machine = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
            name="backup",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        now = datetime.now(UTC).replace(microsecond=0)
        manifests = [_manifest(number, now) for number in range(sets)]
        for manifest in manifests[1:]:  # written directly; the newest through the real writer
            where = SetAddress("bench", manifest.tier, manifest.backup_id).s3_uri("bench-bucket")
            record = set_record(manifest, where)
            record["expires_at"] = int((now + timedelta(days=400)).timestamp())
            dynamodb.put_item(
                TableName="catalog", Item=_item({"pk": "bench", "sk": set_key(manifest.backup_id), **record})
            )
        table = CatalogTable("catalog", "bench", dynamodb)
        table.record_success(manifests[0], "s3://bench-bucket/bench/latest", now)
        assert table.find(manifests[0].backup_id) is not None and SUMMARY
        settings = FunctionSettings(
            s3_bucket="bench-bucket",
            hostname="bench",
            kms_key_id="unused",
            state_machine_arn=machine,
            catalog_table="catalog",
            full_schedule="cron(0 2 * * ? *)",
            incremental_schedule="cron(0 8,14,20 * * ? *)",
        )
        dependencies.install(Dependencies(settings, clients=counted))
        event = {
            "resource": "/api/admin/backup/status",
            "path": "/api/admin/backup/status",
            "httpMethod": "GET",
            "headers": {"Host": "bench"},
            "queryStringParameters": None,
            "body": None,
            "isBase64Encoded": False,
            "requestContext": {
                "stage": "prod",
                "requestId": "bench",
                "identity": {"sourceIp": "127.0.0.1"},
                "authorizer": {"token_name": "bench", "scope": "read", "principalId": "bench"},
            },
        }
        context = type("Context", (), {"function_name": "api", "memory_limit_in_mb": 512,
                                       "aws_request_id": "bench", "invoked_function_arn": "arn"})()  # fmt: skip
        api.handler(event, context)  # warm: clients built, modules loaded
        latencies, per_request = [], []
        for _ in range(REQUESTS):
            calls["n"] = 0
            started = time.perf_counter()
            response = api.handler(event, context)
            latencies.append((time.perf_counter() - started) * 1000)
            per_request.append(calls["n"])
            assert response["statusCode"] == 200, response["body"]
        dependencies.install(None)
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "calls": float(max(per_request)),
    }


def import_ms(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print((time.perf_counter() - t) * 1000)"
    env = {**os.environ, "PYTHONPATH": str(REPO), "POWERTOOLS_SERVICE_NAME": "questboard-backup"}
    samples = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(5)
    ]
    return statistics.median(samples)


def main() -> int:
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        os.environ.setdefault(name, value)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    runs = {sets: status_run(sets) for sets in SIZES}
    small, large = runs[SIZES[0]], runs[SIZES[1]]
    ok = True
    for sets, run in runs.items():
        print(f"status with {sets:3} retained sets: p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
              f"AWS calls per request {run['calls']:.0f}")  # fmt: skip
    flat = large["p50_ms"] / small["p50_ms"]
    checks = [
        ("status AWS calls", max(small["calls"], large["calls"]), TARGET_CALLS, "<="),
        ("status p99 ms (500 sets)", large["p99_ms"], TARGET_P99_MS, "<"),
        ("status p50 500/10 sets", flat, TARGET_FLAT, "<="),
    ]
    floor = import_ms("import boto3")
    for module in ("lambdas.api", "lambdas.api_authorizer"):
        checks.append((f"cold import {module} ms", import_ms(f"import {module}"), TARGET_IMPORT_MS, "<"))
    print(f"cold import of boto3 alone (the floor every handler pays): {floor:.0f} ms")
    for name, value, target, sense in checks:
        met = value <= target if sense == "<=" else value < target
        ok &= met
        print(f"{name:34} {value:7.2f}  (target {sense} {target})  {'met' if met else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
