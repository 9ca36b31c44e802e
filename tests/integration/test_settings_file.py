"""The settings file is found independently of the current folder, and every listing says which it read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from questboard_backup.cli import main

REPO = Path(__file__).resolve().parents[2]


def _checkout(tmp_path: Path) -> Path:
    """A copy of the operator scripts beside a CLI, as a checkout on an operator host has them."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "backup.sh", checkout / "scripts" / "backup.sh")
    (checkout / ".venv" / "bin").mkdir(parents=True)
    cli = checkout / ".venv" / "bin" / "questboard-backup"
    cli.write_text(f'#!/bin/sh\nexec {sys.executable} -m questboard_backup.cli "$@"\n')
    cli.chmod(0o755)
    return checkout


def test_backup_sh_reads_the_checkouts_env_whatever_the_current_folder(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    backup_dir = tmp_path / "backups"
    (checkout / ".env").write_text(f"BACKUP_DIR={backup_dir}\nBACKUP_HOSTNAME=from-the-env-file\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("BACKUP_HOSTNAME=from-the-current-folder\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    environ["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [str(checkout / "scripts" / "backup.sh"), "status"],
        cwd=elsewhere,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "host from-the-env-file" in result.stdout
    assert f"settings: {checkout / '.env'}" in result.stdout


def test_the_order_is_env_file_then_backup_env_file_then_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith("BACKUP_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    files = {}
    for name in ("explicit", "variable", "current"):
        files[name] = tmp_path / ("." + name if name != "current" else ".env")
        files[name].write_text(f"BACKUP_HOSTNAME={name}\nBACKUP_DIR={tmp_path / 'backups'}\n")
    assert main(["status"]) == 0
    assert f"settings: {files['current']}" in capsys.readouterr().out
    monkeypatch.setenv("BACKUP_ENV_FILE", str(files["variable"]))
    assert main(["status"]) == 0
    assert "host variable" in capsys.readouterr().out
    assert main(["--env-file", str(files["explicit"]), "status"]) == 0
    assert "host explicit" in capsys.readouterr().out
    monkeypatch.setenv("BACKUP_ENV_FILE", str(tmp_path / "missing"))
    assert main(["status"]) == 2
    assert f"error: BACKUP_ENV_FILE {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
