"""Local retention: prune backup sets past their tier's age, never the newest authentic full backup
(a forged newer manifest cannot make the real one look expendable).

Tiers keep incremental 1 day, daily 7, weekly 30, monthly 365 (the seed's policy); on local disk no
set outlives BACKUP_RETENTION_DAYS either, since long-term copies belong in S3 (lifecycle rules).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from questboard_backup.catalog import checked, list_backups
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.manifest import parse_time
from questboard_backup.storage.base import Storage

logger = logging.getLogger(__name__)

TIER_RETENTION_DAYS = {"incremental": 1, "daily": 7, "weekly": 30, "monthly": 365}


def expired_sets(
    storage: Storage, now: datetime, wrapper: KeyWrapper, max_days: int | None = None
) -> list[str]:
    """Prefixes of sets past their retention; the newest full backup whose manifest authenticates is
    always kept (newer ones that do not, forged or damaged, are skipped for that and logged)."""
    entries = [entry for entry in list_backups(storage) if entry.manifest is not None]
    newest_full = None
    for entry in entries:
        if entry.manifest is not None and entry.manifest.type == "full":
            found = checked(entry, wrapper)
            if found.authenticated:
                newest_full = entry.set_prefix
                break
            logger.warning("not the newest full backup location=%s problem=%s", entry.location, found.problem)
    expired = []
    for entry in entries:
        assert entry.manifest is not None
        days = TIER_RETENTION_DAYS[entry.manifest.tier]
        if max_days is not None:
            days = min(days, max_days)
        if entry.set_prefix != newest_full and now - parse_time(entry.manifest.finished_at) > timedelta(
            days=days
        ):
            expired.append(entry.set_prefix)
    return expired


def prune(storage: Storage, now: datetime, wrapper: KeyWrapper, max_days: int | None = None) -> list[str]:
    removed = expired_sets(storage, now, wrapper, max_days)
    for prefix in removed:
        storage.delete_prefix(prefix)
        logger.info("expired backup removed location=%s", storage.uri(prefix))
    return removed
