"""Local retention by tier, capped by BACKUP_RETENTION_DAYS, never removing the newest full backup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from questboard_backup.address import BackupId, tier_for
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.manifest import Manifest, seal_manifest
from questboard_backup.retention import expired_sets, prune
from questboard_backup.storage.local import LocalStorage

WRAPPER = PassphraseKeyWrapper("retention tests passphrase")
NOW = datetime(2024, 3, 20, 12, 0, tzinfo=UTC)


def add_set(storage: LocalStorage, kind: str, age: timedelta) -> str:
    moment = NOW - age
    backup_id, tier = str(BackupId.at(kind, moment)), tier_for(kind, moment, UTC)
    data_key, wrapped = WRAPPER.generate(backup_id)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = Manifest(backup_id, kind, tier, "h", stamp, stamp, "0", wrapped, ())
    storage.write_bytes(f"{tier}/{backup_id}/manifest.json", seal_manifest(manifest, data_key))
    return f"{tier}/{backup_id}"


def test_tiers_follow_the_calendar() -> None:
    assert tier_for("full", datetime(2024, 3, 1, 2, tzinfo=UTC), UTC) == "monthly"
    assert tier_for("full", datetime(2024, 3, 17, 2, tzinfo=UTC), UTC) == "weekly"  # a Sunday
    assert tier_for("full", datetime(2024, 3, 18, 2, tzinfo=UTC), UTC) == "daily"
    assert tier_for("incremental", datetime(2024, 3, 1, 2, tzinfo=UTC), UTC) == "incremental"
    assert (
        str(BackupId.at("full", datetime(2024, 1, 1, 2, 0, 0, tzinfo=UTC)))
        == "questboard_full_20240101_020000"
    )


def test_each_tier_expires_after_its_own_age(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    fresh_daily = add_set(storage, "full", timedelta(days=1))  # Tuesday: daily
    old_daily = add_set(storage, "full", timedelta(days=8, hours=1))  # a Monday: daily, past 7 days
    weekly = add_set(storage, "full", timedelta(days=24))  # Sunday 25 Feb: weekly, within 30
    monthly = add_set(storage, "full", timedelta(days=19, hours=10))  # 1 March: monthly
    old_incremental = add_set(storage, "incremental", timedelta(hours=25))
    new_incremental = add_set(storage, "incremental", timedelta(hours=5))
    expired = set(expired_sets(storage, NOW, WRAPPER))
    assert expired == {old_daily, old_incremental}
    assert {fresh_daily, weekly, monthly, new_incremental}.isdisjoint(expired)


def test_backup_retention_days_caps_local_copies(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    add_set(storage, "full", timedelta(hours=1))
    monthly = add_set(storage, "full", timedelta(days=19, hours=10))
    assert monthly not in expired_sets(storage, NOW, WRAPPER, max_days=30)
    assert monthly in expired_sets(storage, NOW, WRAPPER, max_days=10)


def test_the_newest_full_backup_is_never_pruned(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    only = add_set(storage, "full", timedelta(days=400))
    assert prune(storage, NOW, WRAPPER, max_days=1) == []
    assert storage.exists(f"{only}/manifest.json")


def test_prune_deletes_the_expired_sets_folders(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    add_set(storage, "full", timedelta(hours=1))
    old = add_set(storage, "full", timedelta(days=8, hours=1))
    assert prune(storage, NOW, WRAPPER) == [old]
    assert not (tmp_path / old).exists()


def test_a_scheduled_backup_id_fixes_the_plans_id_time_and_tier() -> None:
    from questboard_backup.backup import plan_backup

    plan, _key = plan_backup("full", "h", WRAPPER, UTC, backup_id="questboard_full_20240301_020000")
    assert (plan.backup_id, plan.tier, plan.started_at) == (
        "questboard_full_20240301_020000",
        "monthly",
        "2024-03-01T02:00:00Z",
    )


def test_a_backup_id_of_another_type_is_refused() -> None:
    import pytest

    from questboard_backup.backup import plan_backup
    from questboard_backup.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not a incremental backup id"):
        plan_backup("incremental", "h", WRAPPER, UTC, backup_id="questboard_full_20240301_020000")


def test_a_forged_newer_full_manifest_cannot_get_the_real_newest_full_pruned(tmp_path: Path) -> None:
    """Valid JSON with a MAC that cannot match, newer than the only genuine full backup, which is past
    its tier's age: the genuine one is still the newest full kept."""
    import json

    storage = LocalStorage(tmp_path)
    genuine = add_set(storage, "full", timedelta(days=9))  # a daily past 7 days
    forged = add_set(storage, "full", timedelta(hours=1))
    document = json.loads(storage.read_bytes(f"{forged}/manifest.json"))
    document["hmac_sha256"] = "0" * 64
    storage.write_bytes(f"{forged}/manifest.json", json.dumps(document).encode())
    assert genuine not in expired_sets(storage, NOW, WRAPPER)
    assert genuine not in prune(storage, NOW, WRAPPER)
    assert storage.exists(f"{genuine}/manifest.json")
