"""Per-run log files: each backup or restore writes BACKUP_DIR/logs/{action}_{timestamp}.log (0600)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from questboard_backup.address import timestamp
from questboard_backup.errors import BackupError
from questboard_backup.redaction import RedactingFilter, redact_text, redacted_traceback
from questboard_backup.storage.local import make_private_dirs, open_private

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def run_log(logs_dir: Path, action: str, now: datetime | None = None) -> Iterator[Path]:
    """Send the engine's log records to a new file for the duration of one run."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    path = logs_dir / f"{action}_{timestamp(moment)}.log"
    make_private_dirs(logs_dir)
    os.close(open_private(path, os.O_WRONLY | os.O_APPEND))  # 0600 before the handler appends to it
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter())
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
