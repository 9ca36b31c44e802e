"""The Storage contract, one test body per promise, run against local disk and S3 (a moto server over HTTP)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from questboard_backup.address import SetAddress
from questboard_backup.errors import NotFoundError, StorageError
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage
from questboard_backup.storage.s3 import MIN_PART_SIZE, S3Storage
from tests.conftest import S3Bucket

# More than one S3 part, so the S3 runs go through a multipart upload.
LARGE = MIN_PART_SIZE + 123_457


@dataclass
class Backend:
    storage: Storage
    #: Everything physically stored, finished or not: files (hidden ones too), objects, pending uploads.
    leftovers: Callable[[], list[str]]


def _local(tmp_path: Path) -> Backend:
    root = tmp_path / "backups"
    root.mkdir()
    return Backend(LocalStorage(root), lambda: sorted(str(p) for p in root.rglob("*") if p.is_file()))


def _s3(bucket: S3Bucket) -> Backend:
    def leftovers() -> list[str]:
        objects = bucket.client.list_objects_v2(Bucket=bucket.name).get("Contents", [])
        uploads = bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
        return sorted([o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads])

    storage = S3Storage(bucket.name, "test-host", bucket.client, part_size=MIN_PART_SIZE)
    return Backend(storage, leftovers)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield _local(tmp_path)
    else:
        yield _s3(request.getfixturevalue("s3_bucket"))


def write_in_pieces(storage: Storage, key: str, data: bytes, piece: int = 1_000_003) -> None:
    writer = storage.open_write(key, "daily")
    for start in range(0, len(data), piece):
        assert writer.write(data[start : start + piece]) == len(data[start : start + piece])
    writer.close()


@pytest.mark.parametrize("size", [0, 1, LARGE], ids=["empty", "one-byte", "multipart"])
def test_a_written_object_reads_back_byte_identical(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    write_in_pieces(backend.storage, "daily/set/component.bin", data)

    stream = backend.storage.open_read("daily/set/component.bin")
    try:
        chunks = iter(lambda: stream.read(65_536), b"")
        assert b"".join(chunks) == data
    finally:
        stream.close()
    assert backend.storage.size("daily/set/component.bin") == size


def test_an_object_is_absent_until_its_writer_closes(backend: Backend) -> None:
    writer = backend.storage.open_write("daily/set/component.bin", "daily")
    writer.write(os.urandom(LARGE))

    assert list(backend.storage.list_keys("daily")) == []
    assert not backend.storage.exists("daily/set/component.bin")
    with pytest.raises(NotFoundError):
        backend.storage.open_read("daily/set/component.bin")

    writer.close()
    assert list(backend.storage.list_keys("daily")) == ["daily/set/component.bin"]


def test_an_aborted_write_leaves_nothing_behind(backend: Backend) -> None:
    writer = backend.storage.open_write("daily/set/component.bin", "daily")
    writer.write(os.urandom(LARGE))
    assert backend.leftovers(), "the unfinished write should be stored somewhere before the abort"

    writer.abort()
    writer.abort()  # twice is harmless

    assert backend.leftovers() == []
    assert not backend.storage.exists("daily/set/component.bin")


def test_reading_or_sizing_a_missing_key_raises_not_found(backend: Backend) -> None:
    with pytest.raises(NotFoundError, match="daily/nothing/here"):
        backend.storage.open_read("daily/nothing/here")
    with pytest.raises(NotFoundError, match="daily/nothing/here"):
        backend.storage.size("daily/nothing/here")
    assert not backend.storage.exists("daily/nothing/here")


def test_list_keys_yields_exactly_the_keys_under_a_prefix(backend: Backend) -> None:
    for key in ("daily/a/x", "daily/a/deeper/y", "daily/ab/z", "weekly/a/x"):
        backend.storage.write_bytes(key, key.encode())

    assert sorted(backend.storage.list_keys("daily/a")) == ["daily/a/deeper/y", "daily/a/x"]
    assert sorted(backend.storage.list_keys("daily")) == ["daily/a/deeper/y", "daily/a/x", "daily/ab/z"]
    assert sorted(backend.storage.list_keys("")) == [
        "daily/a/deeper/y",
        "daily/a/x",
        "daily/ab/z",
        "weekly/a/x",
    ]
    assert list(backend.storage.list_keys("monthly")) == []


def test_size_is_the_stored_byte_count(backend: Backend) -> None:
    backend.storage.write_bytes("daily/set/manifest.json", b"x" * 4321)
    assert backend.storage.size("daily/set/manifest.json") == 4321


def test_delete_prefix_removes_a_set_and_nothing_beside_it(backend: Backend) -> None:
    for key in ("daily/one/a", "daily/one/sub/b", "daily/one-more/c", "daily/two/d"):
        backend.storage.write_bytes(key, b"data")

    backend.storage.delete_prefix("daily/one")
    backend.storage.delete_prefix("daily/never-written")

    assert sorted(backend.storage.list_keys("daily")) == ["daily/one-more/c", "daily/two/d"]


def test_delete_removes_one_object_and_a_missing_one_is_fine(backend: Backend) -> None:
    backend.storage.write_bytes("locks/backup.lock", b"held")
    backend.storage.delete("locks/backup.lock")
    backend.storage.delete("locks/backup.lock")
    assert not backend.storage.exists("locks/backup.lock")


def test_write_bytes_and_read_bytes_round_trip(backend: Backend) -> None:
    backend.storage.write_bytes("weekly/set/manifest.json", b'{"backup_id": "x"}', "weekly")
    assert backend.storage.read_bytes("weekly/set/manifest.json") == b'{"backup_id": "x"}'


def test_a_staged_set_is_visible_at_its_final_prefix_after_promote(backend: Backend) -> None:
    backup_id = "questboard_full_20240101_020000"
    address = SetAddress("host", "daily", backup_id)
    staging = address.staging_prefix(backend.storage.stage_in_temp)
    backend.storage.write_bytes(f"{staging}/redis.zst.enc", b"redis bytes", "daily")
    backend.storage.write_bytes(f"{staging}/manifest.json", b"manifest", "daily")

    backend.storage.promote(staging, address.set_prefix, "daily", "manifest.json")

    assert sorted(backend.storage.list_keys(f"daily/{backup_id}")) == [
        f"daily/{backup_id}/manifest.json",
        f"daily/{backup_id}/redis.zst.enc",
    ]
    assert backend.storage.read_bytes(f"daily/{backup_id}/redis.zst.enc") == b"redis bytes"


def test_create_exclusive_creates_a_key_only_once(backend: Backend) -> None:
    assert backend.storage.create_exclusive("locks/run.lock", b"first") is True
    assert backend.storage.create_exclusive("locks/run.lock", b"second") is False
    assert backend.storage.read_bytes("locks/run.lock") == b"first"


@pytest.mark.parametrize("key", ["", "/", "daily/../etc/passwd", "./x"])
def test_a_key_escaping_the_storage_is_refused(backend: Backend, key: str) -> None:
    with pytest.raises(StorageError, match="invalid storage key"):
        backend.storage.open_write(key)


def test_uri_names_the_key_for_an_operator(backend: Backend) -> None:
    assert backend.storage.uri("daily/set/manifest.json").endswith("daily/set/manifest.json")
    assert backend.storage.description in backend.storage.uri("daily/set/manifest.json")


def test_create_exclusive_labels_its_object_and_never_replaces_one(backend: Backend) -> None:
    key = "daily/questboard_full_20240101_020000/manifest.json"
    assert backend.storage.create_exclusive(key, b"the first writer's manifest", "daily") is True
    assert backend.storage.create_exclusive(key, b"a second writer's manifest", "daily") is False
    assert backend.storage.read_bytes(key) == b"the first writer's manifest"
    assert sorted(backend.storage.list_keys("daily")) == [key]  # no temporary file left in sight


def test_a_conditional_replace_or_delete_of_an_old_version_changes_nothing(backend: Backend) -> None:
    storage = backend.storage
    storage.create_exclusive("locks/run.lock", b"version 1")
    data, first = storage.read_versioned("locks/run.lock")
    assert data == b"version 1"
    assert storage.replace_if("locks/run.lock", b"version 2", first.etag) is True
    data, second = storage.read_versioned("locks/run.lock")
    assert data == b"version 2" and second.etag != first.etag
    assert storage.replace_if("locks/run.lock", b"version 3", first.etag) is False
    assert storage.delete_if("locks/run.lock", first.etag) is False
    assert storage.read_bytes("locks/run.lock") == b"version 2"
    assert storage.delete_if("locks/run.lock", second.etag) is True
    assert not storage.exists("locks/run.lock")
    assert storage.replace_if("locks/run.lock", b"version 4", second.etag) is False
    assert storage.delete_if("locks/run.lock", second.etag) is False
    assert not storage.exists("locks/run.lock")
    with pytest.raises(NotFoundError):
        storage.read_versioned("locks/run.lock")
