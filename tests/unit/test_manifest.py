"""The manifest is authenticated: any change to it, or a wrong key, is detected."""

from __future__ import annotations

import json

import pytest

from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.errors import IntegrityError
from questboard_backup.manifest import ComponentEntry, Manifest, open_manifest, parse_manifest, seal_manifest

WRAPPER = PassphraseKeyWrapper("correct horse battery staple")
BACKUP_ID = "questboard_full_20240101_020000"


def sealed() -> bytes:
    data_key, wrapped = WRAPPER.generate(BACKUP_ID)
    manifest = Manifest(
        backup_id=BACKUP_ID,
        type="full",
        tier="monthly",
        hostname="prod",
        started_at="2024-01-01T02:00:00Z",
        finished_at="2024-01-01T02:03:00Z",
        tool_version="0.1.0",
        key=wrapped,
        components=(
            ComponentEntry(
                "postgres", "postgres.dump.zst.enc", 100, 80, "ab" * 32, 1.5, {"tables": {"public.users": 3}}
            ),
        ),
    )
    return seal_manifest(manifest, data_key)


def test_a_sealed_manifest_opens_with_the_right_key() -> None:
    manifest, data_key = open_manifest(sealed(), WRAPPER, expected_id=BACKUP_ID)
    assert manifest.component("postgres").facts == {"tables": {"public.users": 3}}
    assert len(data_key) == 32


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["manifest"]["components"][0].update(sha256="cd" * 32),
        lambda d: d["manifest"]["components"][0]["facts"]["tables"].update({"public.users": 4}),
        lambda d: d["manifest"].update(tier="daily"),
        lambda d: d["manifest"].update(finished_at="2024-01-01T02:04:00Z"),
        lambda d: d.update(hmac_sha256="00" * 32),
    ],
)
def test_any_change_to_a_manifest_is_detected(tamper: object) -> None:
    document = json.loads(sealed())
    tamper(document)  # type: ignore[operator]
    with pytest.raises(IntegrityError, match=r"authentication|tampered"):
        open_manifest(json.dumps(document).encode(), WRAPPER)


def test_a_manifest_under_another_backups_name_is_refused() -> None:
    with pytest.raises(IntegrityError, match="belongs to"):
        open_manifest(sealed(), WRAPPER, expected_id="questboard_full_20240102_020000")


def test_a_wrong_key_cannot_open_a_manifest() -> None:
    with pytest.raises(IntegrityError, match="BACKUP_ENCRYPTION_KEY"):
        open_manifest(sealed(), PassphraseKeyWrapper("another passphrase, long enough"))


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[]", b'{"manifest": {}, "hmac_sha256": "x"}', b"\xff\xfe"]
)
def test_garbage_is_reported_as_a_malformed_manifest(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        parse_manifest(data)


def test_a_flipped_byte_anywhere_in_the_stored_manifest_is_detected() -> None:
    data = sealed()
    failures = 0
    for position in range(0, len(data), 7):
        corrupted = bytearray(data)
        corrupted[position] ^= 0x01
        try:
            open_manifest(bytes(corrupted), WRAPPER, expected_id=BACKUP_ID)
        except IntegrityError:
            failures += 1
        else:
            # Only whitespace/formatting bytes may change harmlessly; content bytes may not.
            assert chr(data[position]).isspace() or chr(corrupted[position]).isspace(), position
    assert failures > len(data) // 14
