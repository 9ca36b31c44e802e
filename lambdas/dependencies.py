"""Settings and adapters for the handlers, built once per container at first use; tests install their own.

Nothing here reads the environment at import time. Database and Redis URLs come from Secrets Manager
(an RDS/ElastiCache-style JSON secret or {"url": ...}, read by ``questboard_backup.connections``, which
also replaces a restore's target database or db), never from plain environment variables.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities import parameters

from questboard_backup import runtime
from questboard_backup.admin.service import AdminService, Schedule
from questboard_backup.admin.tokens import TokenDocument
from questboard_backup.aws.catalog_table import CatalogTable
from questboard_backup.aws.kms import KmsKeyWrapper
from questboard_backup.aws.sns import SnsAlerts, describe_failure
from questboard_backup.aws.starter import BackupStarter
from questboard_backup.aws.token_secret import TokenSecret
from questboard_backup.connections import (
    postgres_url_from_secret,
    postgres_with,
    redis_url_from_secret,
    redis_with,
)
from questboard_backup.errors import ConfigurationError
from questboard_backup.lock import SHARED_LOCK_KEY, StorageLock
from questboard_backup.redaction import redact_text
from questboard_backup.settings import ENVIRONMENT_ONLY, Settings, drill_fields, whole_setting
from questboard_backup.sources.base import Component
from questboard_backup.sources.registry import Endpoints
from questboard_backup.storage.s3 import S3Storage
from questboard_backup.wiring import Wiring

LOCK_KEY = SHARED_LOCK_KEY  # the CLI takes the same lock object
LOCK_LIFETIME_SECONDS = 2 * 3600  # the backup state machine's timeout
#: Where the layer puts the PostgreSQL client tools.
LAYER_PG_BIN_DIR = "/opt/bin"
#: Presigned URLs live at most 15 minutes (BACKUP_API_URL_EXPIRY_SECONDS may only lower it).
MAX_URL_EXPIRY_SECONDS = 900
#: How long a container trusts the token document it read (the authorizer's cache comes on top).
TOKENS_MAX_AGE_SECONDS = 10


@dataclass(frozen=True)
class FunctionSettings(Settings):
    """The engine's settings, read by the same rules as the CLI's, plus what only the functions have.
    The bucket and the host name are required; database and Redis URLs come from secrets."""

    kms_key_id: str = ""
    database_secret_arn: str = ""
    redis_secret_arn: str = ""
    alert_topic_arn: str = ""
    state_machine_arn: str = ""
    #: The staging function's time limit: Validate refuses a restore whose estimate does not fit.
    restore_stage_timeout_seconds: int = 900
    #: The schedules' expressions (EventBridge cron/rate), for the admin API's "next runs".
    full_schedule: str = ""
    incremental_schedule: str = ""
    #: How long a presigned download URL lives (at most 15 minutes).
    url_expiry_seconds: int = MAX_URL_EXPIRY_SECONDS
    #: Restore drills (BACKUP_DRILL_*): the database on the database secret's server and the Redis db
    #: (db k of a backup goes to db N+k) they restore into; files beneath drill_files_root.
    drill_redis_db: int | None = None
    #: BACKUP_COMPONENT_RUNTIME: "lambda" (no Fargate path deployed), "auto" (projected) or "fargate".
    component_runtime: str = "lambda"
    #: The dump function's time limit: Prepare sends a dump projected beyond it to Fargate.
    dump_timeout_seconds: int = 900

    @classmethod
    def from_env(cls, environ: Mapping[str, str], source: str = ENVIRONMENT_ONLY) -> FunctionSettings:
        def required(name: str) -> str:
            value = environ.get(name, "").strip()
            if not value:
                raise ConfigurationError(f"{name} is not set")
            return value

        required("BACKUP_S3_BUCKET")
        required("BACKUP_HOSTNAME")  # the CLI's default, this machine's name, means nothing here
        key_id = required("BACKUP_KMS_KEY_ID")
        pg_bin = environ.get("BACKUP_PG_BIN_DIR", "").strip() or LAYER_PG_BIN_DIR
        common = Settings.fields_from_env({**environ, "BACKUP_PG_BIN_DIR": pg_bin})
        common["pg_bin_dir"] = Path(pg_bin) if Path(pg_bin).is_dir() else None
        return cls(
            **common,
            source=source,
            kms_key_id=key_id,
            database_secret_arn=environ.get("DATABASE_SECRET_ARN", ""),
            redis_secret_arn=environ.get("REDIS_SECRET_ARN", ""),
            alert_topic_arn=environ.get("ALERT_TOPIC_ARN", ""),
            state_machine_arn=environ.get("BACKUP_STATE_MACHINE_ARN", ""),
            restore_stage_timeout_seconds=_seconds(environ, "RESTORE_STAGE_TIMEOUT_SECONDS", 900),
            full_schedule=environ.get("BACKUP_FULL_SCHEDULE", "").strip(),
            incremental_schedule=environ.get("BACKUP_INCREMENTAL_SCHEDULE", "").strip(),
            url_expiry_seconds=whole_setting(
                environ, "BACKUP_API_URL_EXPIRY_SECONDS", MAX_URL_EXPIRY_SECONDS, 1, MAX_URL_EXPIRY_SECONDS
            ),
            **_drill_settings(environ),
            component_runtime=_runtime_mode(environ),
            dump_timeout_seconds=_seconds(environ, "DUMP_TIMEOUT_SECONDS", 900),
        )


def _drill_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The functions' drill settings: the CLI's rules (a database name, not a URL: the server is the
    database secret's), the Redis db as a number and the SQL checks as a JSON list."""
    fields = drill_fields({key: value for key, value in environ.items() if key != "BACKUP_DRILL_CHECKS_FILE"})
    if "://" in fields["drill_database"]:
        raise ConfigurationError(
            "BACKUP_DRILL_DATABASE must be a database name on the database secret's server"
        )
    raw_db = environ.get("BACKUP_DRILL_REDIS_DB", "").strip()
    checks = environ.get("BACKUP_DRILL_CHECKS", "").strip()
    try:
        parsed = json.loads(checks) if checks else []
    except ValueError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(check, str) and check.strip() for check in parsed):
        raise ConfigurationError("BACKUP_DRILL_CHECKS must be a JSON list of SQL queries")
    fields["drill_checks"] = tuple(check.strip() for check in parsed)
    fields["drill_redis_db"] = whole_setting(environ, "BACKUP_DRILL_REDIS_DB", 0, 0, 15) if raw_db else None
    return fields


def _runtime_mode(environ: Mapping[str, str]) -> str:
    mode = environ.get("BACKUP_COMPONENT_RUNTIME", "").strip() or "lambda"
    if mode not in runtime.MODES:
        raise ConfigurationError(
            f"BACKUP_COMPONENT_RUNTIME must be one of {', '.join(runtime.MODES)}, not {mode!r}"
        )
    return mode


def _seconds(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ConfigurationError(f"{name} must be a whole number of seconds, not {value!r}")
    return int(value)


class Dependencies:
    """The adapters one container uses, from the engine's wiring; built lazily, once."""

    def __init__(
        self,
        settings: FunctionSettings,
        clients: Callable[[str], Any] | None = None,
        secrets: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.wiring = Wiring(settings, clients)  # None: the engine's clients (S3: SigV4, retries)
        self._secrets = secrets or _powertools_secret
        self._storage: S3Storage | None = None
        self._wrapper: KmsKeyWrapper | None = None
        self._tokens: tuple[float, TokenDocument] | None = None

    def client(self, name: str) -> Any:
        return self.wiring.client(name)

    def storage(self) -> S3Storage:
        if self._storage is None:
            self._storage = self.wiring.s3_storage(stage_in_temp=True)
        return self._storage

    def key_wrapper(self) -> KmsKeyWrapper:
        if self._wrapper is None:
            self._wrapper = self.wiring.kms_wrapper(self.settings.kms_key_id)
        return self._wrapper

    def alert_failure(self, kind: str, backup_id: str, error: str, cause: str) -> dict[str, Any]:
        """Publish the failure alert (when a topic is configured); returns what the failure path reports."""
        # The cause comes from Step Functions: whatever a handler or the service put there, no secret
        # this container has read, nor any password a URL in it quotes, goes on to SNS or the history.
        subject, message = describe_failure(kind, backup_id, redact_text(error), redact_text(cause))
        if self.settings.alert_topic_arn:
            SnsAlerts(self.settings.alert_topic_arn, self.client("sns")).publish(subject, message)
        return {"alerted": bool(self.settings.alert_topic_arn), "cause": message}

    def starter(self) -> BackupStarter:
        return BackupStarter(self.client("stepfunctions"), self.settings.state_machine_arn)

    def catalog_table(self) -> CatalogTable | None:
        """The status catalog, when this deployment has one (BACKUP_CATALOG_TABLE)."""
        if not self.settings.catalog_table:
            return None
        return CatalogTable(self.settings.catalog_table, self.settings.hostname, self.client("dynamodb"))

    def api_tokens(self) -> TokenDocument:
        """The admin API's token document, re-read at most every TOKENS_MAX_AGE_SECONDS: a revoked
        token stops working within that plus the authorizer's cache time."""
        now = time.monotonic()
        if self._tokens is None or now - self._tokens[0] > TOKENS_MAX_AGE_SECONDS:
            secret = TokenSecret(self.settings.api_tokens_secret, self.client("secretsmanager"))
            self._tokens = (now, secret.load())
        return self._tokens[1]

    def admin(self) -> AdminService:
        settings = self.settings
        table = self.catalog_table()
        if table is None:
            raise ConfigurationError("BACKUP_CATALOG_TABLE is not set")
        zone_name = getattr(settings.schedule_zone, "key", "UTC")
        return AdminService(
            storage=self.wiring.s3_storage(),
            bucket=settings.s3_bucket,
            backup_dir=settings.backup_dir,
            starter=self.starter(),
            table=table,
            enabled=settings.enabled,
            schedules=tuple(
                Schedule(kind, expression, zone_name)
                for kind, expression in (
                    ("full", settings.full_schedule),
                    ("incremental", settings.incremental_schedule),
                )
                if expression
            ),
            url_expiry_seconds=settings.url_expiry_seconds,
        )

    def lock(self) -> StorageLock:
        return StorageLock(self.storage(), LOCK_KEY, LOCK_LIFETIME_SECONDS)

    def database_url(self, database: str | None = None) -> str:
        if not self.settings.database_secret_arn:
            raise ConfigurationError("DATABASE_SECRET_ARN is not set")
        url = postgres_url_from_secret(self._secrets(self.settings.database_secret_arn))
        return url if database is None else postgres_with(url, database=database)

    def redis_url(self, db: int | None = None) -> str:
        if not self.settings.redis_secret_arn:
            raise ConfigurationError("REDIS_SECRET_ARN is not set")
        url = redis_url_from_secret(self._secrets(self.settings.redis_secret_arn))
        return url if db is None else redis_with(url, db=db)

    def endpoints(self, database: str | None = None, redis_db: int | None = None) -> Endpoints:
        """This deployment's endpoints; secrets are read only for the component that needs them."""
        settings = self.settings
        return Endpoints(
            database_url=(lambda: self.database_url(database)) if settings.database_secret_arn else "",
            redis_url=(lambda: self.redis_url(redis_db)) if settings.redis_secret_arn else "",
            files_paths=settings.files_paths,
            config_paths=settings.config_paths,
            redis_shift_dbs=redis_db is not None,
            **self.wiring.aws_sources(),
        )

    def component(self, name: str) -> Component | None:
        """The source bound for ``name``; None when this deployment does not back it up."""
        return self.wiring.source(name, self.endpoints())

    def restore_target(
        self, name: str, database: str | None = None, redis_db: int | None = None
    ) -> Component | None:
        """The restore target for ``name``; None when this deployment has none."""
        return self.wiring.restore_targets(self.endpoints(database, redis_db), [name]).get(name)

    def drill_target(self, name: str) -> Component | None:
        """The drill target for ``name``: the drill database and Redis db only where the stack names them
        (never production instead: no target), files as for a restore (a drill restores them beneath its
        scratch folder, or not at all: ``drill.select``)."""
        settings = self.settings
        database, redis_db = settings.drill_database, settings.drill_redis_db
        endpoints = Endpoints(
            database_url=(lambda: self.database_url(database))
            if database and settings.database_secret_arn
            else "",
            redis_url=(lambda: self.redis_url(redis_db))
            if redis_db is not None and settings.redis_secret_arn
            else "",
            files_paths=settings.files_paths,
            config_paths=settings.config_paths,
            redis_shift_dbs=True,
        )
        return self.wiring.restore_targets(endpoints, [name]).get(name)


def _powertools_secret(name: str) -> str:
    return str(parameters.get_secret(name, max_age=300))


_current: Dependencies | None = None


def dependencies() -> Dependencies:
    global _current
    if _current is None:
        _current = Dependencies(FunctionSettings.from_env(os.environ))
    return _current


def install(deps: Dependencies | None) -> None:
    """Tests install their own adapters (moto clients, test secrets); None resets."""
    global _current
    _current = deps
