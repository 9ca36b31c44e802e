"""The s3uploads component against a moto S3 server over HTTP: round trips through the real backup and
restore, damaged and hostile streams refused before the target changes, undo, leftovers, the registry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
import pytest

from questboard_backup.address import timestamp
from questboard_backup.backup import run_backup
from questboard_backup.catalog import list_backups
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.errors import ConfigurationError, IntegrityError, RestoreVerificationError, SourceError
from questboard_backup.pipeline import ComponentWriter, StreamStats
from questboard_backup.restore import run_restore
from questboard_backup.settings import Settings
from questboard_backup.sources.base import RestoreOptions, StreamOpener
from questboard_backup.sources.registry import Endpoints
from questboard_backup.sources.s3uploads import S3UploadsComponent
from questboard_backup.storage.local import LocalStorage
from questboard_backup.wiring import Wiring
from tests import sealed
from tests.conftest import S3Bucket

KEY = os.urandom(32)
MOMENT = datetime(2024, 1, 2, 2, 0, tzinfo=UTC)
CONTEXT = f"{timestamp(MOMENT)}/s3uploads"
PREFIX = "app/uploads/"
#: Larger than the restore's 8 MiB upload part: staged by a multipart upload.
BIG = 9 * 1024 * 1024
METADATA_FIELDS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")

State = dict[str, tuple[Any, ...]]


def component(bucket: S3Bucket, prefix: str = PREFIX) -> S3UploadsComponent:
    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=bucket.endpoint, region_name="us-east-1")

    return S3UploadsComponent(f"s3://{bucket.name}/{prefix}", client)


def fill(bucket: S3Bucket) -> None:
    """Uploads with nested keys, awkward names, a folder marker, an empty and a large object, metadata;
    and objects beside the prefix that no restore may touch."""
    put = bucket.client.put_object
    put(
        Bucket=bucket.name,
        Key=PREFIX + "avatars/2024/ann.png",
        Body=os.urandom(3000),
        ContentType="image/png",
        Metadata={"owner": "ann", "quest-id": "42"},
        CacheControl="max-age=3600",
        ContentDisposition='attachment; filename="ann.png"',
    )
    put(
        Bucket=bucket.name,
        Key=PREFIX + "docs/日本語 guide.txt",
        Body="冒険の記録\n".encode(),
        ContentType="text/plain; charset=utf-8",
        ContentEncoding="identity",
        ContentLanguage="ja",
    )
    put(Bucket=bucket.name, Key=PREFIX + "docs/", Body=b"")  # a console "folder"
    put(Bucket=bucket.name, Key=PREFIX + "empty.bin", Body=b"")
    put(Bucket=bucket.name, Key=PREFIX + "deep/a/b/c/d/e/large.bin", Body=os.urandom(BIG))
    put(Bucket=bucket.name, Key="app/uploads-archive/old.txt", Body=b"beside, not under")
    put(Bucket=bucket.name, Key="app/other.txt", Body=b"elsewhere")


def state(bucket: S3Bucket, prefix: str) -> State:
    """Key below ``prefix`` -> (size, sha256, ContentType... , user metadata) of every object."""
    found: State = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for item in page.get("Contents", []):
            response = bucket.client.get_object(Bucket=bucket.name, Key=item["Key"])
            data = response["Body"].read()
            found[item["Key"][len(prefix) :]] = (
                len(data),
                hashlib.sha256(data).hexdigest(),
                *(response.get(field) for field in METADATA_FIELDS),
                tuple(sorted(response.get("Metadata", {}).items())),
            )
    return found


def keys(bucket: S3Bucket) -> list[str]:
    pages = bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def alter(bucket: S3Bucket) -> None:
    """After the backup: one object gone, one rewritten with other metadata, one added."""
    bucket.client.delete_object(Bucket=bucket.name, Key=PREFIX + "empty.bin")
    bucket.client.put_object(
        Bucket=bucket.name,
        Key=PREFIX + "avatars/2024/ann.png",
        Body=b"defaced",
        ContentType="text/plain",
        Metadata={"owner": "mallory"},
    )
    bucket.client.put_object(Bucket=bucket.name, Key=PREFIX + "added-later.txt", Body=b"new")


def options(offset: int = 0) -> RestoreOptions:
    return RestoreOptions(timestamp(MOMENT + timedelta(days=1, seconds=offset)))


def backup(target: S3UploadsComponent) -> tuple[dict[str, Any], bytes, StreamStats]:
    stored = io.BytesIO()
    writer = ComponentWriter(stored, KEY, CONTEXT)
    facts = target.dump(cast(BinaryIO, writer))
    stats = writer.finish()
    return facts, stored.getvalue(), stats


def opener(stored: bytes, stats: StreamStats) -> StreamOpener:
    return sealed.opener(stored, stats, KEY, CONTEXT, "s3uploads")


def test_objects_round_trip_through_the_engine_with_their_keys_bytes_and_metadata(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    fill(s3_bucket)
    original = state(s3_bucket, PREFIX)
    beside = {key: state(s3_bucket, key) for key in ("app/uploads-archive/", "app/other.txt")}
    assert len(beside["app/uploads-archive/"]) == len(beside["app/other.txt"]) == 1
    uploads = component(s3_bucket)
    storage = LocalStorage(tmp_path / "backups")
    wrapper = PassphraseKeyWrapper("s3uploads test passphrase")

    result = run_backup("full", [uploads], [storage], wrapper, "test-host", UTC, MOMENT)

    facts = result.manifest.component("s3uploads").facts
    assert facts == {
        "source": f"s3://{s3_bucket.name}/{PREFIX}",
        "files": 5,
        "bytes": 3000 + len("冒険の記録\n".encode()) + BIG,
        "skipped": 0,
        "changed_during_backup": 0,
    }
    alter(s3_bucket)
    altered = state(s3_bucket, PREFIX)
    (entry,) = list_backups(storage)
    chosen = options()

    report = run_restore(entry, wrapper, {"s3uploads": component(s3_bucket)}, chosen)

    assert state(s3_bucket, PREFIX) == original
    assert original["avatars/2024/ann.png"][2:] == (
        "image/png",
        "max-age=3600",
        'attachment; filename="ann.png"',
        None,
        None,
        (("owner", "ann"), ("quest-id", "42")),
    )
    assert original["docs/日本語 guide.txt"][2:6] == ("text/plain; charset=utf-8", None, None, "identity")
    previous = f"app/uploads.pre-restore-{chosen.timestamp}/"
    assert state(s3_bucket, previous) == altered
    part = report["components"]["s3uploads"]
    assert part["files"] == 5 and part["previous"] == f"s3://{s3_bucket.name}/{previous}"
    assert part["removed"] == 1  # added-later.txt
    assert {key: state(s3_bucket, key) for key in beside} == beside
    assert not [key for key in keys(s3_bucket) if ".restore-" in key]


def _tampered(stored: bytes) -> bytes:
    middle = len(stored) // 2
    return stored[:middle] + bytes([stored[middle] ^ 0x01]) + stored[middle + 1 :]


def _seal(members: list[tuple[str, bytes]]) -> tuple[bytes, StreamStats]:
    stored = io.BytesIO()
    writer = ComponentWriter(stored, KEY, CONTEXT)
    with tarfile.open(fileobj=cast(BinaryIO, writer), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    stats = writer.finish()
    return stored.getvalue(), stats


Damage = Callable[
    [bytes, StreamStats, dict[str, Any]], tuple[bytes, StreamStats, dict[str, Any], type[Exception]]
]
DAMAGES: dict[str, Damage] = {
    "flipped byte": lambda stored, stats, facts: (_tampered(stored), stats, facts, IntegrityError),
    "truncated": lambda stored, stats, facts: (stored[: len(stored) - 100], stats, facts, IntegrityError),
    "facts claim another file": lambda stored, stats, facts: (
        stored,
        stats,
        {**facts, "files": facts["files"] + 1},
        RestoreVerificationError,
    ),
    "a duplicate key": lambda stored, stats, facts: (
        *_seal([("a.txt", b"first"), ("a.txt", b"second")]),
        {**facts, "files": 2, "bytes": 11},
        IntegrityError,
    ),
    "keys out of order": lambda stored, stats, facts: (
        *_seal([("b.txt", b"1"), ("a.txt", b"2")]),
        {**facts, "files": 2, "bytes": 2},
        IntegrityError,
    ),
}


#: What each refusal says.
REASONS = {
    "flipped byte": "",
    "truncated": "",
    "facts claim another file": "files 6 expected, 5 found",
    "a duplicate key": "duplicate or out of order",
    "keys out of order": "duplicate or out of order",
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_or_hostile_stream_is_refused_at_stage_and_the_bucket_is_left_as_it_was(
    s3_bucket: S3Bucket, damage: str
) -> None:
    fill(s3_bucket)
    facts, stored, stats = backup(component(s3_bucket))
    alter(s3_bucket)
    before = state(s3_bucket, "")
    stored, stats, facts, refusal = DAMAGES[damage](stored, stats, facts)
    target = component(s3_bucket)

    with pytest.raises(refusal) as refused:
        target.restore(opener(stored, stats), facts, options())

    assert "\n" not in str(refused.value) and REASONS[damage] in str(refused.value)
    assert state(s3_bucket, "") == before
    assert not s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads")


def test_undo_after_the_swap_puts_back_exactly_the_previous_objects_from_another_process(
    s3_bucket: S3Bucket,
) -> None:
    fill(s3_bucket)
    facts, stored, stats = backup(component(s3_bucket))
    original = state(s3_bucket, PREFIX)
    alter(s3_bucket)
    before = state(s3_bucket, "")
    chosen = options()
    staging = f"app/uploads.restore-{chosen.timestamp}/"

    staged = component(s3_bucket)
    report = staged.stage(opener(stored, stats), facts, chosen)
    assert report == {"target": staged.uri, "files": 5, "bytes": facts["bytes"]}
    assert state(s3_bucket, PREFIX) == before_prefix(before)  # staging changed nothing of the target
    assert staged.swap_in(chosen)["previous"] is not None
    assert state(s3_bucket, PREFIX) == original
    assert (
        json.loads(
            s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=staging + "swapping.json")["Body"].read()
        )["state"]
        == "swapped"
    )

    later = component(s3_bucket)  # another process: only the target and the timestamp
    lines = later.undo(chosen)

    assert any("undone" in line for line in lines) and any("removed" in line for line in lines)
    assert state(s3_bucket, "") == before
    assert later.undo(chosen) == []


def before_prefix(everything: State) -> State:
    return {key[len(PREFIX) :]: value for key, value in everything.items() if key.startswith(PREFIX)}


def test_clear_leftovers_removes_other_restores_staging_and_settles_their_finished_swaps(
    s3_bucket: S3Bucket,
) -> None:
    fill(s3_bucket)
    facts, stored, stats = backup(component(s3_bucket))
    original = state(s3_bucket, PREFIX)
    alter(s3_bucket)
    altered = state(s3_bucket, PREFIX)

    # A restore killed after staging: its staging stays behind.
    staged_only = options(1)
    component(s3_bucket).stage(opener(stored, stats), facts, staged_only)
    # A restore killed after its swap, before settling: the target holds the restored objects.
    swapped = options(2)
    killed = component(s3_bucket)
    killed.stage(opener(stored, stats), facts, swapped)
    killed.swap_in(swapped)
    # Something under a staging name that is not the engine's: never removed.
    foreign = f"app/uploads.restore-{options(3).timestamp}/someone-elses.txt"
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=foreign, Body=b"not ours")

    lines = component(s3_bucket).clear_leftovers(options(4))

    assert any(
        f"staging s3://{s3_bucket.name}/app/uploads.restore-{staged_only.timestamp}/ removed" in line
        for line in lines
    )
    assert any(f"settled the swap of an earlier restore ({swapped.timestamp})" in line for line in lines)
    assert any("not a staging prefix of this engine" in line for line in lines)
    assert state(s3_bucket, PREFIX) == original  # settled, never rolled back
    assert state(s3_bucket, f"app/uploads.pre-restore-{swapped.timestamp}/") == altered  # the copy stays
    assert [key for key in keys(s3_bucket) if ".restore-" in key] == [foreign]
    assert component(s3_bucket).clear_leftovers(options(4)) == [
        line for line in lines if "not a staging prefix" in line
    ]


def test_a_restore_that_fails_midway_through_its_swap_is_completed_backwards_by_the_next(
    s3_bucket: S3Bucket,
) -> None:
    fill(s3_bucket)
    facts, stored, stats = backup(component(s3_bucket))
    alter(s3_bucket)
    altered = state(s3_bucket, PREFIX)
    killed_at = options(1)
    killed = component(s3_bucket)
    killed.stage(opener(stored, stats), facts, killed_at)
    killed.swap_in(killed_at)
    # As a process killed while it copied the staged objects over the target would leave it.
    marker = f"app/uploads.restore-{killed_at.timestamp}/swapping.json"
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name,
        Key=marker,
        Body=json.dumps({"target": killed.uri, "state": "replacing"}).encode(),
    )

    lines = component(s3_bucket).clear_leftovers(options(2))

    assert any("undone" in line for line in lines)
    assert state(s3_bucket, PREFIX) == altered
    assert not [key for key in keys(s3_bucket) if ".restore-" in key or ".pre-restore-" in key]


def test_a_second_swap_of_the_same_restore_is_refused_and_nothing_staged_cannot_be_swapped(
    s3_bucket: S3Bucket,
) -> None:
    fill(s3_bucket)
    facts, stored, stats = backup(component(s3_bucket))
    chosen = options()
    target = component(s3_bucket)
    with pytest.raises(SourceError, match="nothing staged"):
        target.swap_in(chosen)
    target.stage(opener(stored, stats), facts, chosen)
    with pytest.raises(SourceError, match="already exists"):
        component(s3_bucket).stage(opener(stored, stats), facts, chosen)
    target.swap_in(chosen)
    with pytest.raises(SourceError, match="already swapped in and not settled"):
        target.swap_in(chosen)
    target.settle(chosen)
    assert not [key for key in keys(s3_bucket) if ".restore-" in key]


def test_an_unconfigured_endpoint_is_skipped_and_a_configured_one_bound(s3_bucket: S3Bucket) -> None:
    wiring = Wiring(Settings.from_env({}))
    assert wiring.source("s3uploads", Endpoints()) is None
    assert "s3uploads" not in wiring.restore_targets(Endpoints())
    bound = wiring.source("s3uploads", Endpoints(uploads_s3_uri=f"s3://{s3_bucket.name}/uploads"))
    assert isinstance(bound, S3UploadsComponent) and bound.uri == f"s3://{s3_bucket.name}/uploads/"


@pytest.mark.parametrize("uri", ["s3://qb-bucket", "s3://qb-bucket/", "not-a-uri", "s3://BAD_bucket/x"])
def test_a_uri_without_a_prefix_or_not_naming_a_bucket_is_a_configuration_error(uri: str) -> None:
    with pytest.raises(ConfigurationError):
        S3UploadsComponent(uri)


def test_an_unreachable_bucket_fails_the_check_in_one_line(s3_bucket: S3Bucket) -> None:
    from questboard_backup.errors import SourceUnreachableError

    missing = S3UploadsComponent(
        f"s3://{s3_bucket.name}-missing/uploads",
        lambda service: boto3.client(service, endpoint_url=s3_bucket.endpoint, region_name="us-east-1"),
    )
    with pytest.raises(SourceUnreachableError, match="NoSuchBucket") as refused:
        missing.check()
    assert "\n" not in str(refused.value)
