"""What the CLI's console shows of the engine's log records: one line each, tracebacks only with -v."""

from __future__ import annotations

import logging

import pytest

from questboard_backup.cli import _console

log = logging.getLogger("questboard_backup.somewhere")


def fail_and_log() -> None:
    try:
        raise OSError("disk on fire\nsecond line")
    except OSError:
        log.exception("cleanup failed path=%s", "/tmp/x")
    log.info("progress")
    log.warning("a warning\nover two lines")


def test_without_verbose_each_warning_or_error_is_one_line_and_progress_is_not_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _console(verbose=False):
        fail_and_log()
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "ERROR questboard_backup.somewhere: cleanup failed path=/tmp/x",
        "WARNING questboard_backup.somewhere: a warning over two lines",
    ]


def test_with_verbose_progress_and_tracebacks_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    with _console(verbose=True):
        fail_and_log()
    err = capsys.readouterr().err
    assert "INFO questboard_backup.somewhere: progress" in err
    assert "Traceback (most recent call last)" in err and "OSError: disk on fire" in err


def test_the_console_is_removed_when_the_command_ends(capsys: pytest.CaptureFixture[str]) -> None:
    with _console(verbose=True):
        pass
    log.warning("after the command")
    assert "after the command" not in capsys.readouterr().err
