"""One backup at a time: a held lock refuses a second run; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from questboard_backup.errors import LockedError
from questboard_backup.lock import BackupLock


def test_a_second_holder_is_refused_with_a_locked_message(tmp_path: Path) -> None:
    with BackupLock(tmp_path, "full backup"):
        with pytest.raises(LockedError, match="locked") as caught, BackupLock(tmp_path, "incremental backup"):
            pass
        assert f"pid {os.getpid()}" in str(caught.value)
        assert BackupLock(tmp_path, "status").is_held_elsewhere() is not None


def test_the_lock_is_free_again_after_release(tmp_path: Path) -> None:
    with BackupLock(tmp_path, "first"):
        pass
    with BackupLock(tmp_path, "second"):
        pass
    assert BackupLock(tmp_path, "status").is_held_elsewhere() is None


def test_a_lock_left_by_a_killed_process_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from pathlib import Path; from questboard_backup.lock import BackupLock\n"
            f"l = BackupLock(Path({str(tmp_path)!r}), 'doomed'); l.__enter__(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError):
        BackupLock(tmp_path, "while alive").__enter__()
    holder.kill()
    holder.wait()
    assert json.loads((tmp_path / "backup.lock").read_text())["holder"] == "doomed"
    with caplog.at_level("WARNING"), BackupLock(tmp_path, "after the crash"):
        assert json.loads((tmp_path / "backup.lock").read_text())["holder"] == "after the crash"
    assert "stale lock" in caplog.text


def test_a_storage_lock_admits_one_holder_until_released(tmp_path: Path) -> None:
    from questboard_backup.lock import StorageLock
    from questboard_backup.storage.local import LocalStorage

    lock = StorageLock(LocalStorage(tmp_path), "locks/backup.json", lifetime_seconds=3600)
    token = lock.acquire("execution-1")
    with pytest.raises(LockedError, match="execution-1"):
        lock.acquire("execution-2")
    assert lock.release("not-the-token") is False
    assert lock.release(token) is True
    assert lock.acquire("execution-3")


def test_a_storage_lock_left_by_the_same_instance_is_taken_over_at_once(tmp_path: Path) -> None:
    """The CLI names its BACKUP_DIR as the instance and takes the lock only while holding that folder's
    flock: a lock object of its own instance can only be left by a run that died."""
    from questboard_backup.lock import StorageLock
    from questboard_backup.storage.local import LocalStorage

    storage = LocalStorage(tmp_path)
    here = StorageLock(storage, "locks/backup.json", lifetime_seconds=3600, instance="backup-dir-a")
    left = here.acquire("killed run")
    taken = here.acquire("next run")  # long before it expires
    assert taken != left and here.release(left) is False
    # Another instance (another host with the same BACKUP_HOSTNAME) and the Lambdas (no instance) wait.
    for other in ("backup-dir-b", None):
        with pytest.raises(LockedError, match="next run"):
            StorageLock(storage, "locks/backup.json", lifetime_seconds=3600, instance=other).acquire(
                "someone else"
            )
    assert here.release(taken) is True


def test_the_instance_of_a_backup_dir_is_made_once(tmp_path: Path) -> None:
    from questboard_backup.storage.local import LocalStorage

    first = LocalStorage(tmp_path).instance_id()
    assert len(first) == 32 and LocalStorage(tmp_path).instance_id() == first
    assert LocalStorage(tmp_path / "elsewhere").instance_id() != first
