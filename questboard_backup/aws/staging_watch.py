"""Staged objects a run left behind: what lies under ``{hostname}/temp/`` longer than a day.

A backup stages its set under ``temp/`` and moves it to its tier within the run (at most the state
machine's 2 hours); the failure path deletes what a failed run staged. Anything there after a day was
left by a run that was killed, or whose cleanup failed: the stack counts it every hour and alarms
(lifecycle expiry removes it a day later).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from questboard_backup.address import STAGING
from questboard_backup.storage.s3 import S3Storage

MAX_AGE = timedelta(days=1)


@dataclass(frozen=True)
class StaleStaging:
    objects: int
    stored_bytes: int
    oldest: datetime | None


def stale_staging(storage: S3Storage, now: datetime, max_age: timedelta = MAX_AGE) -> StaleStaging:
    objects = stored = 0
    oldest: datetime | None = None
    for _key, size, modified in storage.list_ages(STAGING):
        if now - modified > max_age:
            objects += 1
            stored += size
            oldest = modified if oldest is None or modified < oldest else oldest
    return StaleStaging(objects, stored, oldest)
