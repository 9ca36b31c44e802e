"""Restore drills: the guide's monthly restore test, run as a job that measures the RTO.

A drill restores a set (``latest`` by default: the point a disaster restore would use; incrementals
here are self-contained sets, so the latest chain is that one set) into drill targets, never the
production ones: a separate PostgreSQL database (on the same server or another), Redis dbs of a spare
instance or spare dbs of the same one, and a scratch folder for the files. It then

1. restores through the engine's ordinary restore (staged, verified against the manifest's counts,
   swapped in: everything a real restore does, so its time is the real one),
2. runs the operator's SQL smoke checks in the drill database (read-only, each must answer true),
3. records the wall time from start to verified: the measured RTO for this data size,
4. drops the drill database, flushes the drill Redis dbs and removes the scratch folder, whatever the
   outcome (a failing drill is cleaned up too).

A component is drilled only when it has a drill target; the others are named in the report as not
drilled (never restored into production instead). Before anything is restored, every drill target is
checked against production and refused when it resolves to it (``guard``).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from questboard_backup.catalog import CatalogEntry
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.errors import BackupError, ConfigurationError
from questboard_backup.manifest import Manifest
from questboard_backup.restore import load_checked_manifest, run_restore
from questboard_backup.sources.base import Component, RestoreOptions

logger = logging.getLogger(__name__)

#: The guide's recovery time objective: Quest Board running again within 1 hour of a disaster.
DEFAULT_RTO_TARGET_SECONDS = 3600
#: The drill's scratch folder beneath the configured files root, one per drill (removed after it).
FOLDER_PREFIX = "drill-"


@runtime_checkable
class DrillTarget(Protocol):
    """A restore target that can serve a drill: it can tell whether it is production, and discard
    what a restore put there."""

    def drillable(self, options: RestoreOptions) -> bool:
        """Whether this target serves a drill with ``options`` (files: only beneath a files root)."""

    def drill_guard(
        self, production: Component | None, facts: Mapping[str, Any], options: RestoreOptions
    ) -> None:
        """Raise ConfigurationError (one line, naming both) when restoring here would touch production."""

    def discard(self, facts: Mapping[str, Any], options: RestoreOptions) -> list[str]:
        """Remove what a restore of ``facts`` with ``options`` put here; one line per thing removed."""


@runtime_checkable
class SqlChecked(Protocol):
    """A target that runs the operator's SQL smoke checks (PostgreSQL)."""

    def run_sql_checks(self, queries: Sequence[str]) -> list[str]:
        """Run each query read-only; raise RestoreVerificationError naming the first that is not true."""


@dataclass(frozen=True)
class DrillPlan:
    """What a drill does beyond a restore: its SQL checks and the RTO it is held to."""

    checks: tuple[str, ...] = ()
    rto_target_seconds: float = DEFAULT_RTO_TARGET_SECONDS


@dataclass
class DrillReport:
    backup_id: str
    drilled: list[str]
    #: Components of the set that have no drill target here (not restored at all).
    not_drilled: list[str]
    seconds: float = 0.0
    checks: list[str] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)
    components: dict[str, Any] = field(default_factory=dict)
    rto_target_seconds: float = DEFAULT_RTO_TARGET_SECONDS

    @property
    def over_target(self) -> bool:
        return self.seconds > self.rto_target_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "drilled": self.drilled,
            "not_drilled": self.not_drilled,
            "rto_seconds": round(self.seconds, 3),
            "rto_target_seconds": self.rto_target_seconds,
            "over_target": self.over_target,
            "checks": self.checks,
            "cleanup": self.cleanup,
            "components": self.components,
        }


def parse_checks(text: str) -> tuple[str, ...]:
    """SQL checks, one per line; blank lines and lines starting with ``#`` or ``--`` are skipped."""
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith(("#", "--")))


def select(
    manifest: Manifest, targets: Mapping[str, Component | None], options: RestoreOptions
) -> tuple[list[str], list[str]]:
    """The set's components that have a drill target here (in the manifest's order), and the rest: a
    component whose target cannot serve drills is never drilled (nor restored anywhere)."""

    def serves(name: str) -> bool:
        target = targets.get(name)
        return isinstance(target, DrillTarget) and target.drillable(options)

    drilled = [c.name for c in manifest.components if serves(c.name)]
    not_drilled = [c.name for c in manifest.components if not serves(c.name)]
    if not drilled:
        raise ConfigurationError(
            f"no drill target is configured for any component of {manifest.backup_id} "
            f"({', '.join(not_drilled) or 'none'}): set BACKUP_DRILL_DATABASE, BACKUP_DRILL_REDIS_URL "
            "or BACKUP_DRILL_FILES_ROOT (stack: drillDatabase, drillRedisDb, drillFilesRoot)"
        )
    return drilled, not_drilled


def guard(
    manifest: Manifest,
    targets: Mapping[str, Component],
    production: Mapping[str, Component | None],
    options: RestoreOptions,
) -> None:
    """Refuse, before anything is restored, a drill target that resolves to production, or one that
    cannot be cleaned up after the drill."""
    facts = {c.name: c.facts for c in manifest.components}
    for name, target in targets.items():
        if not isinstance(target, DrillTarget):
            raise ConfigurationError(
                f"{name} cannot be drilled: its target cannot be cleaned up after a drill"
            )
        target.drill_guard(production.get(name), facts.get(name, {}), options)


def run_checks(targets: Mapping[str, Component], checks: Sequence[str]) -> list[str]:
    """The SQL smoke checks, in the drilled database(s); RestoreVerificationError on the first failing."""
    if not checks:
        return []
    checked = [target for target in targets.values() if isinstance(target, SqlChecked)]
    if not checked:
        raise ConfigurationError("SQL checks are configured but PostgreSQL is not drilled")
    results: list[str] = []
    for target in checked:
        results += target.run_sql_checks(checks)
    return results


def discard_all(
    manifest: Manifest | None, targets: Mapping[str, Component], options: RestoreOptions
) -> list[str]:
    """Clean every drill target (never raises: what fails is a line of the report, and logged). The
    manifest must be authenticated (its facts say which Redis dbs to flush); without one, what needs
    no facts is cleaned (the drill database, the scratch folder)."""
    facts = {c.name: c.facts for c in manifest.components} if manifest is not None else {}
    lines: list[str] = []
    for name, target in targets.items():
        if not isinstance(target, DrillTarget):
            continue
        try:
            lines += [f"{name}: {line}" for line in target.discard(facts.get(name, {}), options)]
        except (BackupError, OSError) as error:
            logger.error("drill target not cleaned component=%s error=%s", name, error)
            lines.append(f"{name}: NOT cleaned: {error}")
    if options.files_root is not None and options.files_root.name.startswith(FOLDER_PREFIX):
        if options.files_root.exists():
            shutil.rmtree(options.files_root, ignore_errors=True)
        if options.files_root.exists():
            lines.append(f"files: NOT removed: {options.files_root}")
        else:
            lines.append(f"files: removed {options.files_root}")
    return lines


def scratch_folder(root: Path, timestamp: str) -> Path:
    """The drill's own folder beneath the files root (made by the restore, removed by ``discard_all``)."""
    return root / f"{FOLDER_PREFIX}{timestamp}"


def run_drill(
    entry: CatalogEntry,
    wrapper: KeyWrapper,
    targets: Mapping[str, Component | None],
    production: Mapping[str, Component | None],
    options: RestoreOptions,
    plan: DrillPlan,
) -> DrillReport:
    """One drill of ``entry`` into ``targets`` (component name -> drill target or None), all of it:
    guard, restore, checks, cleanup. Raises the drill's failure after cleaning up."""
    started = time.monotonic()
    manifest, _ = load_checked_manifest(entry, wrapper)
    drilled, not_drilled = select(manifest, targets, options)
    chosen = {name: target for name, target in targets.items() if name in drilled and target is not None}
    guard(manifest, chosen, production, options)
    report = DrillReport(manifest.backup_id, drilled, not_drilled, rto_target_seconds=plan.rto_target_seconds)
    try:
        restored = run_restore(entry, wrapper, chosen, options, only=drilled)
        report.components = restored["components"]
        report.checks = run_checks(chosen, plan.checks)
        report.seconds = time.monotonic() - started
    finally:
        report.cleanup = discard_all(manifest, chosen, options)
    logger.info(
        "restore drill verified backup_id=%s seconds=%.1f components=%s",
        manifest.backup_id,
        report.seconds,
        ",".join(drilled),
    )
    return report


def over_target_message(report: DrillReport) -> str:
    return (
        f"the drill of {report.backup_id} took {report.seconds:.0f} s from start to verified, over the "
        f"{report.rto_target_seconds:.0f} s RTO target"
    )
