"""The manifest is authenticated: any change to it, or a wrong key, is detected."""

from __future__ import annotations

import json
from typing import Any

import pytest

from questboard_backup.address import SetAddress
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.errors import IntegrityError
from questboard_backup.manifest import (
    FORMAT_VERSION,
    ComponentEntry,
    Manifest,
    PartEntry,
    _mac,
    open_manifest,
    parse_manifest,
    seal_manifest,
)

WRAPPER = PassphraseKeyWrapper("correct horse battery staple")
BACKUP_ID = "questboard_full_20240101_020000"


PART = PartEntry("postgres.part1.dump.zst.enc", 50, 40, "ef" * 32)


def sealed(version: int = FORMAT_VERSION) -> bytes:
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
                "postgres",
                "postgres.dump.zst.enc",
                100,
                80,
                "ab" * 32,
                1.5,
                {"tables": {"public.users": 3}},
                (PART,) if version >= 2 else (),
            ),
        ),
        format_version=version,
    )
    document = json.loads(seal_manifest(manifest, data_key))
    if version == 1:  # as version 1 wrote it: no parts field (and so no MAC over one)
        del document["manifest"]["components"][0]["parts"]
        body = document["manifest"]
        document["hmac_sha256"] = _mac(data_key, body)
    return json.dumps(document).encode()


def test_a_sealed_manifest_opens_with_the_right_key() -> None:
    manifest, data_key = open_manifest(sealed(), WRAPPER, expected_id=BACKUP_ID)
    postgres = manifest.component("postgres")
    assert postgres.facts == {"tables": {"public.users": 3}}
    assert postgres.parts == (PART,)
    assert [part.object for part in postgres.stored_objects()] == [
        "postgres.dump.zst.enc",
        "postgres.part1.dump.zst.enc",
    ]
    assert manifest.stored_bytes == 80 + 40
    assert len(data_key) == 32


def test_a_version_1_manifest_still_opens_as_single_object_components() -> None:
    manifest, _key = open_manifest(sealed(version=1), WRAPPER, expected_id=BACKUP_ID)
    assert manifest.format_version == 1
    assert manifest.component("postgres").parts == ()
    assert manifest.stored_bytes == 80


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda body: body.update(format_version=4), "format version 4 is not supported"),
        (lambda body: body.update(format_version=1), "parts in a version 1 manifest"),
        (lambda body: body["components"][0]["parts"][0].update(object="../x"), "bad object"),
        (
            lambda body: body["components"][0]["parts"][0].update(object="postgres.dump.zst.enc"),
            "names an object twice",
        ),
        (lambda body: body["components"][0].update(parts="postgres.part1"), "unexpected or missing fields"),
    ],
)
def test_a_malformed_parts_list_is_refused_before_any_use(change: Any, message: str) -> None:
    document = json.loads(sealed())
    change(document["manifest"])
    with pytest.raises(IntegrityError, match=message):
        parse_manifest(json.dumps(document).encode())


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["manifest"]["components"][0].update(sha256="cd" * 32),
        lambda d: d["manifest"]["components"][0]["parts"][0].update(stored_bytes=41),
        lambda d: d["manifest"]["components"][0].update(parts=[]),
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


@pytest.mark.parametrize(
    "where",
    [
        SetAddress("staging", "monthly", BACKUP_ID),
        SetAddress("prod", "daily", BACKUP_ID),
        SetAddress("prod", "monthly", "questboard_full_20240201_020000"),
    ],
    ids=["another host", "another tier", "another id"],
)
def test_a_genuine_manifest_found_where_it_does_not_say_it_sits_is_refused(where: SetAddress) -> None:
    data = sealed()
    with pytest.raises(IntegrityError, match="names prod/monthly/questboard_full_20240101_020000: moved"):
        open_manifest(data, WRAPPER, at=where)
    manifest, _key = open_manifest(data, WRAPPER, at=SetAddress("prod", "monthly", BACKUP_ID))
    assert manifest.backup_id == BACKUP_ID
    # Local disk has no host in its keys: there, only tier and id must match.
    assert open_manifest(data, WRAPPER, at=SetAddress("", "monthly", BACKUP_ID))[0] == manifest


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
