"""A backup set's address: its id (format, parsing), type, tier and the tier rule, host name, the final
and staging prefixes, object and part names, and the stream context. Every other module asks here.

Keys inside a storage are ``{tier}/{backup_id}/{object}`` (S3 puts ``{hostname}/`` in front);
``temp/{backup_id}/`` holds a set being written where the storage stages it apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from questboard_backup.errors import ConfigurationError

KINDS = ("full", "incremental")
TIERS = ("daily", "weekly", "monthly", "incremental")
#: Where a set being written is staged when its storage stages apart (local disk; the workflow's S3).
STAGING = "temp"
MANIFEST_NAME = "manifest.json"
#: What ``timestamp()`` writes (``YYYYMMDD_HHMMSS``): ids, and the names of restores' staging and copies.
TIMESTAMP_PATTERN = r"\d{8}_\d{6}"
#: The id's pattern, for validators that take a pattern string (pydantic); ``BackupId.parse`` uses it.
ID_PATTERN = rf"^questboard_(full|incremental)_({TIMESTAMP_PATTERN})$"
_ID = re.compile(ID_PATTERN)
_ID_TIME = "%Y%m%d_%H%M%S"
#: Object names of the components whose streams are not tar archives; the others are ``{name}.tar.zst.enc``.
_OBJECT_NAMES = {"postgres": "postgres.dump.zst.enc", "redis": "redis.rdbx.zst.enc"}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_backup_id(text: str) -> bool:
    """``text`` has the id's form and names a real time (``..._20240231_...`` does not)."""
    match = _ID.match(text)
    if match is None:
        return False
    try:
        datetime.strptime(match.group(2), _ID_TIME)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class BackupId:
    """``questboard_{kind}_{YYYYMMDD_HHMMSS}``; the time is UTC, whatever the schedule's time zone."""

    kind: str
    moment: datetime

    @classmethod
    def at(cls, kind: str, moment: datetime) -> BackupId:
        if kind not in KINDS:
            raise ConfigurationError(f"backup type must be one of {', '.join(KINDS)}, not {kind!r}")
        return cls(kind, moment.astimezone(UTC).replace(microsecond=0))

    @classmethod
    def parse(cls, text: str) -> BackupId:
        match = _ID.match(text)
        if match is None or not is_backup_id(text):
            raise ConfigurationError(
                f"{text!r} is not a backup id (questboard_full|incremental_YYYYMMDD_HHMMSS)"
            )
        return cls(match.group(1), datetime.strptime(match.group(2), _ID_TIME).replace(tzinfo=UTC))

    def __str__(self) -> str:
        return f"questboard_{self.kind}_{self.moment.astimezone(UTC):{_ID_TIME}}"


def sort_key(backup_id: str) -> tuple[str, str]:
    """Orders ids by their time, full and incremental interleaved (ties: by the id)."""
    match = _ID.match(backup_id)
    return (match.group(2) if match else "", backup_id)


def timestamp(moment: datetime) -> str:
    """The UTC ``YYYYMMDD_HHMMSS`` that names a run's log and its rollback copies."""
    return f"{moment.astimezone(UTC):{_ID_TIME}}"


def parse_timestamp(text: str) -> datetime:
    """The UTC moment a ``timestamp`` names (a restore's or a drill's)."""
    return datetime.strptime(text, _ID_TIME).replace(tzinfo=UTC)


def zone(name: str) -> tzinfo:
    """An IANA time zone (``BACKUP_TIMEZONE``); ConfigurationError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"BACKUP_TIMEZONE {name!r} is not an IANA time zone name") from None


def tier_for(kind: str, moment: datetime, schedule_zone: tzinfo) -> str:
    """Incrementals keep 24 h; a full on the 1st of the month is monthly, on a Sunday weekly, else daily,
    by the calendar of the schedule's time zone (the 02:00 Tokyo full on the 1st is 17:00 UTC the day
    before)."""
    if kind == "incremental":
        return "incremental"
    day = moment.astimezone(schedule_zone)
    if day.day == 1:
        return "monthly"
    if day.weekday() == 6:
        return "weekly"
    return "daily"


def object_name(component: str, part: int = 0) -> str:
    """``postgres.dump.zst.enc``; a further part is ``postgres.part1.dump.zst.enc``."""
    name = _OBJECT_NAMES.get(component, f"{component}.tar.zst.enc")
    if part == 0:
        return name
    stem, rest = name.split(".", 1)
    return f"{stem}.part{part}.{rest}"


def stream_context(backup_id: str, component: str, part: int = 0) -> str:
    """Binds a stream to its backup, component and part (part of the key derivation), so no stored
    object can stand in for another."""
    return f"{backup_id}/{component}" if part == 0 else f"{backup_id}/{component}/part{part}"


@dataclass(frozen=True)
class SetAddress:
    """Where one backup set lives: host, tier and id; keys are relative to the host's storage root."""

    hostname: str
    tier: str
    backup_id: str

    @property
    def set_prefix(self) -> str:
        """The final prefix ``{tier}/{backup_id}``."""
        return f"{self.tier}/{self.backup_id}"

    def staging_prefix(self, apart: bool) -> str:
        """Where the set is written: ``temp/{id}`` for a storage that stages apart, else in place."""
        return f"{STAGING}/{self.backup_id}" if apart else self.set_prefix

    def staging_tag(self, apart: bool) -> str:
        """The tier label of staged objects: ``temp`` expires them by the staging rule until promoted."""
        return STAGING if apart else self.tier

    @property
    def manifest_key(self) -> str:
        return f"{self.set_prefix}/{MANIFEST_NAME}"

    def key(self, name: str) -> str:
        return f"{self.set_prefix}/{name}"

    def s3_uri(self, bucket: str) -> str:
        return f"s3://{bucket}/{self.hostname}/{self.set_prefix}"

    @classmethod
    def from_set_prefix(cls, hostname: str, set_prefix: str) -> SetAddress | None:
        """``daily/questboard_full_...`` -> its address; None when it is not a set prefix."""
        parts = set_prefix.strip("/").split("/")
        if len(parts) == 2 and parts[0] in TIERS and is_backup_id(parts[1]):
            return cls(hostname, parts[0], parts[1])
        return None

    @classmethod
    def from_manifest_key(cls, hostname: str, key: str) -> SetAddress | None:
        """``daily/questboard_full_.../manifest.json`` -> its address; None for any other key."""
        prefix, _, name = key.rpartition("/")
        return cls.from_set_prefix(hostname, prefix) if name == MANIFEST_NAME else None


def staged_set_prefix(key: str) -> str | None:
    """The ``{tier or temp}/{id}`` a key of a set (complete or not) lies under; None otherwise."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] in (*TIERS, STAGING):
        return f"{parts[0]}/{parts[1]}"
    return None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty. ValueError otherwise."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"not a valid S3 bucket name in {uri!r}")
    return bucket, key
