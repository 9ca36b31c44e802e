"""A backup id is never reused: a run refuses an id with a complete set, a manifest is written
create-only, and no run deletes a complete set it did not write, nor sweeps once it lost the lock.
Local disk and S3 (a moto server over HTTP), as the CLI writes them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from questboard_backup import operations
from questboard_backup.backup import discard_backup, plan_backup, run_backup, seal_backup
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.errors import ConfigurationError, LockedError, StorageError
from questboard_backup.lock import SHARED_LOCK_KEY, StorageLock
from questboard_backup.operations import shared_locks, sweep_leftovers
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage
from questboard_backup.storage.s3 import S3Storage
from tests.conftest import S3Bucket
from tests.fake_source import FakeComponent

MOMENT = datetime(2024, 1, 2, 2, 0, 0, tzinfo=UTC)
BACKUP_ID = "questboard_full_20240102_020000"


@dataclass
class Places:
    local: LocalStorage
    s3: S3Storage
    bucket: S3Bucket
    source: Path
    wrapper: PassphraseKeyWrapper

    @property
    def storages(self) -> list[Storage]:
        return [self.local, self.s3]

    def backup(self) -> None:
        run_backup(
            "full", [FakeComponent(self.source)], self.storages, self.wrapper, "test-host", UTC, MOMENT
        )

    def snapshot(self) -> dict[str, object]:
        """Every stored byte and version: local files with their inode and mtime, S3 objects' ETags
        and LastModified."""
        state: dict[str, object] = {}
        for path in sorted(self.local.root.rglob("*")):
            if path.is_file():
                info = path.stat()
                state[str(path)] = (path.read_bytes(), info.st_ino, info.st_mtime_ns)
        pages = self.bucket.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket.name)
        for page in pages:
            for item in page.get("Contents", []):
                state[f"s3:{item['Key']}"] = (item["ETag"], item["LastModified"])
        return state


@pytest.fixture
def places(tmp_path: Path, s3_bucket: S3Bucket) -> Iterator[Places]:
    source = tmp_path / "app" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(b"the first run's data")
    local = LocalStorage(tmp_path / "backups")
    local.ensure_layout()
    s3 = S3Storage(s3_bucket.name, "test-host", s3_bucket.client)
    yield Places(local, s3, s3_bucket, source, PassphraseKeyWrapper(secrets.token_urlsafe(24)))


def test_a_backup_with_the_id_of_a_complete_set_is_refused_and_touches_nothing(places: Places) -> None:
    places.backup()
    before = places.snapshot()
    assert f"s3:test-host/daily/{BACKUP_ID}/manifest.json" in before
    places.source.write_bytes(b"a second run's data, the same second")
    with pytest.raises(ConfigurationError, match=f"backup {BACKUP_ID} already exists at .*never reused"):
        places.backup()
    assert places.snapshot() == before


def test_a_manifest_is_created_once_and_a_second_writer_cannot_replace_it(places: Places) -> None:
    plan, data_key = plan_backup("full", "test-host", places.wrapper, UTC, MOMENT)
    seal_backup(plan, [], places.storages, data_key)
    before = places.snapshot()
    other, other_key = plan_backup("full", "test-host", places.wrapper, UTC, MOMENT)
    for storage in places.storages:
        with pytest.raises(StorageError, match=f"already exists: another run wrote backup {BACKUP_ID}"):
            seal_backup(other, [], [storage], other_key)
    assert places.snapshot() == before


def test_a_failed_run_never_deletes_a_complete_set_it_did_not_write(places: Places) -> None:
    places.backup()
    before = places.snapshot()
    plan, _ = plan_backup("full", "test-host", places.wrapper, UTC, MOMENT)
    discard_backup(plan, places.storages)  # what a failing run of the same id would do
    assert places.snapshot() == before


def test_a_run_that_lost_its_lock_sweeps_nothing_of_the_writer_that_took_it(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI sweeps leftovers only while it holds the bucket's lock: once another writer took the
    lock over, that writer's set in progress is left alone, and so is its lock."""
    monkeypatch.setattr(operations, "SHARED_LOCK_LIFETIME_SECONDS", 0)  # expires as soon as it is taken
    in_progress = f"temp/{BACKUP_ID}/postgres.dump.zst.enc"
    with shared_locks([places.s3], places.local, "a stalled CLI run") as still_locked:
        workflow = StorageLock(places.s3, SHARED_LOCK_KEY, 7200)
        token = workflow.acquire("the workflow")
        places.s3.write_bytes(in_progress, b"the workflow's part", tier="temp")
        with pytest.raises(LockedError, match="lost the lock"):
            sweep_leftovers(places.local, [places.s3], still_locked)
    assert places.s3.read_bytes(in_progress) == b"the workflow's part"
    assert workflow.release(token) is True
