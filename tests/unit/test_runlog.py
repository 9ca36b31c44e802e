"""The per-run log file: the run's records, then why it failed, passwords left out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from questboard_backup.errors import SourceError
from questboard_backup.runlog import run_log


def test_an_engine_error_is_the_last_line_without_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(SourceError), run_log(tmp_path, "backup") as path:
        logging.getLogger("questboard_backup.somewhere").info("progress")
        raise SourceError("cannot connect to postgresql://app:***@db/q")
    lines = path.read_text().splitlines()
    assert "INFO questboard_backup.somewhere: progress" in lines[0]
    assert lines[-1].endswith(
        "ERROR questboard_backup.runlog: run failed: SourceError: cannot connect to postgresql://app:***@db/q"
    )


def test_an_unexpected_error_keeps_its_traceback_and_loses_its_passwords(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), run_log(tmp_path, "backup") as path:
        raise RuntimeError("boom at postgresql://app:hunter2@db/q")
    text = path.read_text()
    assert "run failed: RuntimeError: boom at postgresql://app:***@db/q" in text
    assert "Traceback (most recent call last)" in text
    assert "hunter2" not in text
