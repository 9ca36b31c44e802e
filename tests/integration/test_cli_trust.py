"""The CLI trusts only what authenticates, and keeps BACKUP_DIR its owner's: `health`, `verify latest`
(restore resolves the same way) skip a forged newer manifest that `list` shows marked; and every folder
and file a backup run creates is 0700/0600 whatever the umask."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from questboard_backup.address import BackupId
from questboard_backup.cli import main
from tests.conftest import S3Bucket
from tests.integration.conftest import Deployment


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def forge_newer_manifest(deployment: Deployment, genuine: Path) -> str:
    """A manifest of valid JSON, a day newer than ``genuine``, finished long ago (so a health check
    that trusted it would call the backups stale), with a MAC that cannot match."""
    document = json.loads((genuine / "manifest.json").read_text())
    newer = BackupId.parse(document["manifest"]["backup_id"])
    forged_id = str(BackupId.at(newer.kind, newer.moment + timedelta(days=1)))
    document["manifest"].update(backup_id=forged_id, tier="daily", finished_at="2000-01-01T00:00:00Z")
    document["hmac_sha256"] = "0" * 64
    folder = deployment.backup_dir / "daily" / forged_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(document))
    return forged_id


def test_health_and_latest_skip_a_forged_newer_manifest_that_the_listing_marks(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    genuine_id = json.loads(out)["backup_id"]
    (genuine,) = deployment.backup_dir.glob(f"*/{genuine_id}")
    forged_id = forge_newer_manifest(deployment, genuine)

    code, out, err = cli(capsys, "health", "--json")
    assert code == 0, out + err
    assert float(json.loads(out)["checks"]["last_backup_age_hours"]) < 1
    code, out, err = cli(capsys, "verify", "latest", "--json")
    assert code == 0, err
    assert json.loads(out)["backup_id"] == genuine_id
    code, out, err = cli(capsys, "verify", forged_id)
    assert code == 6 and err.count("\n") == 1, err
    code, out, err = cli(capsys, "list", "--json")
    assert code == 0, err
    marks = {entry["id"]: entry["authenticated"] for entry in json.loads(out)["backups"]}
    assert marks == {forged_id: False, genuine_id: True}
    code, out, err = cli(capsys, "list")
    (line,) = [line for line in out.splitlines() if line.startswith(forged_id)]
    assert "UNAUTHENTICATED" in line

    for path in sorted(genuine.iterdir()):
        path.unlink()
    genuine.rmdir()
    code, out, err = cli(capsys, "health")
    assert code == 1
    assert "PROBLEM: no backup has ever succeeded" in out


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[None]:
    previous = os.umask(request.param)
    try:
        yield
    finally:
        os.umask(previous)


def test_everything_a_backup_creates_in_backup_dir_is_the_owners_alone(
    deployment: Deployment,
    s3_bucket: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    permissive_umask: None,
) -> None:
    monkeypatch.setenv("BACKUP_S3_BUCKET", s3_bucket.name)  # the shared lock's .instance file too
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)
    assert not deployment.backup_dir.exists()
    code, _, err = cli(capsys, "full")
    assert code == 0, err
    created = [deployment.backup_dir, *deployment.backup_dir.rglob("*")]
    assert {path.name for path in created} >= {"backup.lock", ".instance", "logs", "daily", "temp"}
    assert any(path.suffix == ".log" for path in created) and any(p.name == "manifest.json" for p in created)
    modes = {str(path): stat.S_IMODE(path.lstat().st_mode) for path in created}
    expected = {str(path): 0o700 if path.is_dir() else 0o600 for path in created}
    assert modes == expected
