"""The space estimate before a backup, the settings of the space check and of failure alerts, and what
a failure notice says (and never says)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from questboard_backup.errors import ConfigurationError, InsufficientSpaceError, StorageError
from questboard_backup.notify import failure_notice, notify_failure
from questboard_backup.settings import Settings
from questboard_backup.space import (
    DEFAULT_SPACE_MARGIN,
    SetSize,
    check_space,
    disk_space,
    estimate_next_set,
    set_sizes,
)
from questboard_backup.storage.local import LocalStorage

BASE = {"BACKUP_HOSTNAME": "cron-host-1", "BACKUP_ENCRYPTION_KEY": "a-long-enough-passphrase"}
TOPIC = "arn:aws:sns:eu-west-1:123456789012:questboard-alerts"


def make_set(root: Path, tier: str, backup_id: str, sizes: list[int], manifest: bool = True) -> None:
    folder = root / tier / backup_id
    folder.mkdir(parents=True)
    for number, size in enumerate(sizes):
        (folder / f"part{number}.zst.enc").write_bytes(b"x" * size)
    if manifest:
        (folder / "manifest.json").write_bytes(b"{}")


# Settings


def test_the_space_margin_defaults_to_a_fifth_more_and_zero_turns_the_check_off() -> None:
    assert Settings.from_env(BASE).space_margin == DEFAULT_SPACE_MARGIN == 1.2
    assert Settings.from_env({**BASE, "BACKUP_SPACE_MARGIN": "2.5"}).space_margin == 2.5
    assert Settings.from_env({**BASE, "BACKUP_SPACE_MARGIN": "0"}).space_margin == 0


@pytest.mark.parametrize("raw", ["0.5", "-1", "lots", "nan", "inf"])
def test_a_space_margin_below_one_or_not_a_number_is_refused_by_name(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^BACKUP_SPACE_MARGIN must be"):
        Settings.from_env({**BASE, "BACKUP_SPACE_MARGIN": raw})


def test_alert_settings_are_read_and_the_webhook_url_is_kept_out_of_the_repr() -> None:
    url = "https://hooks.slack.example/services/T0/B0/very-secret-path"
    settings = Settings.from_env(
        {**BASE, "BACKUP_ALERT_SNS_TOPIC_ARN": TOPIC, "BACKUP_ALERT_WEBHOOK_URL": url}
    )
    assert (settings.alert_sns_topic_arn, settings.alert_webhook_url) == (TOPIC, url)
    assert "very-secret-path" not in repr(settings)
    assert Settings.from_env(BASE).alert_webhook_url == Settings.from_env(BASE).alert_sns_topic_arn == ""


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws:sqs:eu-west-1:123456789012:queue",
        "arn:aws:sns:eu-west-1:12345:topic",
        "questboard-alerts",
        "arn:aws:sns:eu-west-1:123456789012:topic.fifo",
    ],
)
def test_a_topic_that_is_not_a_standard_sns_topic_arn_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^BACKUP_ALERT_SNS_TOPIC_ARN must be an SNS topic ARN"):
        Settings.from_env({**BASE, "BACKUP_ALERT_SNS_TOPIC_ARN": value})


@pytest.mark.parametrize(
    "value",
    ["ftp://hooks.example/very-secret-path", "hooks.example/very-secret-path", "file:///very-secret-path"],
)
def test_a_webhook_that_is_not_an_http_url_is_refused_by_name_without_quoting_it(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^BACKUP_ALERT_WEBHOOK_URL must be") as refused:
        Settings.from_env({**BASE, "BACKUP_ALERT_WEBHOOK_URL": value})
    assert "very-secret-path" not in str(refused.value)


# The estimate


def test_sets_are_sized_by_their_stored_files_newest_first_and_incomplete_ones_are_left_out(
    tmp_path: Path,
) -> None:
    make_set(tmp_path, "daily", "questboard_full_20261201_020000", [100, 50])
    make_set(tmp_path, "incremental", "questboard_incremental_20261201_080000", [10])
    make_set(tmp_path, "weekly", "questboard_full_20261129_020000", [300])
    make_set(tmp_path, "daily", "questboard_full_20261202_020000", [999_999], manifest=False)
    sizes = set_sizes(LocalStorage(tmp_path))
    assert [(s.backup_id, s.kind, s.stored_bytes) for s in sizes] == [
        ("questboard_incremental_20261201_080000", "incremental", 10 + 2),
        ("questboard_full_20261201_020000", "full", 150 + 2),
        ("questboard_full_20261129_020000", "full", 300 + 2),
    ]


def sized(*sets: tuple[str, int]) -> list[SetSize]:
    return [SetSize(backup_id, backup_id.split("_")[1], size) for backup_id, size in sets]


def test_the_estimate_is_the_largest_of_the_last_three_sets_of_the_same_type_times_the_margin() -> None:
    sets = sized(
        ("questboard_incremental_20261205_080000", 5_000),
        ("questboard_full_20261205_020000", 1_000),
        ("questboard_full_20261204_020000", 3_000),
        ("questboard_full_20261203_020000", 2_000),
        ("questboard_full_20261202_020000", 90_000),  # older than the last three: not looked at
    )
    estimate = estimate_next_set(sets, "full", 1.5)
    assert estimate is not None
    assert (estimate.needed_bytes, estimate.basis) == (4_500, "the largest of the last 3 full sets x 1.5")


def test_with_no_set_of_its_type_the_estimate_goes_by_the_sets_of_any_type() -> None:
    estimate = estimate_next_set(sized(("questboard_full_20261205_020000", 1_000)), "incremental", 1.2)
    assert estimate is not None
    assert (estimate.needed_bytes, estimate.basis) == (1_200, "the last set's size x 1.2")


def test_with_no_set_at_all_there_is_no_estimate() -> None:
    assert estimate_next_set([], "full", 1.2) is None


def test_a_backup_is_refused_when_the_estimate_exceeds_the_free_space(tmp_path: Path) -> None:
    make_set(tmp_path, "daily", "questboard_full_20261201_020000", [1_000])
    free, _total = disk_space(tmp_path)
    margin = 10 * free / 1_000  # the next set "needs" ten times the free space
    with pytest.raises(InsufficientSpaceError) as refused:
        check_space(LocalStorage(tmp_path), "full", margin)
    message = str(refused.value)
    assert message.startswith(f"BACKUP_DIR {tmp_path} has ") and message.endswith("; nothing was written")
    assert (
        "the next full backup needs about " in message
        and f"(the last full set's size x {margin:g})" in message
    )
    assert isinstance(refused.value, StorageError) and refused.value.exit_code == 5


def test_a_margin_of_zero_or_no_earlier_set_lets_the_backup_go_ahead(tmp_path: Path) -> None:
    assert check_space(LocalStorage(tmp_path), "full", 1e15) is None
    make_set(tmp_path, "daily", "questboard_full_20261201_020000", [1_000])
    assert check_space(LocalStorage(tmp_path), "full", 0) is None
    estimate = check_space(LocalStorage(tmp_path), "full", 1.2)
    assert estimate is not None and estimate.needed_bytes == 1_203  # (1000 + the manifest's 2) x 1.2


def test_disk_space_reports_free_and_total_bytes_of_the_filesystem(tmp_path: Path) -> None:
    free, total = disk_space(tmp_path)
    stats = os.statvfs(tmp_path)
    assert 0 <= free <= total == stats.f_blocks * stats.f_frsize
    with pytest.raises(StorageError, match="cannot read the free space of"):
        disk_space(tmp_path / "missing")


# The notice


def test_a_failure_notice_names_cause_host_backup_and_log_and_never_a_secret() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "DATABASE_URL": "postgresql://qb:Sup3r-Secret-Pw@db.internal:5432/questboard",
            "BACKUP_ALERT_WEBHOOK_URL": "https://hooks.slack.example/services/T0/B0/very-secret-path",
        }
    )
    cause = (
        "PostgreSQL at postgresql://qb:Sup3r-Secret-Pw@db.internal:5432/questboard refused: "
        "password Sup3r-Secret-Pw rejected; key a-long-enough-passphrase;\nsee /services/T0/B0/very-secret-path"
    )
    log = Path("/var/backups/questboard/logs/backup_20261203_020000.log")
    notice = failure_notice(settings, "full", "questboard_full_20261203_020000", cause, log)
    assert (
        notice.subject
        == "[questboard-backup] cron-host-1: full backup questboard_full_20261203_020000 failed"
    )
    first, second = notice.text.splitlines()
    assert first.startswith(
        "The full backup questboard_full_20261203_020000 on host cron-host-1 failed: PostgreSQL"
    )
    assert second == f"Run log: {log} on cron-host-1"
    for secret in ("Sup3r-Secret-Pw", "a-long-enough-passphrase", "very-secret-path"):
        assert secret not in notice.text and secret not in notice.subject


def test_without_an_alert_setting_nothing_is_sent() -> None:
    assert notify_failure(Settings.from_env(BASE), "full", None, "it broke", None) == ()
