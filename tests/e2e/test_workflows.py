"""The backup and restore workflows as synthesized, executed end to end (moto's interpreter)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from questboard_backup.sources.files.component import tree_listing
from tests.dataset import large_objects, pg_dump_text, redis_snapshot
from tests.e2e.conftest import HOSTNAME, FlakyS3
from tests.offline import REGION, World


def emitted_metrics(output: str) -> list[str]:
    names = []
    for line in output.splitlines():
        if '"_aws"' in line:
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                names += [metric["Name"] for metric in directive["Metrics"]]
    return names


def test_a_full_backup_then_a_restore_into_fresh_targets_gives_identical_data(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    keys = world.objects(f"{HOSTNAME}/")
    manifests = [key for key in keys if key.endswith("/manifest.json")]
    assert len(manifests) == 1
    # The dump step wrote PostgreSQL on parallel streams: the seal step recorded the part it returned.
    assert [key for key in keys if key.endswith("/postgres.part1.dump.zst.enc")]
    assert not [key for key in keys if key.startswith(f"{HOSTNAME}/temp/")]
    assert f"{HOSTNAME}/locks/backup.json" not in keys
    assert f"{HOSTNAME}/latest.json" in keys
    assert {"backup_last_success_timestamp", "backup_duration_seconds", "backup_size_bytes"} <= set(
        emitted_metrics(capsys.readouterr().out)
    )
    # Publish recorded the set in the status catalog the admin API reads.
    backup_id = manifests[0].rsplit("/", 2)[1]
    page = world.install().catalog_table().status_page(10)  # type: ignore[union-attr]
    assert [item["id"] for item in page.sets] == [backup_id]
    assert page.summary["last_success_full"]["id"] == backup_id

    target_db = world.database_url.rsplit("/", 1)[1] + "_drill"
    files_root = tmp_path / "restored"
    restore = world.run(
        "restore",
        {
            "backup": "latest",
            "targets": {"database": target_db, "redis_db": 8, "files_root": str(files_root)},
        },
    )
    assert restore["status"] == "SUCCEEDED", restore.get("cause")
    summary = world.install().catalog_table().status_page(1).summary  # type: ignore[union-attr]
    assert summary["restore_last_success"] and int(summary.get("restore_failures", 0)) == 0
    target_url = world.database_url.rsplit("/", 1)[0] + "/" + target_db
    assert pg_dump_text(world.database_url) == pg_dump_text(target_url)
    assert large_objects(world.database_url) == large_objects(target_url)
    base = f"redis://127.0.0.1:{world.redis.port}"
    source, target = redis_snapshot(base, range(0, 8)), redis_snapshot(base, range(8, 16))
    assert source and source == {db - 8: keys for db, keys in target.items()}
    for tree in (world.uploads, world.config):
        assert tree_listing(tree) == tree_listing(files_root / tree.relative_to("/"))


def test_a_second_backup_while_the_lock_is_held_is_refused_cleanly(world: World) -> None:
    deps = world.install()
    token = deps.lock().acquire("another execution")
    result = world.run("backup", {"type": "full"})
    assert result["status"] == "FAILED"
    assert result["error"] == "LockedError"
    keys = world.objects(f"{HOSTNAME}/")
    assert keys == [f"{HOSTNAME}/locks/backup.json"]  # no staging, no manifest, the lock untouched
    assert deps.lock().release(token) is True


def test_an_s3_failure_takes_the_failure_path(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    world.clients["s3"] = FlakyS3(boto3.client("s3", region_name=REGION), needle="redis")
    world.install()
    result = world.run("backup", {"type": "full"})
    assert result["status"] == "FAILED"
    assert result["error"] == "StorageError", result.get("cause")
    assert "injected failure" in result["cause"]
    assert world.objects(f"{HOSTNAME}/") == []  # no staging objects, no manifest, lock released
    assert "backup_failure_total" in emitted_metrics(capsys.readouterr().out)
    (alert,) = world.alerts()
    assert "failed" in alert["Subject"] and "StorageError" in alert["Message"]
    # The failure path recorded it in the status catalog: the admin API's last failure and its count.
    summary = world.install().catalog_table().status_page(10).summary  # type: ignore[union-attr]
    assert summary["last_failure_full"]["error"] == "StorageError" and summary["failures_full"] == 1


def test_disabled_backups_end_without_doing_anything(world: World) -> None:
    world.settings = replace(world.settings, enabled=False)
    world.install()
    result = world.run("backup", {"type": "full"})
    assert result["status"] == "SUCCEEDED"
    assert world.objects() == []


def test_a_scheduled_start_names_the_execution_after_the_backup_and_is_idempotent(world: World) -> None:
    import boto3

    from lambdas import backup_start
    from tests.lambda_runtime import FakeContext

    world.settings = replace(world.settings, state_machine_arn=world.machines["backup"])
    world.install()
    event = {"type": "full", "scheduled_at": "2026-11-29T02:00:00Z"}
    first = backup_start.handler(event, FakeContext("backup_start"))
    again = backup_start.handler(event, FakeContext("backup_start"))  # a retried delivery while it runs
    assert first["backup_id"] == again["backup_id"] == "questboard_full_20261129_020000"
    assert first["execution"] == again["execution"]  # Step Functions returns the running execution
    sfn = boto3.client("stepfunctions", region_name=REGION)
    executions = sfn.list_executions(stateMachineArn=world.machines["backup"])["executions"]
    assert [e["name"] for e in executions] == ["questboard_full_20261129_020000"]
    assert world.wait(first["execution"])["status"] == "SUCCEEDED"
    assert f"{HOSTNAME}/weekly/questboard_full_20261129_020000/manifest.json" in world.objects(f"{HOSTNAME}/")
    late = backup_start.handler(event, FakeContext("backup_start"))  # a delivery after it finished
    assert late == {"backup_id": "questboard_full_20261129_020000", "started": False}
    assert len(sfn.list_executions(stateMachineArn=world.machines["backup"])["executions"]) == 1


def test_a_deployment_without_files_or_config_says_so_instead_of_a_complete_backup(world: World) -> None:
    from datetime import UTC, datetime

    world.settings = replace(world.settings, files_paths=(), config_paths=())
    world.install()
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    published = json.loads(backup["output"])["published"]
    assert published["components"] == ["postgres", "redis"]
    # The parts of Quest Board nothing backs up here: uploads (neither on a file system nor in S3)
    # and configuration (neither files nor SSM / Secrets Manager).
    assert published["not_configured"] == ["uploads", "configuration"]
    status = world.install().admin().status(10, None, None, datetime.now(UTC))
    assert status["not_configured"] == ["configuration", "uploads"]
    assert status["last_success"]["full"]["components"] == ["postgres", "redis"]
