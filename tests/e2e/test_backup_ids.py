"""The backup workflow never reuses a backup id: the console's "new execution with the same input"
fails at Prepare and leaves the complete set exactly as it was."""

from __future__ import annotations

from datetime import timedelta

import boto3

from tests.e2e.conftest import BUCKET, HOSTNAME
from tests.offline import REGION, World


def stored_versions(world: World) -> dict[str, tuple[str, object]]:
    s3 = boto3.client("s3", region_name=REGION)
    return {
        key: (head["ETag"], head["LastModified"])
        for key in world.objects(f"{HOSTNAME}/")
        if (head := s3.head_object(Bucket=BUCKET, Key=key))
    }


def test_a_new_execution_with_the_same_backup_id_fails_and_leaves_the_set_untouched(world: World) -> None:
    first = world.run("backup", {"type": "full"})
    assert first["status"] == "SUCCEEDED", first.get("cause")
    (manifest,) = [key for key in world.objects(f"{HOSTNAME}/") if key.endswith("/manifest.json")]
    backup_id = manifest.split("/")[-2]
    before = stored_versions(world)

    again = world.run("backup", {"type": "full", "backup_id": backup_id})
    assert again["status"] == "FAILED"
    assert again["error"] == "ConfigurationError", again.get("cause")
    assert f"backup {backup_id} already exists" in again["cause"] and "never reused" in again["cause"]
    assert stored_versions(world) == before  # not a byte rewritten, nothing staged, the lock released
    assert f"{HOSTNAME}/locks/backup.json" not in before


def test_a_restore_of_a_genuine_set_copied_under_another_host_is_refused(
    world: World,
) -> None:
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    s3 = boto3.client("s3", region_name=REGION)
    (manifest,) = [key for key in world.objects(f"{HOSTNAME}/") if key.endswith("/manifest.json")]
    set_prefix = manifest.rsplit("/", 1)[0]
    moved = set_prefix.replace(f"{HOSTNAME}/", "another-host/", 1)
    for key in world.objects(f"{set_prefix}/"):
        s3.copy_object(
            Bucket=BUCKET, Key=key.replace(set_prefix, moved), CopySource={"Bucket": BUCKET, "Key": key}
        )

    restore = world.run(
        "restore", {"backup": f"s3://{BUCKET}/{moved}", "targets": {"database": "never_made"}}
    )
    assert restore["status"] == "FAILED"
    assert restore["error"] == "IntegrityError", restore.get("cause")
    assert f"names {set_prefix}: moved or copied from another set, refused" in restore["cause"]


def test_the_workflows_latest_skips_a_forged_newer_manifest(world: World) -> None:
    """Resolve authenticates what `latest` picks: a newer manifest of valid JSON with a MAC that cannot
    match (anyone able to write the bucket could plant one) is passed over for the genuine set."""
    import json

    from questboard_backup.address import BackupId

    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    s3 = boto3.client("s3", region_name=REGION)
    (manifest,) = [key for key in world.objects(f"{HOSTNAME}/") if key.endswith("/manifest.json")]
    document = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest)["Body"].read())
    genuine = BackupId.parse(document["manifest"]["backup_id"])
    forged_id = str(BackupId.at(genuine.kind, genuine.moment + timedelta(days=1)))
    document["manifest"].update(backup_id=forged_id, tier="daily")
    document["hmac_sha256"] = "0" * 64
    s3.put_object(Bucket=BUCKET, Key=f"{HOSTNAME}/daily/{forged_id}/manifest.json", Body=json.dumps(document))

    resolved = world.run("restore", {"backup": "latest", "targets": {"database": "forged_drill"}})
    history = boto3.client("stepfunctions", region_name=REGION).get_execution_history(
        executionArn=resolved["executionArn"]
    )
    resolve_output = next(
        json.loads(event["stateExitedEventDetails"]["output"])
        for event in history["events"]
        if event.get("stateExitedEventDetails", {}).get("name") == "Resolve"
    )
    assert resolve_output["restore"]["backup_id"] == str(genuine), "Resolve picked the forged set"
    assert resolved["status"] == "SUCCEEDED", resolved.get("cause")
