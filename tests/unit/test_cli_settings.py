"""The CLI reads ./.env (or --env-file), the environment wins, and bad settings stop it before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from questboard_backup.cli import main

SEED_VARIABLES = (
    "DATABASE_URL", "REDIS_URL", "BACKUP_FILES_PATHS", "BACKUP_CONFIG_PATHS", "BACKUP_ENABLED", "BACKUP_DIR",
    "BACKUP_S3_BUCKET", "BACKUP_HOSTNAME", "BACKUP_RETENTION_DAYS", "BACKUP_ENCRYPTION", "BACKUP_ENCRYPTION_KEY",
    "BACKUP_PG_JOBS", "BACKUP_PG_SPLIT_MIN_MB", "BACKUP_COMPRESSION_LEVEL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SEED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_dot_env_in_the_working_folder_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".env").write_text(f"BACKUP_ENABLED=false\nBACKUP_DIR={tmp_path / 'backups'}\n")
    assert main(["full"]) == 0
    assert "disabled" in capsys.readouterr().out
    assert not (tmp_path / "backups").exists()


def test_the_environment_wins_over_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("BACKUP_ENABLED=false\n")
    monkeypatch.setenv("BACKUP_ENABLED", "true")
    assert main(["full"]) == 2
    assert capsys.readouterr().err == "error: BACKUP_ENCRYPTION_KEY is not set\n"


def test_a_missing_env_file_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--env-file", "/nonexistent/.env", "status"]) == 2
    assert capsys.readouterr().err == "error: --env-file /nonexistent/.env does not exist\n"


def test_a_bad_value_in_the_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "prod.env").write_text("BACKUP_RETENTION_DAYS=thirty\n")
    assert main(["--env-file", str(tmp_path / "prod.env"), "status"]) == 2
    err = capsys.readouterr().err
    assert "BACKUP_RETENTION_DAYS" in err and err.count("\n") == 1


def test_no_local_without_a_bucket_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["full", "--no-local"]) == 2
    assert "BACKUP_S3_BUCKET" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("BACKUP_PG_JOBS=0", "BACKUP_PG_JOBS must be between 1 and 32, not 0"),
        ("BACKUP_PG_JOBS=two", "BACKUP_PG_JOBS must be a whole number, not 'two'"),
        ("BACKUP_PG_SPLIT_MIN_MB=-1", "BACKUP_PG_SPLIT_MIN_MB must be between 0 and 1073741824, not -1"),
        ("BACKUP_COMPRESSION_LEVEL=19", "BACKUP_COMPRESSION_LEVEL must be between -7 and 9, not 19"),
        ("BACKUP_COMPRESSION_LEVEL=-8", "BACKUP_COMPRESSION_LEVEL must be between -7 and 9, not -8"),
        ("BACKUP_COMPRESSION_LEVEL=fast", "BACKUP_COMPRESSION_LEVEL must be a whole number, not 'fast'"),
    ],
)
def test_bad_postgres_tuning_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    (tmp_path / ".env").write_text(setting + "\n")
    assert main(["status"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
