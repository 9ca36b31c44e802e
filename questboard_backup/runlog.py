"""Per-run log files: each backup or restore writes BACKUP_DIR/logs/{action}_{timestamp}.log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from questboard_backup.address import timestamp
from questboard_backup.errors import BackupError
from questboard_backup.redaction import redact_text, redacted_traceback

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def run_log(logs_dir: Path, action: str, now: datetime | None = None) -> Iterator[Path]:
    """Send the engine's log records to a new file for the duration of one run."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    path = logs_dir / f"{action}_{timestamp(moment)}.log"
    logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    engine = logging.getLogger("questboard_backup")
    previous_level = engine.level
    engine.setLevel(logging.INFO)
    engine.addHandler(handler)
    try:
        yield path
    except BaseException as error:
        # To this run's file only: whoever runs it reports the failure itself (the CLI in one line).
        # An error that is not the engine's own is a bug: its traceback goes with it.
        detail = (
            "" if isinstance(error, BackupError | KeyboardInterrupt) else "\n" + redacted_traceback(error)
        )
        failed = logging.getLogger(__name__).makeRecord(
            __name__,
            logging.ERROR,
            __file__,
            0,
            "run failed: %s: %s%s",
            (
                type(error).__name__,
                redact_text(str(error)),
                detail,
            ),
            None,
        )
        handler.handle(failed)
        raise
    finally:
        engine.removeHandler(handler)
        engine.setLevel(previous_level)
        handler.close()
