"""Only authenticated manifests choose a backup: `latest` (and so health, verify and restore) skips a
forged newer manifest, a manifest copied to another host, tier or id is refused, and listings show
such sets marked. Local disk and S3 (a moto server over HTTP)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from questboard_backup.backup import run_backup
from questboard_backup.catalog import latest, list_backups, resolve
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.errors import IntegrityError, NotFoundError
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage
from questboard_backup.storage.s3 import S3Storage
from tests.conftest import S3Bucket
from tests.fake_source import FakeComponent

GENUINE = "questboard_full_20240102_020000"
FORGED = "questboard_full_20240103_020000"  # newer


@pytest.fixture
def wrapper() -> PassphraseKeyWrapper:
    return PassphraseKeyWrapper(secrets.token_urlsafe(24))


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, wrapper: PassphraseKeyWrapper) -> Storage:
    """A storage holding one genuine backup, GENUINE, made by the engine."""
    chosen: Storage
    if request.param == "local":
        chosen = LocalStorage(tmp_path / "backups")
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        chosen = S3Storage(bucket.name, "test-host", bucket.client)
    source = tmp_path / "app" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(b"genuine data")
    moment = datetime(2024, 1, 2, 2, 0, 0, tzinfo=UTC)
    run_backup("full", [FakeComponent(source)], [chosen], wrapper, "test-host", UTC, moment)
    return chosen


def forge_newer_manifest(storage: Storage) -> None:
    """Valid JSON of the right shape, naming the newer id where it sits, with a MAC that cannot match."""
    document = json.loads(storage.read_bytes(f"daily/{GENUINE}/manifest.json"))
    document["manifest"]["backup_id"] = FORGED
    document["manifest"]["finished_at"] = "2024-01-03T02:00:00Z"
    document["hmac_sha256"] = "0" * 64
    storage.write_bytes(f"daily/{FORGED}/manifest.json", json.dumps(document).encode())


def test_latest_skips_a_forged_newer_manifest(storage: Storage, wrapper: PassphraseKeyWrapper) -> None:
    forge_newer_manifest(storage)
    found = latest([storage], wrapper)
    assert found is not None and found.backup_id == GENUINE and found.authenticated
    entry = resolve("latest", [storage], None, wrapper)
    assert entry.backup_id == GENUINE and entry.authenticated


def test_a_forged_manifest_named_by_its_id_is_refused_in_one_line(
    storage: Storage, wrapper: PassphraseKeyWrapper
) -> None:
    forge_newer_manifest(storage)
    with pytest.raises(IntegrityError) as refused:
        resolve(FORGED, [storage], None, wrapper)
    assert "\n" not in str(refused.value)
    assert "cannot be unwrapped" in str(refused.value) or "failed authentication" in str(refused.value)


def test_with_only_forged_manifests_there_is_no_latest(
    storage: Storage, wrapper: PassphraseKeyWrapper
) -> None:
    forge_newer_manifest(storage)
    storage.delete_prefix(f"daily/{GENUINE}")
    assert latest([storage], wrapper) is None
    with pytest.raises(NotFoundError, match="no authentic backup"):
        resolve("latest", [storage], None, wrapper)


def test_a_listing_shows_a_forged_set_marked_and_the_genuine_one_authenticated(
    storage: Storage, wrapper: PassphraseKeyWrapper
) -> None:
    forge_newer_manifest(storage)
    forged, genuine = list_backups(storage, wrapper)
    assert (forged.backup_id, forged.authenticated) == (FORGED, False)
    assert forged.problem is not None and forged.problem.startswith("not authenticated:")
    assert forged.summary()["authenticated"] is False
    assert (genuine.backup_id, genuine.authenticated, genuine.problem) == (GENUINE, True, None)
    unchecked = list_backups(storage)  # a plain listing reads manifests without the key, and says so
    assert [entry.authenticated for entry in unchecked] == [False, False]


@pytest.mark.parametrize("elsewhere", [f"weekly/{GENUINE}", "daily/questboard_full_20240104_020000"])
def test_a_genuine_manifest_copied_to_another_tier_or_id_is_refused(
    storage: Storage, wrapper: PassphraseKeyWrapper, elsewhere: str, request: pytest.FixtureRequest
) -> None:
    for key in list(storage.list_keys(f"daily/{GENUINE}")):
        storage.write_bytes(key.replace(f"daily/{GENUINE}", elsewhere), storage.read_bytes(key))
    factory = None
    if isinstance(storage, S3Storage):
        client = request.getfixturevalue("s3_bucket").client

        def factory(bucket: str, host: str) -> Storage:
            return S3Storage(bucket, host, client)

    with pytest.raises(IntegrityError) as refused:
        resolve(storage.uri(elsewhere), [storage], factory, wrapper)
    assert "\n" not in str(refused.value)
    assert f"daily/{GENUINE}: moved or copied from another set, refused" in str(refused.value)
    moved = next(entry for entry in list_backups(storage, wrapper) if entry.set_prefix == elsewhere)
    assert not moved.authenticated
    found = latest([storage], wrapper)
    assert found is not None and found.set_prefix == f"daily/{GENUINE}"


def test_a_genuine_manifest_copied_under_another_host_is_refused(
    s3_bucket: S3Bucket, tmp_path: Path, wrapper: PassphraseKeyWrapper
) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"genuine data")
    home = S3Storage(s3_bucket.name, "test-host", s3_bucket.client)
    run_backup(
        "full",
        [FakeComponent(source)],
        [home],
        wrapper,
        "test-host",
        UTC,
        datetime(2024, 1, 2, 2, tzinfo=UTC),
    )
    other = S3Storage(s3_bucket.name, "other-host", s3_bucket.client)
    for key in list(home.list_keys(f"daily/{GENUINE}")):
        other.write_bytes(key, home.read_bytes(key))

    def factory(bucket: str, host: str) -> S3Storage:
        return S3Storage(bucket, host, s3_bucket.client)

    with pytest.raises(IntegrityError, match=f"names test-host/daily/{GENUINE}: moved or copied"):
        resolve(f"s3://{s3_bucket.name}/other-host/daily/{GENUINE}", [home], factory, wrapper)
    assert latest([other], wrapper) is None
    assert resolve(f"s3://{s3_bucket.name}/test-host/daily/{GENUINE}", [home], factory, wrapper).authenticated
