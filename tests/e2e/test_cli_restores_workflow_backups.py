"""Disaster recovery: a set the serverless workflow made (data key wrapped by KMS) is verified and
restored by the CLI from outside the deployment, with nothing but AWS credentials, the bucket and the
key id; a manifest naming a key that is neither configured nor allow-listed is refused in one line."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from questboard_backup.cli import main
from questboard_backup.sources.files.component import tree_listing
from tests.dataset import pg_dump_text, redis_snapshot
from tests.e2e.conftest import BUCKET, HOSTNAME
from tests.offline import REGION, World


@pytest.fixture
def operator(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An operator's machine: only the bucket, the host name and AWS credentials; no passphrase, no
    database or Redis of its own. Returns the backup id the workflow made."""
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    (manifest,) = [key for key in world.objects(f"{HOSTNAME}/") if key.endswith("/manifest.json")]
    for name in (
        "BACKUP_ENCRYPTION_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "BACKUP_ENV_FILE",
        "BACKUP_KMS_KEY_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BACKUP_S3_BUCKET", BUCKET)
    monkeypatch.setenv("BACKUP_HOSTNAME", HOSTNAME)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "operator-backups"))
    monkeypatch.chdir(tmp_path)  # no stray ./.env
    return manifest.split("/")[2]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_verifies_and_restores_a_workflow_backup_with_the_kms_key_id(
    world: World,
    operator: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BACKUP_KMS_KEY_ID", world.settings.kms_key_id)
    code, out, err = _cli(capsys, "verify", operator)
    assert (code, err) == (0, ""), err
    assert f"{operator} verified: manifest authentic" in out

    target_url = f"{world.database_url}_cli"
    files_root = tmp_path / "restored"
    redis_base = f"redis://127.0.0.1:{world.redis.port}"
    code, out, err = _cli(
        capsys,
        "restore",
        operator,
        "--to-database-url",
        target_url,
        "--to-redis-url",
        f"{redis_base}/8",
        "--to-files-root",
        str(files_root),
    )
    assert code == 0, err
    assert f"restore of {operator} complete" in out
    assert pg_dump_text(world.database_url) == pg_dump_text(target_url)
    source, target = redis_snapshot(redis_base, range(0, 8)), redis_snapshot(redis_base, range(8, 16))
    assert source and source == {db - 8: keys for db, keys in target.items()}
    for tree in (world.uploads, world.config):
        assert tree_listing(tree) == tree_listing(files_root / tree.relative_to("/"))


def test_a_manifest_naming_a_key_neither_configured_nor_allowed_is_refused_in_one_line(
    world: World, operator: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    monkeypatch.setenv("BACKUP_KMS_KEY_ID", other)
    code, out, err = _cli(capsys, "verify", operator)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "neither BACKUP_KMS_KEY_ID nor in BACKUP_KMS_ALLOWED_KEYS" in err

    # Allow-listing the deployment's key lets the operator read its sets with another key configured.
    monkeypatch.setenv("BACKUP_KMS_ALLOWED_KEYS", world.settings.kms_key_id)
    code, out, err = _cli(capsys, "verify", operator)
    assert (code, err) == (0, ""), err


def test_without_any_kms_setting_the_cli_says_which_one_to_set(
    operator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "verify", operator)
    assert code != 0 and out == ""
    assert err == "error: BACKUP_KMS_KEY_ID is not set\n"
