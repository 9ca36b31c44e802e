"""The component registry: every source the engine knows, how to bind it to its endpoint for a backup
or as a restore target, and its place in the restore order. Adding a source is one module plus one
entry here; nothing else branches on a component's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from questboard_backup.errors import ConfigurationError

if TYPE_CHECKING:
    from questboard_backup.settings import Settings
    from questboard_backup.sources.base import Component

#: A value read on first use: the Lambdas fetch URLs from Secrets Manager only for the component at hand.
Lazy = str | Callable[[], str]


@dataclass(frozen=True)
class Endpoints:
    """Where each component's data lives (a backup's sources, or a restore's targets). The front end
    fills it: the CLI from its settings and ``--to-*`` options, the Lambdas from their secrets."""

    database_url: Lazy = ""
    redis_url: Lazy = ""
    files_paths: tuple[Path, ...] = ()
    config_paths: tuple[Path, ...] = ()
    #: True when the operator named a Redis target other than the configured one: source db k then
    #: goes to db N + k, N being the db in ``redis_url``. Otherwise (in place) db k goes back to db k.
    redis_shift_dbs: bool = False
    #: Uploads kept in S3: ``s3://bucket/prefix`` (the prefix taken as a folder); "" when there are none.
    uploads_s3_uri: str = ""
    #: SSM Parameter Store paths (``/questboard/prod``) backed up recursively, and Secrets Manager secret
    #: ids (names or ARNs); a restore target maps the set's paths and ids onto these by position.
    config_ssm_paths: tuple[str, ...] = ()
    config_secret_ids: tuple[str, ...] = ()
    #: Builds the boto3 client of an AWS service (``"s3"``, ``"ssm"``, ``"secretsmanager"``) for the AWS
    #: components; None: each component builds its own from the standard AWS configuration.
    aws_client: Callable[[str], Any] | None = None

    @staticmethod
    def value(lazy: Lazy) -> str:
        return lazy() if callable(lazy) else lazy


#: Binds a component to its endpoint; None when this deployment has no such endpoint.
Binder = Callable[["Endpoints", "Settings"], "Component | None"]


@dataclass(frozen=True)
class SourceSpec:
    name: str
    #: For a backup: the configured source, or None when not configured (skipped).
    source: Binder
    #: For a restore: the target, or None when there is none (the restore refuses by name).
    target: Binder
    #: A server that answers connections: checked again after a restore.
    answers_connections: bool = False
    #: One line on what a set of this component needs from its restore target (``verify`` prints it).
    describe: Callable[[Mapping[str, Any]], str | None] = lambda facts: None
    #: The part of Quest Board it holds ("database", "cache", "uploads", "configuration"): two sources
    #: may hold one part in different deployments (uploads on a file system or in S3).
    role: str = ""
    #: True when its restore must stage and swap in one process (it keeps the staged values in
    #: memory): the CLI restores it; the workflow, whose steps are separate functions, refuses it.
    restores_in_one_process: bool = False


# Each source module is imported only when used: the redis client alone costs ~0.1 s of CLI start-up.


def _postgres(url: Lazy, settings: Settings) -> Component:
    from questboard_backup.sources.postgres.component import PostgresComponent

    return PostgresComponent(
        Endpoints.value(url),
        settings.pg_bin_dir,
        jobs=settings.pg_jobs,
        split_min_bytes=settings.pg_split_min_bytes,
    )


def _postgres_source(endpoints: Endpoints, settings: Settings) -> Component | None:
    if not endpoints.database_url:
        raise ConfigurationError("DATABASE_URL is not set")
    return _postgres(endpoints.database_url, settings)


def _postgres_target(endpoints: Endpoints, settings: Settings) -> Component | None:
    return _postgres(endpoints.database_url, settings) if endpoints.database_url else None


def _postgres_describe(facts: Mapping[str, Any]) -> str | None:
    from questboard_backup.sources.postgres.facts import describe_for_verify

    return describe_for_verify(facts)


def _redis(endpoints: Endpoints, settings: Settings) -> Component | None:
    if not endpoints.redis_url:
        return None
    from questboard_backup.sources.redis import RedisComponent

    return RedisComponent(Endpoints.value(endpoints.redis_url), shift_dbs=endpoints.redis_shift_dbs)


def _tree(name: str, paths: Callable[[Endpoints], tuple[Path, ...]], role: str) -> SourceSpec:
    def source(endpoints: Endpoints, settings: Settings) -> Component | None:
        from questboard_backup.sources.files.component import FilesComponent

        return FilesComponent(name, paths(endpoints)) if paths(endpoints) else None

    def target(endpoints: Endpoints, settings: Settings) -> Component | None:
        from questboard_backup.sources.files.component import FilesComponent

        # Restores go to the paths recorded in the manifest (or beneath the files root); the configured
        # paths let a later process (the workflow's swap or failure step) find what a stage left.
        return FilesComponent(name, paths(endpoints))

    return SourceSpec(name, source, target, role=role)


def _s3uploads(endpoints: Endpoints, settings: Settings) -> Component | None:
    if not endpoints.uploads_s3_uri:
        return None
    from questboard_backup.sources.s3uploads import S3UploadsComponent

    return S3UploadsComponent(endpoints.uploads_s3_uri, endpoints.aws_client)


def _ssmconfig(endpoints: Endpoints, settings: Settings) -> Component | None:
    if not endpoints.config_ssm_paths and not endpoints.config_secret_ids:
        return None
    from questboard_backup.sources.ssmconfig import SsmConfigComponent

    return SsmConfigComponent(endpoints.config_ssm_paths, endpoints.config_secret_ids, endpoints.aws_client)


_SPECS: dict[str, SourceSpec] = {}


def register(spec: SourceSpec) -> None:
    """Add a source (restored after those registered before it)."""
    if spec.name in _SPECS:
        raise ValueError(f"component {spec.name!r} is already registered")
    _SPECS[spec.name] = spec


def unregister(name: str) -> None:
    _SPECS.pop(name, None)


def names() -> tuple[str, ...]:
    """Every known component, in restore order."""
    return tuple(_SPECS)


def spec(name: str) -> SourceSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ConfigurationError(f"unknown component {name!r} (known: {', '.join(_SPECS)})") from None


def not_configured(skipped: Iterable[str], backed_up: Iterable[str]) -> list[str]:
    """The parts of Quest Board (roles) that no source of this deployment holds: those of the skipped
    components that no backed-up component holds either (uploads in S3 make up for none on disk)."""
    held = {spec(name).role for name in backed_up if name in _SPECS}
    missing = [spec(name).role for name in skipped if name in _SPECS and spec(name).role not in held]
    return list(dict.fromkeys(missing))


def restore_rank(name: str) -> int:
    return names().index(name) if name in _SPECS else len(_SPECS)


register(
    SourceSpec(
        "postgres",
        _postgres_source,
        _postgres_target,
        answers_connections=True,
        describe=_postgres_describe,
        role="database",
    )
)
register(SourceSpec("redis", _redis, _redis, answers_connections=True, role="cache"))
register(_tree("files", lambda endpoints: endpoints.files_paths, "uploads"))
register(_tree("config", lambda endpoints: endpoints.config_paths, "configuration"))
register(SourceSpec("s3uploads", _s3uploads, _s3uploads, role="uploads"))
register(SourceSpec("ssmconfig", _ssmconfig, _ssmconfig, role="configuration", restores_in_one_process=True))
