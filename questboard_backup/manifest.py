"""The manifest: the truth of a backup set, written last, authenticated with a key only its owner has.

It records what was backed up (format version, id, type, tier, times, hostname, source versions), each
component's stored object, sizes and SHA-256, cheap verification facts, and the wrapped data key.
An HMAC-SHA256 under a subkey of the data key covers everything, so a tampered manifest is detected
once the data key has been unwrapped (which itself authenticates the backup id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from questboard_backup.address import TIERS, SetAddress, is_backup_id
from questboard_backup.crypto.keys import KeyWrapper, WrappedKey, derive_subkey
from questboard_backup.crypto.stream import DEFAULT_CHUNK_SIZE
from questboard_backup.errors import IntegrityError

FORMAT_VERSION = 3
#: Version 1 had no ``parts``; it reads as a set whose components are one object each. Version 2 had no
#: PostgreSQL copy parts (facts ``copy_parts``): a version 2 reader refuses version 3 up front rather
#: than restore without them and fail at the row counts.
READABLE_VERSIONS = (1, 2, 3)
CIPHER = "AES-256-GCM STREAM, HKDF-SHA256 per component, zstd inside"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
OBJECT_NAME = re.compile(r"[a-z][a-z0-9]*(\.[a-z0-9]+)*")


def format_time(moment: datetime) -> str:
    """How manifests (and lock files) write a time: UTC, to the second."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class PartEntry:
    """A further stored object of a component (PostgreSQL dumps large tables on parallel streams)."""

    object: str
    raw_bytes: int
    stored_bytes: int
    sha256: str


@dataclass(frozen=True)
class ComponentEntry:
    """One component: its first object (``object`` and the sizes beside it) and any further ``parts``."""

    name: str
    object: str
    raw_bytes: int
    stored_bytes: int
    sha256: str
    seconds: float
    facts: dict[str, Any]
    parts: tuple[PartEntry, ...] = ()

    def stored_objects(self) -> tuple[PartEntry, ...]:
        """Every stored object of the component, the first one (part 0) first."""
        return (PartEntry(self.object, self.raw_bytes, self.stored_bytes, self.sha256), *self.parts)

    @property
    def total_stored_bytes(self) -> int:
        return sum(part.stored_bytes for part in self.stored_objects())

    @property
    def total_raw_bytes(self) -> int:
        return sum(part.raw_bytes for part in self.stored_objects())

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ComponentEntry:
        """From the JSON form (a manifest, a workflow step's output); raises KeyError or TypeError."""
        parts = body.get("parts", ())
        if not isinstance(parts, (list, tuple)) or not all(isinstance(part, dict) for part in parts):
            raise TypeError("parts must be a list of objects")
        return cls(**{**body, "parts": tuple(PartEntry(**part) for part in parts)})


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    type: str
    tier: str
    hostname: str
    started_at: str
    finished_at: str
    tool_version: str
    key: WrappedKey
    components: tuple[ComponentEntry, ...]
    format_version: int = FORMAT_VERSION
    cipher: str = CIPHER
    chunk_size: int = DEFAULT_CHUNK_SIZE
    extra: dict[str, Any] = field(default_factory=dict)

    def component(self, name: str) -> ComponentEntry:
        for entry in self.components:
            if entry.name == name:
                return entry
        raise KeyError(name)

    @property
    def stored_bytes(self) -> int:
        return sum(entry.total_stored_bytes for entry in self.components)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["components"] = [asdict(entry) for entry in self.components]
        return body


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _mac(data_key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(derive_subkey(data_key, "manifest/v1"), _canonical(body), hashlib.sha256).hexdigest()


def seal_manifest(manifest: Manifest, data_key: bytes) -> bytes:
    """The manifest's stored bytes: the body and its MAC."""
    body = manifest.to_dict()
    document = {"manifest": body, "hmac_sha256": _mac(data_key, body)}
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise IntegrityError(f"manifest is malformed: {what}")


def parse_manifest(data: bytes) -> tuple[Manifest, dict[str, Any], str]:
    """Parse without authenticating (for listings): the manifest, its raw body and its MAC."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError("manifest is not valid JSON (corrupted or not a manifest)") from None
    _require(isinstance(document, dict), "not an object")
    body, mac = document.get("manifest"), document.get("hmac_sha256")
    _require(isinstance(body, dict) and isinstance(mac, str), "missing body or MAC")
    assert isinstance(body, dict) and isinstance(mac, str)
    version = body.get("format_version")
    if version not in READABLE_VERSIONS:
        raise IntegrityError(
            f"manifest format version {version!r} is not supported (this tool reads {READABLE_VERSIONS})"
        )
    try:
        components = tuple(ComponentEntry.from_dict(entry) for entry in body["components"])
        fields = {k: v for k, v in body.items() if k != "components"}
        manifest = Manifest(components=components, **fields)
    except (KeyError, TypeError):
        raise IntegrityError("manifest is malformed: unexpected or missing fields") from None
    _require(is_backup_id(manifest.backup_id), f"bad backup id {manifest.backup_id!r}")
    _require(manifest.tier in TIERS, f"bad tier {manifest.tier!r}")
    for entry in manifest.components:
        _require(version >= 2 or not entry.parts, "parts in a version 1 manifest")
        for part in entry.stored_objects():
            _require(OBJECT_NAME.fullmatch(part.object) is not None, f"bad object {part.object!r}")
        names = [part.object for part in entry.stored_objects()]
        _require(len(set(names)) == len(names), f"component {entry.name} names an object twice")
    return manifest, body, mac


def check_address(manifest: Manifest, address: SetAddress) -> None:
    """IntegrityError unless the manifest names the host, tier and id of where it sits (``address``; a
    storage of one host's own, local disk, has no host in its keys and names none)."""
    claimed = SetAddress(manifest.hostname if address.hostname else "", manifest.tier, manifest.backup_id)
    if claimed != address:
        where = f"{address.hostname}/{address.set_prefix}" if address.hostname else address.set_prefix
        says = f"{manifest.hostname}/{claimed.set_prefix}" if address.hostname else claimed.set_prefix
        raise IntegrityError(f"manifest at {where} names {says}: moved or copied from another set, refused")


def open_manifest(
    data: bytes, wrapper: KeyWrapper, expected_id: str | None = None, at: SetAddress | None = None
) -> tuple[Manifest, bytes]:
    """Parse and authenticate a manifest; return it with the unwrapped data key. ``at``: where the
    manifest was found, which it must name (``check_address``)."""
    manifest, body, mac = parse_manifest(data)
    if at is not None:
        check_address(manifest, at)
    if expected_id is not None and manifest.backup_id != expected_id:
        raise IntegrityError(
            f"manifest belongs to {manifest.backup_id}, not to {expected_id} (moved or tampered)"
        )
    data_key = wrapper.unwrap(manifest.key, manifest.backup_id)
    if not hmac.compare_digest(_mac(data_key, body), mac):
        raise IntegrityError(f"manifest of {manifest.backup_id} failed authentication (tampered)")
    return manifest, data_key
