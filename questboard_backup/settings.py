"""Settings read once from the environment (and an optional .env file) into a frozen object.

The names are the seed's and the operators' contract: DATABASE_URL, REDIS_URL, BACKUP_FILES_PATHS,
BACKUP_CONFIG_PATHS, BACKUP_ENABLED, BACKUP_DIR, BACKUP_S3_BUCKET, BACKUP_HOSTNAME,
BACKUP_RETENTION_DAYS, BACKUP_ENCRYPTION, BACKUP_ENCRYPTION_KEY (plus BACKUP_PG_BIN_DIR, BACKUP_PG_JOBS,
BACKUP_PG_SPLIT_MIN_MB, BACKUP_COMPRESSION_LEVEL and BACKUP_TIMEZONE). The CLI and the Lambdas read the
same model with the same rules; the Lambdas add their own fields on top (lambdas/dependencies.py), the
CLI its host's: BACKUP_SPACE_MARGIN, BACKUP_ALERT_SNS_TOPIC_ARN and BACKUP_ALERT_WEBHOOK_URL.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from questboard_backup.address import zone
from questboard_backup.connections import PERCENT_HINT, parse_postgres, parse_redis
from questboard_backup.errors import ConfigurationError
from questboard_backup.pipeline import ZSTD_LEVEL
from questboard_backup.space import DEFAULT_SPACE_MARGIN

DEFAULT_BACKUP_DIR = "/var/backups/questboard"
DEFAULT_RETENTION_DAYS = 30
DEFAULT_PG_JOBS = 2
DEFAULT_PG_SPLIT_MIN_MB = 64
#: zstd: level 1 is the fast end of the normal levels; negative levels trade size for speed, higher ones
#: the reverse. Each stream's compressor needs about 11 MiB at level 9 but 40-80 MiB from level 12 up,
#: which several streams at once would take past the memory a backup may use.
DEFAULT_COMPRESSION_LEVEL = ZSTD_LEVEL
MIN_COMPRESSION_LEVEL = -7
MAX_COMPRESSION_LEVEL = 9
MIN_KEY_LENGTH = 16
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: BACKUP_KMS_ALLOWED_KEYS: key ARNs or key ids (an alias could be re-pointed at another key).
_KMS_KEY = re.compile(r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/)?(mrk-)?[0-9a-fA-F-]{32,36}$")
#: BACKUP_ALERT_SNS_TOPIC_ARN: a standard topic (a FIFO topic would want a message group).
_SNS_TOPIC = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
_SSM_PATH = re.compile(r"^/[A-Za-z0-9_.\-/]{1,1010}$")
_SECRET_ID = re.compile(
    r"^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$"
)
_DRILL_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
#: BACKUP_S3_OBJECT_LOCK: the S3 Object Lock mode of every object written to its final place.
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


def _paths(environ: Mapping[str, str], name: str) -> tuple[Path, ...]:
    raw = environ.get(name, "")
    paths = tuple(Path(part.strip()) for part in raw.split(",") if part.strip())
    for path in paths:
        if not path.is_absolute():
            raise ConfigurationError(f"{name} must list absolute paths, not {str(path)!r}")
    return paths


def _url(environ: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    raw = environ.get(name, "").strip()
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigurationError(f"{name} is not a valid URL ({PERCENT_HINT})") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigurationError(
            f"{name} must be a {' or '.join(s + '://' for s in schemes)} URL with a host"
        )
    # What the engine will connect with reads it too (libpq, redis-py); neither message quotes it.
    (parse_redis if parts.scheme.startswith("redis") else parse_postgres)(raw, name)
    return raw


def _textfile(environ: Mapping[str, str]) -> str:
    raw = environ.get("BACKUP_METRICS_TEXTFILE", "").strip()
    if raw and (not Path(raw).is_absolute() or not raw.endswith(".prom")):
        raise ConfigurationError(
            f"BACKUP_METRICS_TEXTFILE must be an absolute path ending in .prom (node_exporter reads *.prom), not {raw!r}"
        )
    return raw


def _pushgateway_url(environ: Mapping[str, str]) -> str:
    url = _http_url(environ, "BACKUP_PUSHGATEWAY_URL")
    if url and "@" in urlsplit(url).netloc:
        raise ConfigurationError(
            "BACKUP_PUSHGATEWAY_URL must not carry a user or password (put the Pushgateway behind a proxy that authenticates)"
        )
    return url


def _http_url(environ: Mapping[str, str], name: str) -> str:
    raw = environ.get(name, "").strip()
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http:// or https:// URL")
    return raw


def whole_setting(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, not {value}")
    return value


def postgres_tuning(environ: Mapping[str, str]) -> tuple[int, int]:
    """``BACKUP_PG_JOBS`` and ``BACKUP_PG_SPLIT_MIN_MB`` (as bytes), shared by the CLI and the Lambdas."""
    jobs = whole_setting(environ, "BACKUP_PG_JOBS", DEFAULT_PG_JOBS, 1, 32)
    split_mb = whole_setting(environ, "BACKUP_PG_SPLIT_MIN_MB", DEFAULT_PG_SPLIT_MIN_MB, 0, 2**30)
    return jobs, split_mb * 2**20


def compression_level(environ: Mapping[str, str]) -> int:
    """``BACKUP_COMPRESSION_LEVEL``, the zstd level of every new backup, shared by the CLI and the Lambdas
    (a restore reads any level)."""
    return whole_setting(
        environ,
        "BACKUP_COMPRESSION_LEVEL",
        DEFAULT_COMPRESSION_LEVEL,
        MIN_COMPRESSION_LEVEL,
        MAX_COMPRESSION_LEVEL,
    )


def local_zone(environ: Mapping[str, str]) -> tzinfo:
    """The host's time zone, which cron runs in: ``TZ``, else what ``/etc/localtime`` links to (or
    ``/etc/timezone`` names), else UTC."""
    candidates = [environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(IndexError):
        candidates.append(os.path.realpath("/etc/localtime").split("/zoneinfo/", 1)[1])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return UTC


def object_lock_mode(environ: Mapping[str, str]) -> str:
    """``BACKUP_S3_OBJECT_LOCK``: GOVERNANCE, COMPLIANCE, or "" (no retention on objects: the default)."""
    raw = environ.get("BACKUP_S3_OBJECT_LOCK", "").strip().upper()
    if raw in ("", "NONE", "OFF"):
        return ""
    if raw not in OBJECT_LOCK_MODES:
        raise ConfigurationError(f"BACKUP_S3_OBJECT_LOCK must be governance, compliance or off, not {raw!r}")
    return raw


def kms_fields(environ: Mapping[str, str]) -> dict[str, Any]:
    """The CLI's KMS settings, for reading sets the serverless deployment wrote: ``BACKUP_KMS_KEY_ID``
    and ``BACKUP_KMS_ALLOWED_KEYS`` (comma-separated key ARNs or ids)."""
    allowed = tuple(
        part.strip() for part in environ.get("BACKUP_KMS_ALLOWED_KEYS", "").split(",") if part.strip()
    )
    for key in allowed:
        if not _KMS_KEY.match(key):
            raise ConfigurationError(
                f"BACKUP_KMS_ALLOWED_KEYS lists {key[:100]!r}, not a KMS key ARN or key id"
            )
    return {"kms_key_id": environ.get("BACKUP_KMS_KEY_ID", "").strip(), "kms_allowed_keys": allowed}


def alert_fields(environ: Mapping[str, str]) -> dict[str, Any]:
    """Where the CLI announces a failed backup: ``BACKUP_ALERT_SNS_TOPIC_ARN`` (an SNS topic) and
    ``BACKUP_ALERT_WEBHOOK_URL`` (Slack-compatible, http or https). The webhook URL is a secret (whoever
    knows it can post to the channel): no message quotes it."""
    topic = environ.get("BACKUP_ALERT_SNS_TOPIC_ARN", "").strip()
    if topic and not _SNS_TOPIC.match(topic):
        raise ConfigurationError(
            f"BACKUP_ALERT_SNS_TOPIC_ARN must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME), not {topic[:100]!r}"
        )
    return {
        "alert_sns_topic_arn": topic,
        "alert_webhook_url": _http_url(environ, "BACKUP_ALERT_WEBHOOK_URL"),
    }


def aws_source_fields(environ: Mapping[str, str], labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Uploads in S3 and configuration in SSM Parameter Store / Secrets Manager. ``labels`` names each
    variable in messages (the CLI's ``--to-*`` options read the same values by the same rules)."""

    def label(name: str) -> str:
        return (labels or {}).get(name, name)

    uri = environ.get("BACKUP_UPLOADS_S3_URI", "").strip()
    if uri:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not _BUCKET.match(bucket) or not prefix.strip("/"):
            raise ConfigurationError(
                f"{label('BACKUP_UPLOADS_S3_URI')} must be s3://BUCKET/PREFIX (a prefix: restores stage beside it), not {uri[:100]!r}"
            )
    paths = tuple(p.strip() for p in environ.get("BACKUP_CONFIG_SSM_PATHS", "").split(",") if p.strip())
    for path in paths:
        if not _SSM_PATH.match(path):
            raise ConfigurationError(
                f"{label('BACKUP_CONFIG_SSM_PATHS')} must list parameter paths like /questboard/prod, not {path[:100]!r}"
            )
    secrets = tuple(s.strip() for s in environ.get("BACKUP_CONFIG_SECRET_IDS", "").split(",") if s.strip())
    for secret in secrets:
        if not _SECRET_ID.match(secret):
            raise ConfigurationError(
                f"{label('BACKUP_CONFIG_SECRET_IDS')} must list secret names or ARNs, not {secret[:100]!r}"
            )
    return {"uploads_s3_uri": uri, "config_ssm_paths": paths, "config_secret_ids": secrets}


def drill_fields(environ: Mapping[str, str]) -> dict[str, Any]:
    """The CLI's restore drill settings (``questboard-backup drill``)."""
    database = environ.get("BACKUP_DRILL_DATABASE", "").strip()
    if "://" in database:
        database = _url(environ, "BACKUP_DRILL_DATABASE", ("postgresql", "postgres"))
        if not parse_postgres(database, "BACKUP_DRILL_DATABASE").get("dbname"):
            raise ConfigurationError("BACKUP_DRILL_DATABASE must name a database")
    elif database and not _DRILL_DATABASE.match(database):
        raise ConfigurationError(
            f"BACKUP_DRILL_DATABASE must be a database name (letters, digits, _ and -) or a postgresql:// URL, not {database[:60]!r}"
        )
    root = environ.get("BACKUP_DRILL_FILES_ROOT", "").strip()
    if root and not Path(root).is_absolute():
        raise ConfigurationError(f"BACKUP_DRILL_FILES_ROOT must be an absolute path, not {root!r}")
    if root and os.path.realpath(root) == "/":
        raise ConfigurationError("BACKUP_DRILL_FILES_ROOT must be a scratch folder, not /")
    checks_file = environ.get("BACKUP_DRILL_CHECKS_FILE", "").strip()
    checks: tuple[str, ...] = ()
    if checks_file:
        from questboard_backup.drill import parse_checks

        try:
            checks = parse_checks(Path(checks_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise ConfigurationError(f"BACKUP_DRILL_CHECKS_FILE {checks_file}: {reason}") from None
    return {
        "drill_database": database,
        "drill_redis_url": _url(environ, "BACKUP_DRILL_REDIS_URL", ("redis", "rediss")),
        "drill_files_root": Path(root) if root else None,
        "drill_checks": checks,
        "drill_rto_seconds": whole_setting(environ, "BACKUP_DRILL_RTO_SECONDS", 3600, 0, 7 * 86400),
    }


def space_margin(environ: Mapping[str, str]) -> float:
    """``BACKUP_SPACE_MARGIN``: how much larger than the largest recent set the next one may be, for the
    space check before a backup (questboard_backup.space); 0 turns the check off."""
    raw = environ.get("BACKUP_SPACE_MARGIN", "").strip()
    if not raw:
        return DEFAULT_SPACE_MARGIN
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value == 0 or (math.isfinite(value) and value >= 1)):
        raise ConfigurationError(
            f"BACKUP_SPACE_MARGIN must be a number of at least 1 (0: no space check), not {raw[:40]!r}"
        )
    return value


#: ``Settings.source`` when no settings file was read.
ENVIRONMENT_ONLY = "environment only"


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    redis_url: str = ""
    files_paths: tuple[Path, ...] = ()
    config_paths: tuple[Path, ...] = ()
    #: BACKUP_UPLOADS_S3_URI: uploads kept in S3 (``s3://bucket/prefix``; "" = none).
    uploads_s3_uri: str = ""
    #: BACKUP_CONFIG_SSM_PATHS and BACKUP_CONFIG_SECRET_IDS: configuration in SSM Parameter Store
    #: (paths, backed up recursively) and Secrets Manager (secret names or ARNs).
    config_ssm_paths: tuple[str, ...] = ()
    config_secret_ids: tuple[str, ...] = ()
    enabled: bool = True
    backup_dir: Path = Path(DEFAULT_BACKUP_DIR)
    s3_bucket: str = ""
    hostname: str = "localhost"
    retention_days: int = DEFAULT_RETENTION_DAYS
    encryption_key: str = field(default="", repr=False)
    pg_bin_dir: Path | None = None
    #: PostgreSQL: further dump streams beside the main pg_dump, row counters and restore processes at once.
    pg_jobs: int = DEFAULT_PG_JOBS
    #: PostgreSQL: databases with fewer bytes of tables are dumped as one stream.
    pg_split_min_bytes: int = DEFAULT_PG_SPLIT_MIN_MB * 2**20
    compression_level: int = DEFAULT_COMPRESSION_LEVEL
    #: BACKUP_TIMEZONE: the calendar of the tier rule (the schedule's zone); ids stay UTC.
    schedule_zone: tzinfo = UTC
    #: BACKUP_S3_KMS_KEY_ID: the bucket's SSE-KMS key, named on every upload (never the wrapping key).
    s3_kms_key_id: str = ""
    #: BACKUP_S3_OBJECT_LOCK: GOVERNANCE or COMPLIANCE retention on every object put in its tier ("" none).
    s3_object_lock: str = ""
    #: BACKUP_KMS_KEY_ID (the CLI: reading sets whose data keys KMS wrapped; the Lambdas require it).
    kms_key_id: str = ""
    #: BACKUP_KMS_ALLOWED_KEYS (the CLI): further keys a manifest may name, e.g. another deployment's.
    kms_allowed_keys: tuple[str, ...] = ()
    #: BACKUP_CATALOG_TABLE: the DynamoDB table the admin API's status reads; runs that store to S3
    #: record their outcome there ("" = no catalog table).
    catalog_table: str = ""
    #: BACKUP_API_TOKENS_SECRET: the Secrets Manager secret holding the admin API's token hashes.
    api_tokens_secret: str = ""
    #: BACKUP_METRICS_TEXTFILE: node_exporter textfile the CLI rewrites after every run ("" = none).
    metrics_textfile: str = ""
    #: BACKUP_PUSHGATEWAY_URL: a Prometheus Pushgateway the CLI pushes to after every run ("" = none).
    pushgateway_url: str = ""
    #: BACKUP_SPACE_MARGIN (the CLI): a backup is refused when BACKUP_DIR has less free space than
    #: the largest recent set times this (0: no check).
    space_margin: float = DEFAULT_SPACE_MARGIN
    #: BACKUP_ALERT_SNS_TOPIC_ARN (the CLI): the SNS topic a failed backup is announced on ("" = none).
    alert_sns_topic_arn: str = ""
    #: BACKUP_ALERT_WEBHOOK_URL (the CLI): a Slack-compatible webhook a failed backup is posted to; a
    #: secret ("" = none).
    alert_webhook_url: str = field(default="", repr=False)
    #: BACKUP_DRILL_DATABASE (the CLI's restore drills): a database name on DATABASE_URL's server, or a
    #: postgresql:// URL of another; dropped after every drill ("" = PostgreSQL is not drilled).
    drill_database: str = ""
    #: BACKUP_DRILL_REDIS_URL: where a drill restores Redis (the backup's db k into db N+k).
    drill_redis_url: str = ""
    #: BACKUP_DRILL_FILES_ROOT: a scratch folder; each drill restores files into a folder of its own here.
    drill_files_root: Path | None = None
    #: BACKUP_DRILL_CHECKS_FILE's SQL smoke checks, one per line, each answering true.
    drill_checks: tuple[str, ...] = ()
    #: BACKUP_DRILL_RTO_SECONDS: a drill slower than this (start to verified) alerts (default 3600).
    drill_rto_seconds: int = 3600
    #: Where the settings were read from (a file, or "environment only"), to tell the operator.
    source: str = ENVIRONMENT_ONLY

    @classmethod
    def from_env(cls, environ: Mapping[str, str], source: str = ENVIRONMENT_ONLY) -> Settings:
        """Parse and validate every setting; the first problem is raised by name."""
        return cls(
            **cls.fields_from_env(environ),
            **kms_fields(environ),
            **alert_fields(environ),
            **drill_fields(environ),
            space_margin=space_margin(environ),
            source=source,
        )

    @classmethod
    def fields_from_env(cls, environ: Mapping[str, str]) -> dict[str, Any]:
        """Every common field, validated; front ends with more fields (the Lambdas) build on this."""
        hostname = environ.get("BACKUP_HOSTNAME", "").strip() or socket.gethostname().split(".")[0]
        if not _HOSTNAME.match(hostname):
            raise ConfigurationError(
                f"BACKUP_HOSTNAME must be letters, digits, '.', '_' or '-', not {hostname!r}"
            )
        bucket = environ.get("BACKUP_S3_BUCKET", "").strip()
        if bucket and not _BUCKET.match(bucket):
            raise ConfigurationError(f"BACKUP_S3_BUCKET is not a valid bucket name: {bucket!r}")
        days = whole_setting(environ, "BACKUP_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, 1, 3650)
        if not _flag(environ, "BACKUP_ENCRYPTION", True):
            raise ConfigurationError("BACKUP_ENCRYPTION=false is not supported: backups are always encrypted")
        key = environ.get("BACKUP_ENCRYPTION_KEY", "")
        if key and len(key) < MIN_KEY_LENGTH:
            raise ConfigurationError(f"BACKUP_ENCRYPTION_KEY must be at least {MIN_KEY_LENGTH} characters")
        backup_dir = environ.get("BACKUP_DIR", "").strip() or DEFAULT_BACKUP_DIR
        if not Path(backup_dir).is_absolute():
            raise ConfigurationError(f"BACKUP_DIR must be an absolute path, not {backup_dir!r}")
        pg_bin = environ.get("BACKUP_PG_BIN_DIR", "").strip()
        pg_jobs, pg_split_min_bytes = postgres_tuning(environ)
        zone_name = environ.get("BACKUP_TIMEZONE", "").strip()
        return dict(
            database_url=_url(environ, "DATABASE_URL", ("postgresql", "postgres")),
            redis_url=_url(environ, "REDIS_URL", ("redis", "rediss")),
            files_paths=_paths(environ, "BACKUP_FILES_PATHS"),
            config_paths=_paths(environ, "BACKUP_CONFIG_PATHS"),
            **aws_source_fields(environ),
            enabled=_flag(environ, "BACKUP_ENABLED", True),
            backup_dir=Path(backup_dir),
            s3_bucket=bucket,
            hostname=hostname,
            retention_days=days,
            encryption_key=key,
            pg_bin_dir=Path(pg_bin) if pg_bin else None,
            pg_jobs=pg_jobs,
            pg_split_min_bytes=pg_split_min_bytes,
            compression_level=compression_level(environ),
            schedule_zone=zone(zone_name) if zone_name else local_zone(environ),
            s3_kms_key_id=environ.get("BACKUP_S3_KMS_KEY_ID", "").strip(),
            s3_object_lock=object_lock_mode(environ),
            catalog_table=environ.get("BACKUP_CATALOG_TABLE", "").strip(),
            metrics_textfile=_textfile(environ),
            pushgateway_url=_pushgateway_url(environ),
            api_tokens_secret=environ.get("BACKUP_API_TOKENS_SECRET", "").strip(),
        )

    def require_encryption_key(self) -> str:
        if not self.encryption_key:
            raise ConfigurationError("BACKUP_ENCRYPTION_KEY is not set")
        return self.encryption_key

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigurationError("DATABASE_URL is not set")
        return self.database_url


#: Where an operator host keeps its settings when not beside the checkout (scripts/backup.sh passes the
#: checkout's .env as BACKUP_ENV_FILE).
SYSTEM_ENV_FILE = Path("/etc/questboard-backup/env")


def settings_file(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    """The settings file to read, first found: ``--env-file``, ``BACKUP_ENV_FILE`` (both must exist),
    ``/etc/questboard-backup/env``, then ``./.env`` in the current folder."""
    for name, value in (("--env-file", explicit), ("BACKUP_ENV_FILE", environ.get("BACKUP_ENV_FILE"))):
        if value:
            path = Path(value)
            if not path.is_file():
                raise ConfigurationError(f"{name} {value} does not exist")
            return path.absolute()
    for path in (SYSTEM_ENV_FILE, cwd / ".env"):
        if path.is_file():
            return path.absolute()
    return None


def read_settings(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> Settings:
    """Settings from the settings file and the environment, the environment winning."""
    from dotenv import dotenv_values

    path = settings_file(explicit, environ, cwd)
    values: dict[str, str] = {}
    if path is not None:
        values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    values.update(environ)
    return Settings.from_env(values, source=str(path) if path else ENVIRONMENT_ONLY)
