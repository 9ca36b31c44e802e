"""The operator CLI (``questboard-backup``), wrapped by scripts/backup.sh.

Settings are read once here; errors become one line on stderr and an exit code (see EXIT_CODES).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from questboard_backup import __version__
from questboard_backup.catalog import CatalogEntry, latest, list_backups, newest_first, resolve
from questboard_backup.connections import password_of, postgres_with, redis_with
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.errors import BackupError, ConfigurationError
from questboard_backup.lock import BackupLock
from questboard_backup.manifest import Manifest, parse_time
from questboard_backup.operations import backup_now, restore_now
from questboard_backup.redaction import RedactingFilter, redact_text, redacted_traceback, remember_secret
from questboard_backup.restore import verify_backup
from questboard_backup.settings import Settings, read_settings
from questboard_backup.sources import registry
from questboard_backup.sources.registry import Endpoints
from questboard_backup.storage.base import Storage
from questboard_backup.wiring import Wiring

logger = logging.getLogger(__name__)

EXIT_CODES = """exit codes:
  0  success (also: backups disabled by BACKUP_ENABLED=false, nothing done)
  1  unexpected error
  2  bad usage or configuration (nothing done)
  3  locked: another backup is running
  4  a source or restore target (PostgreSQL, Redis, files) is unreachable or failed
  5  storage failed (BACKUP_DIR, S3), or KMS, SNS or EventBridge Scheduler did
  6  integrity: wrong key, corrupted, truncated or missing data
  7  backup not found
  8  restored data does not match the manifest (nothing was swapped in)
  130 interrupted"""


RESTORE_PASSWORDS = """passwords (keep them off the command line; URLs without one are fine):
  PostgreSQL target  --to-database-password-env NAME, else PGPASSWORD, else ~/.pgpass (or PGPASSFILE),
                     read by libpq for psql, pg_restore and the engine alike
  Redis target       --to-redis-password-env NAME, else REDISCLI_AUTH (when the URL has no password)
  A password in a URL must be percent-encoded (@ %40, # %23, ? %3F, % %25, / %2F, : %3A)."""


def _human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TB"


def _emit(args: argparse.Namespace, body: Mapping[str, Any], text: str) -> None:
    print(json.dumps(body, indent=2, sort_keys=True) if getattr(args, "json", False) else text)


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.enabled:
        _emit(args, {"status": "disabled"}, "backups are disabled (BACKUP_ENABLED=false); nothing done")
        return 0
    run = backup_now(Wiring(settings), args.command, keep_local=not args.no_local)
    result, log = run.result, run.log
    manifest = result.manifest
    lines = [
        f"backup {manifest.backup_id} complete ({manifest.tier}, {_human_size(manifest.stored_bytes)}, {result.seconds:.1f} s)"
    ]
    lines += [
        f"  {c.name:9} {_human_size(c.total_raw_bytes):>10} -> {_human_size(c.total_stored_bytes):>10}"
        + (f"  ({len(c.stored_objects())} streams)" if c.parts else "")
        for c in manifest.components
    ]
    lines += [f"  stored at {location}" for location in result.locations]
    lines.append(f"  log: {log}")
    _emit(
        args,
        {
            "status": "ok",
            "backup_id": manifest.backup_id,
            "tier": manifest.tier,
            "stored_bytes": manifest.stored_bytes,
            "components": {
                c.name: {
                    "raw_bytes": c.total_raw_bytes,
                    "stored_bytes": c.total_stored_bytes,
                    "objects": [part.object for part in c.stored_objects()],
                }
                for c in manifest.components
            },
            "seconds": round(result.seconds, 1),
            "locations": list(result.locations),
            "log": str(log),
        },
        "\n".join(lines),
    )
    return 0


def _all_entries(storages: Sequence[Storage], wrapper: KeyWrapper | None = None) -> list[CatalogEntry]:
    """Every storage's sets, newest first across storages (an S3-only backup may be the newest); with
    ``wrapper``, each marked authenticated or not."""
    return newest_first(entry for storage in storages for entry in list_backups(storage, wrapper))


def _nothing_found(wiring: Wiring, storages: Sequence[Storage]) -> str:
    """Where an empty listing looked and, in the bucket, which other host names do have backups."""
    settings = wiring.settings
    text = f"no backups found in {', '.join(s.description for s in storages)} (BACKUP_HOSTNAME={settings.hostname})"
    if settings.s3_bucket:
        others = [
            host
            for host in wiring.s3_storage().hostnames_in_bucket()
            if host != settings.hostname and list_backups(wiring.s3_storage(hostname=host))
        ]
        if others:
            text += f"; found backups for: {', '.join(others)}; set BACKUP_HOSTNAME"
    return text


def _listing_text(entries: Sequence[CatalogEntry], nothing: str = "no backups found") -> str:
    if not entries:
        return nothing
    lines = [f"{'BACKUP':36} {'TIER':11} {'FINISHED (UTC)':21} {'SIZE':>10}  LOCATION"]
    for entry in entries:
        if entry.manifest is None:
            lines.append(
                f"{entry.backup_id:36} {'?':11} {'?':21} {'?':>10}  {entry.location}  DAMAGED: {entry.problem}"
            )
            continue
        m = entry.manifest
        # A set whose manifest does not authenticate is shown, marked, and never used.
        mark = "" if entry.authenticated else f"  UNAUTHENTICATED: {entry.problem or 'not checked'}"
        lines.append(
            f"{m.backup_id:36} {m.tier:11} {m.finished_at:21} {_human_size(m.stored_bytes):>10}  {entry.location}{mark}"
        )
    return "\n".join(lines)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    wiring = Wiring(settings)
    storages = wiring.storages()
    entries = _all_entries(storages, wiring.key_ring())
    nothing = _nothing_found(wiring, storages) if not entries else ""
    body: dict[str, Any] = {"backups": [e.summary() for e in entries], "settings": settings.source}
    if nothing:
        body["problem"] = nothing
    _emit(args, body, f"settings: {settings.source}\n" + _listing_text(entries, nothing))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    wiring = Wiring(settings)
    storages = wiring.storages()
    entries = _all_entries(storages, wiring.key_ring())
    nothing = _nothing_found(wiring, storages) if not entries else ""
    good = [e for e in entries if e.authenticated]
    last = good[0].manifest if good else None
    running = BackupLock(settings.backup_dir, "status").is_held_elsewhere()
    body = {
        "hostname": settings.hostname,
        "settings": settings.source,
        "enabled": settings.enabled,
        "running": running,
        "storages": [s.description for s in storages],
        "backups": len(good),
        "damaged": len(entries) - len(good),
        "last_success": good[0].summary() if good else None,
        "last_success_at": last.finished_at if last else None,
    }
    lines = [
        f"host {settings.hostname}: backups {'enabled' if settings.enabled else 'DISABLED'}",
        f"settings: {settings.source}",
        f"running now: {running or 'no'}",
        f"storage: {', '.join(s.description for s in storages)}",
        f"last success: {f'{last.backup_id} at {last.finished_at}' if last else 'never'}",
        "",
        _listing_text(entries, nothing),
    ]
    _emit(args, body, "\n".join(lines))
    return 0


def _resolve(wiring: Wiring, reference: str, wrapper: KeyWrapper) -> CatalogEntry:
    """The set ``reference`` names, its manifest authenticated and naming where it sits."""
    wanted = wiring.settings.s3_bucket or reference.startswith("s3://")
    return resolve(reference, wiring.storages(), wiring.s3_factory() if wanted else None, wrapper)


def _facts_lines(manifest: Manifest) -> list[str]:
    """What each component of a set needs from its restore target, as its registry entry tells it (the
    roles PostgreSQL's objects belong to)."""
    lines = []
    for component in manifest.components:
        text = registry.spec(component.name).describe(component.facts)
        if text:
            lines.append(f"  {component.name}: {text}")
    return lines


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    wiring = Wiring(settings)
    wrapper = wiring.key_ring()
    entry = _resolve(wiring, args.backup, wrapper)
    report = verify_backup(entry, wrapper)
    roles = {c.name: c.facts["roles"] for c in report.manifest.components if "roles" in c.facts}
    _emit(
        args,
        {"status": "ok", "backup_id": report.manifest.backup_id, "checked": report.checked, "roles": roles},
        "\n".join(
            [
                f"{report.manifest.backup_id} verified: manifest authentic, "
                + ", ".join(f"{name} {_human_size(size)}" for name, size in report.checked.items())
                + " read back and authenticated",
                *_facts_lines(report.manifest),
            ]
        ),
    )
    return 0


def _restore_endpoints(settings: Settings, args: argparse.Namespace) -> Endpoints:
    # Files and config restore to the paths recorded in the manifest (or beneath --to-files-root).
    database_url = args.to_database_url or settings.database_url
    password = _password_from(args.to_database_password_env, "--to-database-password-env")
    if database_url and password is not None:
        database_url = postgres_with(database_url, password=password)
    # Without a password, libpq itself reads PGPASSWORD or ~/.pgpass (psycopg2 and pg_restore alike).
    redis_url = args.to_redis_url or settings.redis_url
    password = _password_from(args.to_redis_password_env, "--to-redis-password-env")
    if password is None and redis_url and password_of(redis_url) is None:
        password = os.environ.get("REDISCLI_AUTH") or None  # redis-cli's variable; redis-py reads none
    if redis_url and password is not None:
        redis_url = redis_with(redis_url, password=password)
    return Endpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_shift_dbs=bool(args.to_redis_url),
    )


def _password_from(variable: str | None, option: str) -> str | None:
    if not variable:
        return None
    password = os.environ.get(variable)
    if not password:
        raise ConfigurationError(f"{option} {variable}: that environment variable is not set or empty")
    remember_secret(password)
    return password


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    if not args.backup:
        return cmd_list(settings, args)
    wiring = Wiring(settings)
    wrapper = wiring.key_ring()
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    targets = wiring.restore_targets(_restore_endpoints(settings, args))
    entry = _resolve(wiring, args.backup, wrapper)
    files_root = Path(args.to_files_root).absolute() if args.to_files_root else None
    report = restore_now(wiring, entry, wrapper, targets, files_root, only)
    lines = [f"restore of {report['backup_id']} complete"]
    for name, result in report["components"].items():
        lines.append(
            f"  {name:9} ok  "
            + ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, dict | list))
        )
    lines.append("  checks: connectivity ok; row/key/file counts match the manifest")
    _emit(args, {"status": "ok", **report}, "\n".join(lines))
    return 0


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    problems: list[str] = []
    checks: dict[str, str] = {}
    wiring = Wiring(settings)
    for component in wiring.sources(wiring.endpoints()):
        try:
            component.check()
            checks[component.name] = "ok"
        except BackupError as error:
            checks[component.name] = "failed"
            problems.append(str(error))
    checks["settings"] = settings.source
    # Only a set whose manifest authenticates counts: a forged newer manifest cannot hide a stale backup.
    last = latest(wiring.storages(), wiring.key_ring())
    if last is None or last.manifest is None:
        problems.append("no backup has ever succeeded")
    else:
        finished = parse_time(last.manifest.finished_at)
        age_hours = (datetime.now(UTC) - finished).total_seconds() / 3600
        checks["last_backup_age_hours"] = f"{age_hours:.1f}"
        if age_hours > args.max_age_hours:
            problems.append(
                f"last backup {last.backup_id} is {age_hours:.1f} h old (more than {args.max_age_hours} h: RPO at risk)"
            )
    text = "\n".join(
        [f"{name}: {value}" for name, value in checks.items()] + [f"PROBLEM: {p}" for p in problems]
    )
    _emit(args, {"healthy": not problems, "checks": checks, "problems": problems}, text or "healthy")
    return 1 if problems else 0


def cmd_schedules(settings: Settings, args: argparse.Namespace) -> int:
    from questboard_backup.aws.scheduler import DeployedSchedules, aws_configured, scheduler_client

    if args.action == "detect":
        return 0 if aws_configured() else 1
    schedules = DeployedSchedules(scheduler_client(), settings.hostname)
    if args.action == "setup":
        changed = schedules.enable()
        print("enabled: " + ", ".join(changed) if changed else "both schedules were already enabled")
    infos = schedules.show()
    _emit(
        args,
        {"schedules": [{"kind": i.kind, "name": i.name, "expression": i.expression, "timezone": i.timezone,
                        "state": i.state, "next_run": i.next_run.isoformat() if i.next_run else None} for i in infos]},
        "\n".join(info.line() for info in infos),
    )  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="questboard-backup",
        description="Back up and restore Quest Board: PostgreSQL, Redis, files and config, encrypted, to local disk and S3.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--env-file",
        help="read settings from this file (default: $BACKUP_ENV_FILE, else /etc/questboard-backup/env, "
        "else ./.env); the environment wins",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for kind, text in (
        ("full", "take a full backup now"),
        ("incremental", "take an incremental backup now (24 h retention)"),
    ):
        sub = commands.add_parser(
            kind,
            help=text,
            description=text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "--no-local", action="store_true", help="keep no local copy (needs BACKUP_S3_BUCKET)"
        )
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
        sub.set_defaults(handler=cmd_backup)
    sub = commands.add_parser("status", help="show the last backups and whether one is running")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_status)
    sub = commands.add_parser(
        "health", help="check sources answer and the last backup is recent (exit 1 if not)"
    )
    sub.add_argument(
        "--max-age-hours",
        type=float,
        default=7.0,
        help="oldest acceptable last backup (default 7: RPO 6 h + margin)",
    )
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_health)
    sub = commands.add_parser(
        "schedules", help="show or enable the deployed EventBridge schedules (AWS); backup-cron.sh uses it"
    )
    sub.add_argument(
        "action", choices=("show", "setup", "detect"), help="detect: exit 0 if AWS is configured"
    )
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_schedules)
    sub = commands.add_parser("list", help="list restorable backups (local and S3)")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_list)
    sub = commands.add_parser("verify", help="read a backup back in full and check it; restores nothing")
    sub.add_argument("backup", help="backup id, 'latest', a backup folder or an s3:// URI")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_verify)
    sub = commands.add_parser(
        "restore",
        help="restore a backup (without BACKUP: list restorable backups)",
        description="Restore a backup. PostgreSQL goes into a staging database swapped in only after it checks out; "
        "the previous database is kept as {db}_pre_restore_{timestamp}.",
        epilog=RESTORE_PASSWORDS + "\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("backup", nargs="?", help="backup id, 'latest', a backup folder or an s3:// URI")
    sub.add_argument(
        "--to-database-url",
        help="restore PostgreSQL into this database instead of DATABASE_URL; leave the password out "
        "and it comes from --to-database-password-env, PGPASSWORD or ~/.pgpass",
    )
    sub.add_argument(
        "--to-database-password-env",
        metavar="NAME",
        help="the PostgreSQL target's password is in environment variable NAME",
    )
    sub.add_argument(
        "--to-redis-url", help="restore Redis here instead of REDIS_URL (source db k goes to db N+k)"
    )
    sub.add_argument(
        "--to-redis-password-env",
        metavar="NAME",
        help="the Redis target's password is in environment variable NAME (default: REDISCLI_AUTH, "
        "when the Redis URL has no password)",
    )
    sub.add_argument("--to-files-root", help="re-create the backed-up files and config beneath this folder")
    sub.add_argument("--only", help="comma-separated subset: postgres,redis,files,config")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_restore)
    return parser


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
    try:
        _remember_passwords(os.environ)
        settings = read_settings(args.env_file, os.environ, Path.cwd())
        _remember_passwords({"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url})
        if getattr(args, "no_local", False) and not settings.s3_bucket:
            raise ConfigurationError("--no-local needs BACKUP_S3_BUCKET: the backup would be stored nowhere")
        return int(args.handler(settings, args))
    except BackupError as error:
        print(f"error: {redact_text(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the last resort: one line and exit 1, traceback with -v
        # With -v, its traceback (the run log has it too), passwords left out as everywhere.
        logger.info("unexpected error:\n%s", redacted_traceback(error))
        lines = str(error).strip().splitlines() or [""]
        print(f"error: unexpected {type(error).__name__}: {redact_text(lines[0])}", file=sys.stderr)
        return 1


def _remember_passwords(environ: Mapping[str, str]) -> None:
    """Every password this run may hold, so that no message, log line or run log can show it."""
    for name in ("PGPASSWORD", "REDISCLI_AUTH"):
        if environ.get(name):
            remember_secret(environ[name])
    for name in ("DATABASE_URL", "REDIS_URL"):
        password = password_of(environ.get(name, ""))
        if password:
            remember_secret(password)


if __name__ == "__main__":
    sys.exit(main())
