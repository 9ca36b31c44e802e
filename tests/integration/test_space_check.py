"""The space check before a backup, through the CLI against real PostgreSQL and Redis: the estimate
comes from the sets already in BACKUP_DIR, and a backup it does not fit is refused with exit code 5
and one line, before any of the set is written.

The disk is not filled: BACKUP_SPACE_MARGIN (the margin over the largest recent set) is made so large
that the estimate exceeds any free space, which is what a disk too small for the next set looks like
to the check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from questboard_backup.cli import main
from tests.integration.conftest import Deployment

HUGE_MARGIN = "1e15"  # a set of a few MB "needs" petabytes


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def stored_files(backup_dir: Path) -> dict[str, int]:
    """Every file in the tiers and the staging folder, with its size."""
    return {
        str(path.relative_to(backup_dir)): path.stat().st_size
        for folder in ("daily", "weekly", "monthly", "incremental", "temp")
        for path in (backup_dir / folder).rglob("*")
        if path.is_file()
    }


def backup_logs(backup_dir: Path) -> list[Path]:
    return sorted((backup_dir / "logs").glob("backup_*.log"))


def test_a_backup_that_would_not_fit_is_refused_with_exit_5_before_writing_anything(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backup_dir = deployment.backup_dir
    monkeypatch.setenv("BACKUP_SPACE_MARGIN", HUGE_MARGIN)
    # With no set to go by there is no estimate: the first backup goes ahead, and its log says why.
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert "space check skipped: no earlier set to estimate from" in Path(first["log"]).read_text()
    before = stored_files(backup_dir)
    logs_before = backup_logs(backup_dir)

    for kind, basis in (("full", "the last full set's size"), ("incremental", "the last set's size")):
        code, out, err = cli(capsys, kind)
        assert code == 5, err
        assert out == ""
        (line,) = err.splitlines()
        assert re.fullmatch(
            rf"error: BACKUP_DIR {re.escape(str(backup_dir))} has \d+\.\d [KMG]B free; the next {kind} backup "
            rf"needs about \d+\.\d GB \({basis} x 1e\+15\); nothing was written",
            line,
        ), line
        assert stored_files(backup_dir) == before  # no set, no staging, nothing half-written

    # Each refusal has its run log, which says what was refused.
    new_logs = [log for log in backup_logs(backup_dir) if log not in logs_before]
    assert len(new_logs) >= 1  # two refusals in one second share a log name
    assert all("run failed: InsufficientSpaceError: BACKUP_DIR" in log.read_text() for log in new_logs)

    # With the usual margin the same disk holds the next set: the check does not stand in the way.
    monkeypatch.delenv("BACKUP_SPACE_MARGIN")
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    log = Path(json.loads(out)["log"]).read_text()
    assert re.search(
        r"space checked location=\S+ free=\d+ needed=\d+ basis=the last full set's size x 1\.2", log
    )
