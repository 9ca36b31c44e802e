"""What the restore handlers share: the catalog entry and targets a restore state names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lambdas.dependencies import Dependencies, dependencies
from lambdas.models import RestoreState
from lambdas.observability import logger
from questboard_backup.aws.catalog_table import CatalogTable
from questboard_backup.catalog import CatalogEntry, read_manifest
from questboard_backup.drill import DrillTarget
from questboard_backup.errors import BackupError, ConfigurationError
from questboard_backup.sources import registry
from questboard_backup.sources.base import Component, RestoreOptions
from questboard_backup.storage.s3 import S3Storage


def entry_for(deps: Dependencies, state: RestoreState) -> CatalogEntry:
    storage = S3Storage(state.bucket, state.hostname, deps.client("s3"))
    return CatalogEntry(storage, state.set_prefix, read_manifest(storage, state.set_prefix))


def bound_target(deps: Dependencies, state: RestoreState, name: str) -> Component | None:
    """The target of ``name`` for this restore: the request's, or in a drill the stack's drill target."""
    if state.drill:
        return deps.drill_target(name)
    return deps.restore_target(name, database=state.targets.database, redis_db=state.targets.redis_db)


def target_for(deps: Dependencies, state: RestoreState, name: str) -> Component:
    """The target of ``name``; refused by name when this deployment has none (never another's)."""
    component = bound_target(deps, state, name)
    if component is None:
        what = "drill target" if state.drill else "restore target"
        raise ConfigurationError(f"no {what} configured for {name} in this deployment")
    return component


def targets_for(deps: Dependencies, state: RestoreState, names: Sequence[str]) -> dict[str, Component]:
    """The targets of ``names``, in restore order; refused by name when one has none."""
    ordered = sorted(names, key=registry.restore_rank)
    return {name: target_for(deps, state, name) for name in ordered}


def configured_targets(deps: Dependencies, state: RestoreState) -> dict[str, Component]:
    """Every target this deployment has among the restore's components (all, when none were chosen);
    in a drill, only those that serve it."""
    wanted = state.only or registry.names()
    found = {}
    for name in sorted(wanted, key=registry.restore_rank):
        if registry.spec(name).restores_in_one_process:
            continue  # the workflow never restores it (Validate refuses it): nothing to undo here
        target = bound_target(deps, state, name)
        if target is None:
            continue
        if state.drill and not (isinstance(target, DrillTarget) and target.drillable(options_for(state))):
            continue
        found[name] = target
    return found


def drill_production(deps: Dependencies) -> dict[str, Component | None]:
    """Production's targets, which a drill's must not resolve to."""
    return {name: deps.restore_target(name) for name in registry.names()}


def options_for(state: RestoreState) -> RestoreOptions:
    root = Path(state.targets.files_root) if state.targets.files_root else None
    return RestoreOptions(timestamp=state.timestamp, files_root=root)


def record_restore(ok: bool) -> None:
    """The restore's outcome in the status catalog (the admin API's metrics); never the run's outcome."""
    _record("restore", lambda table: table.record_restore(ok))


def record_drill(ok: bool, seconds: float) -> None:
    """A drill's outcome (and measured RTO) in the status catalog; never the drill's outcome."""
    _record("drill", lambda table: table.record_drill(ok, seconds))


def _record(what: str, call: Callable[[CatalogTable], None]) -> None:
    table = dependencies().catalog_table()
    if table is None:
        return
    try:
        call(table)
    except BackupError as error:
        logger.error(f"the status catalog did not record the {what}", extra={"problem": str(error)})
