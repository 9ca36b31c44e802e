"""One module owns a backup set's address: ids in UTC, tiers by the schedule's calendar, and nothing
else in the code spells out the id pattern or builds a set prefix."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from questboard_backup.address import BackupId, SetAddress, object_name, stream_context, tier_for
from questboard_backup.backup import plan_backup
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.errors import ConfigurationError
from questboard_backup.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TOKYO = ZoneInfo("Asia/Tokyo")
WRAPPER = PassphraseKeyWrapper("address tests passphrase")


def test_a_month_of_0200_tokyo_fulls_gets_its_tiers_by_the_tokyo_calendar() -> None:
    day = datetime(2024, 9, 1, 2, 0, tzinfo=TOKYO)  # a Sunday, and the 1st: monthly wins
    seen = {}
    while day.month == 9:
        plan, _key = plan_backup("full", "prod", WRAPPER, TOKYO, now=day)
        # The id is UTC: the 02:00 Tokyo full is 17:00 UTC the day before.
        assert plan.backup_id == f"questboard_full_{(day - timedelta(hours=9)):%Y%m%d}_170000"
        seen[day.day] = plan.tier
        day += timedelta(days=1)
    assert seen[1] == "monthly"
    assert [d for d, tier in seen.items() if tier == "weekly"] == [8, 15, 22, 29]  # the other Sundays
    assert all(tier == "daily" for d, tier in seen.items() if d not in (1, 8, 15, 22, 29))
    assert len(seen) == 30


def test_the_same_moment_is_a_different_tier_in_utc() -> None:
    first_in_tokyo = datetime(2024, 10, 1, 2, 0, tzinfo=TOKYO)  # 2024-09-30 17:00 UTC, a Monday
    assert tier_for("full", first_in_tokyo, TOKYO) == "monthly"
    assert tier_for("full", first_in_tokyo, UTC) == "daily"
    assert tier_for("incremental", first_in_tokyo, TOKYO) == "incremental"


def test_backup_timezone_is_read_by_name_and_a_bad_one_is_refused() -> None:
    assert Settings.from_env({"BACKUP_TIMEZONE": "Asia/Tokyo"}).schedule_zone == TOKYO
    with pytest.raises(ConfigurationError, match="BACKUP_TIMEZONE 'Mars/Olympus' is not an IANA"):
        Settings.from_env({"BACKUP_TIMEZONE": "Mars/Olympus"})
    assert Settings.from_env({"TZ": "Europe/Paris"}).schedule_zone == ZoneInfo("Europe/Paris")


def test_ids_parse_and_print_back_and_refuse_what_is_not_an_id() -> None:
    backup_id = BackupId.parse("questboard_incremental_20240101_080000")
    assert (backup_id.kind, backup_id.moment) == ("incremental", datetime(2024, 1, 1, 8, tzinfo=UTC))
    assert str(backup_id) == "questboard_incremental_20240101_080000"
    for bad in ("questboard_weekly_20240101_080000", "questboard_full_2024", "x"):
        with pytest.raises(ConfigurationError, match="is not a backup id"):
            BackupId.parse(bad)


def test_a_set_address_names_its_prefixes_objects_and_streams() -> None:
    address = SetAddress("prod-server", "daily", "questboard_full_20240102_020000")
    assert address.set_prefix == "daily/questboard_full_20240102_020000"
    assert address.staging_prefix(apart=True) == "temp/questboard_full_20240102_020000"
    assert address.staging_prefix(apart=False) == address.set_prefix
    assert (address.staging_tag(True), address.staging_tag(False)) == ("temp", "daily")
    assert address.s3_uri("b") == "s3://b/prod-server/daily/questboard_full_20240102_020000"
    assert SetAddress.from_manifest_key("prod-server", f"{address.set_prefix}/manifest.json") == address
    assert SetAddress.from_set_prefix("h", "temp/questboard_full_20240102_020000") is None
    assert object_name("postgres", 2) == "postgres.part2.dump.zst.enc"
    assert object_name("files") == "files.tar.zst.enc"
    assert (
        stream_context("questboard_full_20240102_020000", "redis") == "questboard_full_20240102_020000/redis"
    )


def _sources() -> list[Path]:
    roots = ("questboard_backup", "lambdas", "infra", "scripts", "bench")
    return [path for root in roots for path in (REPO / root).rglob("*.py")]


def test_only_the_address_module_spells_out_the_id_pattern_and_the_set_prefix() -> None:
    id_pattern = re.compile(r"questboard_\(full|questboard_\{|%Y%m%d_%H%M%S")
    set_prefix = re.compile(r"\{[a-z_.]*tier\}/\{[a-z_.]*backup_id\}|f\"temp/\{")
    offenders = [
        str(path.relative_to(REPO))
        for path in _sources()
        if path.name != "address.py"
        and (id_pattern.search(path.read_text()) or set_prefix.search(path.read_text()))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "text",
    [
        "questboard_full_00000000_000000",
        "questboard_full_20240231_020000",
        "questboard_incremental_20240101_250000",
    ],
)
def test_an_id_naming_no_real_time_is_not_an_id(text: str) -> None:
    from questboard_backup.address import BackupId, is_backup_id
    from questboard_backup.errors import ConfigurationError

    assert not is_backup_id(text)
    with pytest.raises(ConfigurationError, match="is not a backup id"):
        BackupId.parse(text)
