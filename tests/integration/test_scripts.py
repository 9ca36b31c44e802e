"""The operator scripts: the local crontab runs at the deployed schedules' hours, health-check.sh explains
itself, and install.sh sets up a runtime-only virtualenv."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from questboard_backup import __version__

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
MARKER = "# questboard-backup"

#: A stand-in for the system's crontab binary: ``-l`` prints the table, ``-`` replaces it with stdin.
FAKE_CRONTAB = """#!/bin/sh
case "$1" in
  -l) [ -f "$CRONTAB_FILE" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }; cat "$CRONTAB_FILE" ;;
  -) cat > "$CRONTAB_FILE" ;;
  *) echo "fake crontab: unsupported arguments: $*" >&2; exit 2 ;;
esac
"""


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without any backup settings or AWS configuration (so `schedules detect` says no)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "BACKUP_")) and name not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",  # no instance-metadata lookup for credentials
        HOME=str(tmp_path),
        **extra,
    )
    return env


def run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a script or program to its end; ``env`` None: this process's environment."""
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cron_times(minutes: str, hours: str) -> set[tuple[int, int]]:
    """(hour, minute) pairs of a cron expression's minute and hour fields (numbers and lists of them)."""
    return {(int(hour), int(minute)) for hour in hours.split(",") for minute in minutes.split(",")}


def deployed_times(context_key: str, day: str = "[*?]") -> set[tuple[int, int]]:
    expression = json.loads((REPO / "cdk.json").read_text())["context"][context_key]
    match = re.fullmatch(rf"cron\((\S+) (\S+) ({day}) \* ([*?]) \*\)", expression)
    assert match, f"{context_key} is not a cron expression on day {day}: {expression}"
    return cron_times(match.group(1), match.group(2))


@pytest.fixture
def crontab(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The crontab file the fake binary keeps, and an environment that finds the fake first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "crontab").write_text(FAKE_CRONTAB)
    (bin_dir / "crontab").chmod(0o755)
    table = tmp_path / "crontab.txt"
    env = script_env(
        tmp_path,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        CRONTAB_FILE=str(table),
        BACKUP_DIR=str(tmp_path / "backups"),
    )
    return table, env


def test_the_local_crontab_runs_backups_at_the_hours_of_the_deployed_schedules(
    crontab: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    table, env = crontab
    table.write_text("30 4 * * * /usr/local/bin/rotate-logs\n")
    done = run(SCRIPTS / "backup-cron.sh", "setup", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    installed = {}
    for line in table.read_text().splitlines():
        if MARKER in line:
            minute, hour, day, month, weekday, *command = line.split()
            kind = command[command.index("./scripts/backup.sh") + 1]
            # Backups daily; the restore drill monthly, on the 1st.
            assert (day, month, weekday) == ("1" if kind == "drill" else "*", "*", "*"), line
            installed[kind] = cron_times(minute, hour)
    assert installed == {
        "full": deployed_times("fullBackupSchedule"),
        "incremental": deployed_times("incrementalBackupSchedule"),
        "drill": deployed_times("drillSchedule", day="1"),
    }
    assert installed["incremental"] == {(8, 0), (14, 0), (20, 0)}
    assert "30 4 * * * /usr/local/bin/rotate-logs" in table.read_text().splitlines()


def test_setting_up_the_crontab_twice_installs_each_backup_once(
    crontab: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    table, env = crontab
    for _ in range(2):
        assert run(SCRIPTS / "backup-cron.sh", "setup", cwd=tmp_path, env=env).returncode == 0
    assert sum(MARKER in line for line in table.read_text().splitlines()) == 3
    shown = run(SCRIPTS / "backup-cron.sh", "show", cwd=tmp_path, env=env)
    assert shown.returncode == 0 and shown.stdout.count(MARKER) == 3


@pytest.mark.parametrize("option", ["--help", "-h"])
def test_health_check_help_explains_the_check_without_running_it(option: str, tmp_path: Path) -> None:
    done = run(SCRIPTS / "health-check.sh", option, cwd=tmp_path, env=script_env(tmp_path))
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("usage: ")
    for mentioned in ("[environment]", f"{REPO}/.env.<environment>", "scripts/backup.sh", "RPO"):
        assert mentioned in done.stdout, mentioned


@pytest.mark.parametrize("arguments", [["--verbose"], ["-x", "production"], ["staging", "production"]])
def test_health_check_refuses_unknown_options_in_one_line(arguments: list[str], tmp_path: Path) -> None:
    done = run(SCRIPTS / "health-check.sh", *arguments, cwd=tmp_path, env=script_env(tmp_path))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "usage: " in done.stderr


def test_install_sets_up_a_virtualenv_with_the_runtime_dependencies_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "PYTHON": sys.executable}
    done = run(SCRIPTS / "install.sh", "--no-system", "--venv", venv, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    cli = venv / "bin" / "questboard-backup"
    assert f"CLI: {cli}" in done.stdout and "./scripts/backup.sh status" in done.stdout
    version = run(cli, "--version", cwd=tmp_path, env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"questboard-backup {__version__}"
    check = (
        "import importlib.util, json, sys; "
        "print(json.dumps({name: importlib.util.find_spec(name) is not None for name in sys.argv[1:]}))"
    )
    modules = ["boto3", "cryptography", "zstandard", "psycopg2", "redis", "dotenv"]
    tools = ["pytest", "moto", "ruff", "mypy", "aws_cdk"]
    found = run(venv / "bin" / "python", "-c", check, *modules, *tools, cwd=tmp_path, env=env)
    assert json.loads(found.stdout) == {**dict.fromkeys(modules, True), **dict.fromkeys(tools, False)}


def test_install_refuses_to_replace_an_editable_development_install(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (sources / "questboard_backup").mkdir()
    (sources / "questboard_backup" / "__init__.py").write_text('__version__ = "0.0.0"\n')
    venv = tmp_path / "dev"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    editable = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "-e", str(sources)]
    subprocess.run(editable, check=True, capture_output=True, timeout=120)
    done = run(SCRIPTS / "install.sh", "--no-system", "--venv", venv, cwd=tmp_path)
    assert done.returncode == 2 and "development virtualenv" in done.stderr
    listed = run(venv / "bin" / "python", "-m", "pip", "show", "questboard-backup", cwd=tmp_path)
    assert f"Editable project location: {sources}" in listed.stdout


@pytest.mark.parametrize("arguments", [["--bogus"], ["--venv"]])
def test_install_refuses_unknown_arguments_in_one_line(arguments: list[str], tmp_path: Path) -> None:
    done = run(SCRIPTS / "install.sh", *arguments, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "usage: " in done.stderr
