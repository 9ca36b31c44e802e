"""The operator CLI (``questboard-backup``), wrapped by scripts/backup.sh.

Settings are read once here; errors become one line on stderr and an exit code (see
cli_parser.EXIT_CODES). The commands live in cli_commands, the command line in cli_parser.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from questboard_backup.address import KINDS
from questboard_backup.cli_parser import build_parser
from questboard_backup.connections import password_of
from questboard_backup.errors import BackupError, ConfigurationError
from questboard_backup.notify import notify_failed_backup
from questboard_backup.redaction import RedactingFilter, redact_text, redacted_traceback, remember_secret
from questboard_backup.settings import Settings, read_settings

logger = logging.getLogger(__name__)


CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _OneLineFormatter(logging.Formatter):
    """One line per record on the operator's terminal: no tracebacks (the run log and ``-v`` keep them)."""

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord(
            {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
        )
        return " ".join(super().format(plain).split("\n"))


@contextmanager
def _console(verbose: bool) -> Iterator[None]:
    """Log records on stderr while the command runs: warnings, and with ``-v`` the progress too. Errors
    that end the command are not logged here but printed once, as the one line the CLI promises."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT) if verbose else _OneLineFormatter(CONSOLE_FORMAT))
    handler.addFilter(RedactingFilter())
    root, engine = logging.getLogger(), logging.getLogger("questboard_backup")
    previous = engine.level
    if verbose:
        engine.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        engine.setLevel(previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _console(args.verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    settings: Settings | None = None
    try:
        _remember_passwords(os.environ)
        settings = read_settings(args.env_file, os.environ, Path.cwd())
        _remember_passwords(
            {
                "DATABASE_URL": settings.database_url,
                "REDIS_URL": settings.redis_url,
                "BACKUP_DRILL_DATABASE": settings.drill_database,
                "BACKUP_DRILL_REDIS_URL": settings.drill_redis_url,
            }
        )
        if getattr(args, "no_local", False) and not settings.s3_bucket:
            raise ConfigurationError("--no-local needs BACKUP_S3_BUCKET: the backup would be stored nowhere")
        return int(args.handler(settings, args))
    except BackupError as error:
        cause = redact_text(str(error))
        print(f"error: {cause}", file=sys.stderr)
        _notify(settings, args, error, cause)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the last resort: one line and exit 1, traceback with -v
        # With -v, its traceback (the run log has it too), passwords left out as everywhere.
        logger.info("unexpected error:\n%s", redacted_traceback(error))
        lines = str(error).strip().splitlines() or [""]
        cause = f"unexpected {type(error).__name__}: {redact_text(lines[0])}"
        print(f"error: {cause}", file=sys.stderr)
        _notify(settings, args, error, cause)
        return 1


def _notify(settings: Settings | None, args: argparse.Namespace, error: BaseException, cause: str) -> None:
    """A failed backup or restore is announced on BACKUP_ALERT_SNS_TOPIC_ARN and
    BACKUP_ALERT_WEBHOOK_URL (a notification that fails is a warning; the run's error and exit code
    stand). A restore that only lists (no backup named) is not a run."""
    restoring = args.command == "restore" and getattr(args, "backup", None)
    if settings is not None and (args.command in KINDS or restoring):
        notify_failed_backup(settings, args.command, error, cause)
    elif settings is not None and args.command == "drill":
        notify_failed_backup(settings, "restore drill", error, cause)


def _remember_passwords(environ: Mapping[str, str]) -> None:
    """Every password this run may hold, so that no message, log line or run log can show it."""
    for name in ("PGPASSWORD", "REDISCLI_AUTH"):
        if environ.get(name):
            remember_secret(environ[name])
    for name in ("DATABASE_URL", "REDIS_URL", "BACKUP_DRILL_DATABASE", "BACKUP_DRILL_REDIS_URL"):
        password = password_of(environ.get(name, ""))
        if password:
            remember_secret(password)


if __name__ == "__main__":
    sys.exit(main())
