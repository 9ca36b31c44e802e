"""What the restore handlers share: the catalog entry and targets a restore state names."""

from __future__ import annotations

from pathlib import Path

from lambdas.dependencies import Dependencies
from lambdas.models import RestoreState
from questboard_backup.catalog import CatalogEntry, read_manifest
from questboard_backup.errors import ConfigurationError
from questboard_backup.sources.base import Component, RestoreOptions
from questboard_backup.storage.s3 import S3Storage


def entry_for(deps: Dependencies, state: RestoreState) -> CatalogEntry:
    storage = S3Storage(state.bucket, state.hostname, deps.client("s3"))
    return CatalogEntry(storage, state.set_prefix, read_manifest(storage, state.set_prefix))


def target_for(deps: Dependencies, state: RestoreState, name: str) -> Component:
    """The target of ``name``; refused by name when this deployment has none (never another's)."""
    component = deps.restore_target(name, database=state.targets.database, redis_db=state.targets.redis_db)
    if component is None:
        raise ConfigurationError(f"no restore target configured for {name} in this deployment")
    return component


def options_for(state: RestoreState) -> RestoreOptions:
    root = Path(state.targets.files_root) if state.targets.files_root else None
    return RestoreOptions(timestamp=state.timestamp, files_root=root)
