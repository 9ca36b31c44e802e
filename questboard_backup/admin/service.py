"""What the admin API does, without HTTP: start a backup, report status, describe one set, and sign
download URLs for a set of this deployment (its bucket and host name) and nothing else.

Status answers from the catalog table (one query, plus the running execution: at most three AWS calls
whatever the number of retained sets). A set's detail and its download read its manifest from S3 (not
authenticated here: this side holds no wrapping key; ``backup.sh verify`` on the download does that).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from questboard_backup.address import MANIFEST_NAME, TIERS, SetAddress, is_backup_id, parse_s3_uri
from questboard_backup.aws.catalog_table import CatalogTable
from questboard_backup.aws.scheduler import next_run
from questboard_backup.aws.starter import BackupStarter
from questboard_backup.catalog import LATEST_POINTER, read_manifest
from questboard_backup.errors import (
    BackupError,
    BadRequestError,
    NotFoundError,
    StorageError,
    TransientStorageError,
)
from questboard_backup.manifest import ComponentEntry, Manifest
from questboard_backup.metrics import from_catalog, render
from questboard_backup.storage.s3 import S3Storage

KINDS = ("full", "incremental")
_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
MAX_PAGE = 100
DEFAULT_PAGE = 20


class ConflictError(BackupError):
    """The request cannot be done now: backups are disabled, or one is running (HTTP 409)."""

    exit_code = 3


@dataclass(frozen=True)
class Schedule:
    kind: str
    expression: str
    timezone: str


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def counts(entry: ComponentEntry) -> dict[str, int]:
    """A component's numbers from its facts: whole numbers as they are, and for a table of numbers
    (PostgreSQL's rows per table, Redis' keys per db) how many entries and their sum."""
    found: dict[str, int] = {}
    for key, value in entry.facts.items():
        if isinstance(value, int) and not isinstance(value, bool):
            found[key] = value
        elif isinstance(value, Mapping) and value and all(type(item) is int for item in value.values()):
            found[f"{key}_count"] = len(value)
            found[f"{key}_sum"] = sum(value.values())
    return found


def _objects(manifest: Manifest) -> list[dict[str, Any]]:
    """Every stored object the manifest names; a name that is not a plain file name is refused (the
    manifest is not authenticated here, and no key outside the set may be signed)."""
    objects = []
    for entry in manifest.components:
        for part in entry.stored_objects():
            if not _OBJECT_NAME.match(part.object) or part.object == MANIFEST_NAME:
                raise NotFoundError(f"backup {manifest.backup_id}: its manifest names an invalid object")
            objects.append({"name": part.object, "component": entry.name, "stored_bytes": part.stored_bytes})
    return objects


class AdminService:
    def __init__(
        self,
        *,
        storage: S3Storage,
        bucket: str,
        backup_dir: Path,
        starter: BackupStarter,
        table: CatalogTable,
        enabled: bool,
        schedules: tuple[Schedule, ...],
        url_expiry_seconds: int,
    ) -> None:
        self.storage, self.bucket, self.backup_dir = storage, bucket, backup_dir
        self.hostname = storage.hostname
        self.starter, self.table, self.enabled = starter, table, enabled
        self.schedules, self.url_expiry_seconds = schedules, url_expiry_seconds

    # POST /api/admin/backup

    def start_backup(self, kind: str, now: datetime) -> dict[str, Any]:
        if not self.enabled:
            raise ConflictError("backups are disabled")
        running = self.starter.running()
        if running is not None:
            raise ConflictError(f"backup {running.name} is running (step {running.step or 'starting'})")
        started = self.starter.start(kind, now)
        if not started.started:
            raise ConflictError(f"backup {started.backup_id} was already started")
        return {"backup_id": started.backup_id, "execution_arn": started.execution_arn}

    # GET /api/admin/backup/status

    def status(self, limit: int, next_token: str | None, tier: str | None, now: datetime) -> dict[str, Any]:
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequestError(f"limit must be between 1 and {MAX_PAGE}")
        if tier is not None and tier not in TIERS:
            raise BadRequestError(f"tier must be one of {', '.join(TIERS)}")
        page = self.table.status_page(limit, next_token, tier, now)
        running = self.starter.running()
        summary = page.summary
        tiers = summary.get("tiers") or {name: {"sets": 0, "stored_bytes": 0} for name in TIERS}
        return {
            "hostname": self.hostname,
            "enabled": self.enabled,
            "running": None
            if running is None
            else {
                "backup_id": running.name,
                "execution_arn": running.execution_arn,
                "started_at": running.started_at,
                "step": running.step,
            },
            "last_success": {kind: summary.get(f"last_success_{kind}") for kind in KINDS},
            # What the newest backups could not hold: components this deployment has no source for.
            "not_configured": sorted(
                {
                    str(name)
                    for kind in KINDS
                    for name in (summary.get(f"last_success_{kind}") or {}).get("not_configured") or []
                }
            ),
            "last_failure": {kind: summary.get(f"last_failure_{kind}") for kind in KINDS},
            "failures_total": {kind: int(summary.get(f"failures_{kind}", 0)) for kind in KINDS},
            "storage": {name: tiers.get(name, {"sets": 0, "stored_bytes": 0}) for name in TIERS},
            "next_runs": self.next_runs(now),
            "backups": page.sets,
            "next_token": page.next_token,
        }

    def metrics(self, now: datetime) -> bytes:
        """The Prometheus exposition of this host, from the same catalog the status reads."""
        summary = self.table.status_page(1, now=now).summary
        return render(from_catalog(self.hostname, summary, self.starter.running() is not None))

    def next_runs(self, now: datetime) -> dict[str, str | None]:
        runs: dict[str, str | None] = {}
        for schedule in self.schedules:
            try:
                when = next_run(schedule.expression, schedule.timezone, now) if self.enabled else None
            except (ValueError, KeyError):  # a form next_run does not read (`2#1`, `L`): unknown
                when = None
            runs[schedule.kind] = _iso(when) if when else None
        return runs

    # GET /api/admin/backup/{backupId}

    def _locate(self, backup_id: str) -> tuple[SetAddress, Manifest]:
        record = self.table.find(backup_id)
        tiers = [record["tier"]] if record else list(TIERS)
        for tier in tiers:
            address = SetAddress(self.hostname, tier, backup_id)
            try:
                return address, self._manifest(address)
            except NotFoundError:
                continue
        raise NotFoundError(f"no backup {backup_id} in s3://{self.bucket}/{self.hostname}/")

    def _manifest(self, address: SetAddress) -> Manifest:
        """The set's manifest; NotFoundError when it cannot be read for good: S3 answers 403, not
        404, for a missing key to a reader that may list only its own prefix (this side)."""
        try:
            return read_manifest(self.storage, address.set_prefix)
        except TransientStorageError:
            raise
        except (NotFoundError, StorageError):
            raise NotFoundError(f"no backup {address.backup_id} in {address.s3_uri(self.bucket)}") from None

    def detail(self, backup_id: str) -> dict[str, Any]:
        if not is_backup_id(backup_id):
            raise NotFoundError("not a backup id (questboard_full|incremental_YYYYMMDD_HHMMSS)")
        address, manifest = self._locate(backup_id)
        return {
            "backup_id": manifest.backup_id,
            "type": manifest.type,
            "tier": manifest.tier,
            "hostname": manifest.hostname,
            "started_at": manifest.started_at,
            "finished_at": manifest.finished_at,
            "stored_bytes": manifest.stored_bytes,
            "location": address.s3_uri(self.bucket),
            "components": [
                {
                    "name": entry.name,
                    "raw_bytes": entry.total_raw_bytes,
                    "stored_bytes": entry.total_stored_bytes,
                    "seconds": entry.seconds,
                    "objects": len(entry.stored_objects()),
                    "counts": counts(entry),
                }
                for entry in manifest.components
            ],
            "objects": _objects(manifest),
            "verification": {
                "published_by_workflow": self.table.find(backup_id) is not None,
                "note": "the workflow authenticated every object before publishing the set; "
                "`backup.sh verify <folder>` authenticates a download again",
            },
        }

    # POST /api/admin/backup/download-url

    def resolve(self, backup_path: str) -> SetAddress:
        """The set of this deployment ``backup_path`` names (an id, ``latest``, an ``s3://`` URI or the
        guide's local spelling under BACKUP_DIR); NotFoundError for anything else, never a guess."""
        text = backup_path.strip()
        if not text or len(text) > 1024 or "\x00" in text:
            raise NotFoundError("backupPath names no backup")
        if text == "latest":
            return self._latest()
        if is_backup_id(text):
            return self._locate(text)[0]
        if text.startswith("s3://"):
            return self._from_s3_uri(text)
        if text.startswith("/"):
            return self._from_local_path(text)
        raise NotFoundError("backupPath must be a backup id, 'latest', an s3:// URI or a BACKUP_DIR path")

    def _latest(self) -> SetAddress:
        try:
            pointer = json.loads(self.storage.read_bytes(LATEST_POINTER))
            tier, backup_id = str(pointer["tier"]), str(pointer["backup_id"])
        except TransientStorageError:
            raise
        except (NotFoundError, StorageError):
            raise NotFoundError(f"no backup in s3://{self.bucket}/{self.hostname}/ yet") from None
        except (ValueError, TypeError, KeyError):
            raise NotFoundError("the latest pointer is unreadable; name the backup by its id") from None
        return self._address(tier, backup_id)

    def _address(self, tier: str, name: str) -> SetAddress:
        for suffix in _SUFFIXES:
            name = name.removesuffix(suffix)
        if tier not in TIERS or not is_backup_id(name):
            raise NotFoundError("backupPath does not name a backup set of this deployment")
        return SetAddress(self.hostname, tier, name)

    def _set_parts(self, parts: list[str]) -> SetAddress:
        if parts and parts[-1] == MANIFEST_NAME:
            parts = parts[:-1]
        if len(parts) != 2 or any(part in ("", ".", "..") for part in parts):
            raise NotFoundError("backupPath does not name a backup set of this deployment")
        return self._address(parts[0], parts[1])

    def _from_s3_uri(self, uri: str) -> SetAddress:
        try:
            bucket, key = parse_s3_uri(uri)
        except ValueError:
            raise NotFoundError("backupPath is not a valid s3:// URI") from None
        host, _, rest = key.partition("/")
        if bucket != self.bucket or host != self.hostname:
            raise NotFoundError("backupPath names a set outside this deployment's bucket and host")
        return self._set_parts(rest.rstrip("/").split("/"))

    def _from_local_path(self, text: str) -> SetAddress:
        path = PurePosixPath(text)
        if ".." in path.parts:
            raise NotFoundError("backupPath must not contain '..'")
        try:
            relative = path.relative_to(PurePosixPath(self.backup_dir))
        except ValueError:
            raise NotFoundError(f"backupPath is outside BACKUP_DIR ({self.backup_dir})") from None
        return self._set_parts(list(relative.parts))

    def download_urls(self, backup_path: str, now: datetime) -> dict[str, Any]:
        address = self.resolve(backup_path)
        manifest = self._manifest(address)
        expiry = self.url_expiry_seconds
        names = [{"name": MANIFEST_NAME, "stored_bytes": None}] + [
            {"name": item["name"], "stored_bytes": item["stored_bytes"]} for item in _objects(manifest)
        ]
        files = [
            {**item, "url": self.storage.presigned_url(f"{address.set_prefix}/{item['name']}", expiry)}
            for item in names
        ]
        folder = address.set_prefix
        return {
            "backup_id": address.backup_id,
            "tier": address.tier,
            "location": address.s3_uri(self.bucket),
            "folder": folder,
            "expires_in": expiry,
            "expires_at": _iso(now + timedelta(seconds=expiry)),
            "files": files,
            "verify": f"scripts/backup.sh verify <download folder>/{folder}",
        }
