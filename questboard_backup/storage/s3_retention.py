"""S3 Object Lock retention: which objects a locked bucket protects, and until when."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from questboard_backup.errors import ConfigurationError

LOCK_MODES = ("", "GOVERNANCE", "COMPLIANCE")


class ObjectLockRetention:
    """A lock mode ('' for none) and each tier's retention in days."""

    def __init__(self, mode: str, retention_days: Mapping[str, int] | None) -> None:
        if mode not in LOCK_MODES or (mode and not retention_days):
            raise ConfigurationError(f"S3 Object Lock mode must be one of {LOCK_MODES} with tier retentions")
        self.mode = mode
        self._days = dict(retention_days or {})

    def put_args(self, tier: str | None) -> dict[str, str]:
        """Object Lock retention for an object written to its tier's place: its tier's days from now,
        so no credential can erase it sooner (governance: none without bypass rights; compliance: none
        at all). Staged objects (tier ``temp``), locks and pointers get none: they must stay deletable."""
        days = self._days.get(tier or "")
        if not self.mode or days is None:
            return {}
        until = datetime.now(UTC) + timedelta(days=days)
        return {
            "ObjectLockMode": self.mode,
            "ObjectLockRetainUntilDate": f"{until:%Y-%m-%dT%H:%M:%SZ}",
        }
