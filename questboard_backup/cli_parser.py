"""The CLI's command line: its subcommands, options and help text, exit codes included."""

from __future__ import annotations

import argparse

from questboard_backup import __version__
from questboard_backup.cli_commands import (
    cmd_backup,
    cmd_drill,
    cmd_health,
    cmd_list,
    cmd_restore,
    cmd_schedules,
    cmd_status,
    cmd_token,
    cmd_verify,
)

EXIT_CODES = """exit codes:
  0  success (also: backups disabled by BACKUP_ENABLED=false, nothing done)
  1  unexpected error
  2  bad usage or configuration (nothing done)
  3  locked: another backup is running
  4  a source or restore target (PostgreSQL, Redis, files) is unreachable or failed
  5  storage failed (BACKUP_DIR, S3), or KMS, SNS or EventBridge Scheduler did; or BACKUP_DIR
     has too little free space for the next backup (nothing written)
  6  integrity: wrong key, corrupted, truncated or missing data
  7  backup not found
  8  restored data does not match the manifest (nothing was swapped in), or a drill's SQL check failed
  9  drill: verified, but slower than BACKUP_DRILL_RTO_SECONDS (alerted)
  130 interrupted"""


RESTORE_PASSWORDS = """passwords (keep them off the command line; URLs without one are fine):
  PostgreSQL target  --to-database-password-env NAME, else PGPASSWORD, else ~/.pgpass (or PGPASSFILE),
                     read by libpq for psql, pg_restore and the engine alike
  Redis target       --to-redis-password-env NAME, else REDISCLI_AUTH (when the URL has no password)
  A password in a URL must be percent-encoded (@ %40, # %23, ? %3F, % %25, / %2F, : %3A)."""


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
    sub.add_argument(
        "--to-uploads-s3-uri",
        help="restore the S3 uploads (s3uploads) under this s3://bucket/prefix instead of BACKUP_UPLOADS_S3_URI",
    )
    sub.add_argument(
        "--to-config-ssm-paths",
        help="restore the SSM parameters (ssmconfig) under these comma-separated paths instead of the backed-up "
        "ones, by position",
    )
    sub.add_argument(
        "--to-config-secret-ids",
        help="restore the Secrets Manager secrets (ssmconfig) into these comma-separated secrets instead, by position",
    )
    sub.add_argument("--only", help="comma-separated subset: postgres,redis,files,config,s3uploads,ssmconfig")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_restore)
    sub = commands.add_parser(
        "drill",
        help="restore drill: restore a backup into the drill targets, check it, time it, clean up",
        description="The monthly restore test. Restores BACKUP (default: latest) into the drill targets only: "
        "BACKUP_DRILL_DATABASE (a database name on DATABASE_URL's server, or a postgresql:// URL; never the "
        "production database; dropped afterwards), BACKUP_DRILL_REDIS_URL (the backup's db k into db N+k; "
        "refused where that is a production db) and BACKUP_DRILL_FILES_ROOT (a scratch folder). Components "
        "without a drill target are not drilled. Runs the SQL checks of BACKUP_DRILL_CHECKS_FILE, reports the "
        "time from start to verified (the measured RTO) and alerts when it exceeds BACKUP_DRILL_RTO_SECONDS.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "backup", nargs="?", default="latest", help="backup id, 'latest' (default) or an s3:// URI"
    )
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_drill)
    sub = commands.add_parser(
        "token",
        help="create, list or revoke the admin API's bearer tokens (BACKUP_API_TOKENS_SECRET)",
        description="The admin API's tokens live as salted hashes in the Secrets Manager secret "
        "BACKUP_API_TOKENS_SECRET names (the stack's ApiTokensSecretArn output). `create` prints the new "
        "token once; rotate by creating a new name, moving clients to it, then revoking the old one.",
    )
    sub.add_argument("action", choices=("create", "list", "revoke"))
    sub.add_argument("name", nargs="?", help="the token's name (create, revoke): who or what uses it")
    sub.add_argument(
        "--scope",
        choices=("read", "admin"),
        default="read",
        help="read: status, detail, download URLs; admin: also start backups (default read)",
    )
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.set_defaults(handler=cmd_token)
    return parser
