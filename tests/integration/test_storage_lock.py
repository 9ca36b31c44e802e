"""The shared lock object, on local disk and on S3 (a moto server over HTTP): taken over atomically,
released and renewed only by its holder, and expired by the storage's clock, never the caller's."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, tzinfo
from pathlib import Path

import pytest

from questboard_backup import lock as lock_module
from questboard_backup.errors import LockedError
from questboard_backup.lock import StorageLock
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage
from questboard_backup.storage.s3 import S3Storage
from tests.conftest import S3Bucket
from tests.servers import free_port, wait_until

KEY = "locks/backup.json"
#: A lock written with no lifetime is expired the moment it is judged; one of a day is fresh.
DEAD, FRESH = 0, 24 * 3600
YEAR = 365 * 24 * 3600.0


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "backups")
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        yield S3Storage(bucket.name, "test-host", bucket.client)


def holder_of(storage: Storage) -> str:
    return str(json.loads(storage.read_bytes(KEY))["holder"])


@pytest.mark.parametrize("round_", range(6))  # a race: several rounds to catch a lucky one
def test_racing_takeovers_of_an_expired_lock_have_exactly_one_winner(storage: Storage, round_: int) -> None:
    StorageLock(storage, KEY, DEAD).acquire("a run that died")
    contenders = 8
    start = threading.Barrier(contenders)
    winners: list[tuple[str, str]] = []
    refused: list[str] = []

    def contend(number: int) -> None:
        lock = StorageLock(storage, KEY, FRESH)
        start.wait()
        try:
            winners.append((f"contender {number}", lock.acquire(f"contender {number}")))
        except LockedError as error:
            refused.append(str(error))

    threads = [threading.Thread(target=contend, args=(number,)) for number in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1, winners
    assert len(refused) == contenders - 1
    ((name, token),) = winners
    assert holder_of(storage) == name
    assert StorageLock(storage, KEY, FRESH).release(token) is True


def test_a_release_by_a_run_that_lost_the_lock_leaves_the_new_holders_lock(storage: Storage) -> None:
    stale = StorageLock(storage, KEY, DEAD).acquire("a run that stalled")
    current = StorageLock(storage, KEY, FRESH).acquire("the run after it")
    assert StorageLock(storage, KEY, DEAD).release(stale) is False
    assert holder_of(storage) == "the run after it"
    with pytest.raises(LockedError, match="lost the lock"):
        StorageLock(storage, KEY, DEAD).renew(stale)
    assert holder_of(storage) == "the run after it"
    assert StorageLock(storage, KEY, FRESH).release(current) is True
    assert not storage.exists(KEY)


def test_a_release_conditioned_on_an_old_version_deletes_nothing(storage: Storage) -> None:
    """The release reads the lock and deletes that version only: a takeover between the two wins."""
    lock = StorageLock(storage, KEY, DEAD)
    lock.acquire("first")
    _, seen = storage.read_versioned(KEY)
    StorageLock(storage, KEY, FRESH).acquire("second")
    assert storage.delete_if(KEY, seen.etag) is False
    assert holder_of(storage) == "second"


@pytest.fixture(scope="module")
def moto_elsewhere() -> Iterator[str]:
    """A moto server in a process of its own: its clock stays true while this process's is skewed."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
        except OSError:
            return False
        return True

    try:
        wait_until(answers, "the moto server process to answer")
        yield endpoint
    finally:
        server.terminate()
        server.wait()


@pytest.fixture(params=["local", "s3"])
def storage_with_its_own_clock(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "backups")  # the storage's clock is this machine's file times
    import boto3

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    endpoint = request.getfixturevalue("moto_elsewhere")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"qb-clock-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    return S3Storage(bucket, "test-host", client)


def skew_this_process(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every clock the lock could read here runs ``seconds`` off; the storage's own stays true."""
    real_time = time.time

    class Skewed(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Skewed:
            moment = datetime.fromtimestamp(real_time() + seconds, tz)
            return cls(*moment.timetuple()[:6], tzinfo=moment.tzinfo)

    monkeypatch.setattr(time, "time", lambda: real_time() + seconds)
    monkeypatch.setattr(lock_module, "datetime", Skewed)


def test_expiry_is_judged_by_the_storages_clock_not_the_callers(
    storage_with_its_own_clock: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = storage_with_its_own_clock
    fresh = StorageLock(storage, KEY, FRESH).acquire("a run at work")
    # A caller whose clock runs a year ahead still sees a lock written just now as fresh.
    skew_this_process(monkeypatch, YEAR)
    with pytest.raises(LockedError, match="a run at work"):
        StorageLock(storage, KEY, FRESH).acquire("a host with a fast clock")
    assert StorageLock(storage, KEY, FRESH).release(fresh)
    # A caller whose clock runs a year behind still sees an expired lock as expired.
    StorageLock(storage, KEY, DEAD).acquire("a run that died")
    skew_this_process(monkeypatch, -YEAR)
    assert StorageLock(storage, KEY, FRESH).acquire("a host with a slow clock")
    assert holder_of(storage) == "a host with a slow clock"


def test_the_storage_dates_an_object_by_its_own_clock(storage: Storage) -> None:
    storage.write_bytes(KEY, b"{}")
    _data, version = storage.read_versioned(KEY)
    assert abs(version.age_seconds) < 5


def test_a_renewal_rewrites_the_lock_and_a_kept_lock_found_lost_stops_the_run(storage: Storage) -> None:
    lock = StorageLock(storage, KEY, DEAD)
    token = lock.acquire("a long run")
    _, before = storage.read_versioned(KEY)
    lock.renew(token)
    _, after = storage.read_versioned(KEY)
    assert after.etag != before.etag and json.loads(storage.read_bytes(KEY))["renewals"] == 1
    with lock.keep(token, interval_seconds=3600) as kept:
        kept.check()  # still held: renews at once
        assert json.loads(storage.read_bytes(KEY))["renewals"] == 2
        StorageLock(storage, KEY, FRESH).acquire("a run that took over")
        with pytest.raises(LockedError, match="lost the lock"):
            kept.check()
    assert holder_of(storage) == "a run that took over"


def test_a_kept_lock_is_renewed_in_the_background(storage: Storage) -> None:
    lock = StorageLock(storage, KEY, FRESH)
    token = lock.acquire("a long run")
    with lock.keep(token, interval_seconds=0.05):
        deadline = time.monotonic() + 30
        while json.loads(storage.read_bytes(KEY))["renewals"] < 2:
            assert time.monotonic() < deadline, "the lock was never renewed"
            time.sleep(0.02)  # polling the renewal thread's effect, bounded by the deadline
    assert lock.release(token) is True


@pytest.mark.parametrize(("boot", "taken_at_once"), [("this", True), ("another", False)])
def test_a_lock_left_by_this_backup_dir_is_taken_over_at_once_only_within_this_boot(
    s3_bucket: S3Bucket, tmp_path: Path, boot: str, taken_at_once: bool
) -> None:
    """The flock held on BACKUP_DIR proves an earlier run dead only for this kernel: a host cloned
    from a snapshot (same folder id) or sharing BACKUP_DIR over NFS left its lock under another boot."""
    from questboard_backup.lock import SHARED_LOCK_KEY
    from questboard_backup.operations import boot_id, shared_locks

    local = LocalStorage(tmp_path / "backups")
    storage = S3Storage(s3_bucket.name, "test-host", s3_bucket.client)
    left_by = f"{local.instance_id()}/{boot_id() if boot == 'this' else 'a-clone-of-this-host'}"
    StorageLock(storage, SHARED_LOCK_KEY, 3600, left_by).acquire("the earlier run")
    if taken_at_once:
        with shared_locks([storage], local, "the next run"):
            assert json.loads(storage.read_bytes(SHARED_LOCK_KEY))["holder"] == "the next run"
    else:
        with (
            pytest.raises(LockedError, match="the earlier run"),
            shared_locks([storage], local, "the next run"),
        ):
            pass
