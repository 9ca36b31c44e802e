"""S3Storage against a moto server over real HTTP: multipart, encryption, tags, URLs and error mapping."""

from __future__ import annotations

import itertools
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from questboard_backup.address import SetAddress, parse_s3_uri
from questboard_backup.errors import NotFoundError, StorageError, TransientStorageError
from questboard_backup.storage import s3_streams
from questboard_backup.storage.s3 import MIN_PART_SIZE, S3Storage
from tests.conftest import S3Bucket
from tests.fault_proxy import FaultProxy, Request
from tests.servers import free_port

MiB = 2**20
WAIT = 30.0
SECRET = "QB-SECRET-must-never-be-printed-4f1d"
ACCESS_KEY = "AKIAQBNEVERPRINTME01"


def client_error(code: str, status: int, operation: str = "UploadPart") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


class ClientProxy:
    """The real client, with chosen operations replaced."""

    def __init__(self, client: Any, **overrides: Callable[..., Any]) -> None:
        self._client = client
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides.get(name) or getattr(self._client, name)


@pytest.fixture
def proxy(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the bucket's moto server; the engine's own S3 client (S3Storage built
    without a client) goes through it because AWS_ENDPOINT_URL says so, as an operator would set it."""
    with FaultProxy(s3_bucket.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy


#: Without AWS_MAX_ATTEMPTS the engine asks botocore for 5 retries: 6 tries.
ATTEMPTS = 6


def upload_part(number: int = 0) -> Callable[[Request], bool]:
    """UploadPart requests (of part ``number`` only, if given)."""
    return lambda r: r.operation == "UploadPart" and number in (0, r.part_number)


def operation(name: str) -> Callable[[Request], bool]:
    return lambda r: r.operation == name


def pending_uploads(bucket: S3Bucket) -> list[str]:
    return [u["Key"] for u in bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])]


def all_objects(bucket: S3Bucket) -> list[str]:
    return [o["Key"] for o in bucket.client.list_objects_v2(Bucket=bucket.name).get("Contents", [])]


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text.strip(), text
    return text


def test_a_large_object_written_in_irregular_pieces_is_a_multipart_upload(s3_bucket: S3Bucket) -> None:
    data = os.urandom(12 * MiB)
    storage = S3Storage(s3_bucket.name, "host-1", s3_bucket.client, part_size=5 * MiB)
    writer = storage.open_write("daily/set/postgres.dump.zst.enc", "daily")
    sizes = itertools.cycle([7, MiB, 4093, 300_001, 1, 65_536, 777_777])
    position = 0
    while position < len(data):
        position += writer.write(data[position : position + next(sizes)])
        if position > 6 * MiB:
            assert pending_uploads(s3_bucket) == ["host-1/daily/set/postgres.dump.zst.enc"]
    assert all_objects(s3_bucket) == []
    writer.close()

    key = "host-1/daily/set/postgres.dump.zst.enc"
    assert s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key, PartNumber=1)["PartsCount"] == 3
    assert s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)["ETag"].endswith('-3"')
    assert pending_uploads(s3_bucket) == []
    assert storage.read_bytes("daily/set/postgres.dump.zst.enc") == data


def test_the_writer_waits_once_max_concurrency_parts_are_in_flight(s3_bucket: S3Bucket) -> None:
    """Parts finish only when the test releases them, one by one; after every write the writer may hold
    at most (finished parts + max_concurrency + 1) parts' worth of accepted bytes."""
    parts, concurrency = 9, 2
    state = threading.Condition()
    started, finished, peak_active = 0, 0, 0
    gates = {number: threading.Event() for number in range(1, parts + 1)}

    def upload_part(**kwargs: Any) -> Any:
        nonlocal started, finished, peak_active
        with state:
            started += 1
            peak_active = max(peak_active, started - finished)
            state.notify_all()
        assert gates[kwargs["PartNumber"]].wait(WAIT)
        response = s3_bucket.client.upload_part(**kwargs)
        with state:
            finished += 1
        return response

    client = ClientProxy(s3_bucket.client, upload_part=upload_part)
    storage = S3Storage(s3_bucket.name, "host", client, part_size=MIN_PART_SIZE, max_concurrency=concurrency)
    data = os.urandom((parts - 1) * MIN_PART_SIZE + 10)
    overdrawn: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def write_all() -> None:
        try:
            writer = storage.open_write("daily/set/files.tar.zst.enc")
            for start in range(0, len(data), MiB):
                accepted = start + writer.write(data[start : start + MiB])
                with state:
                    if accepted > (finished + concurrency + 1) * MIN_PART_SIZE:
                        overdrawn.append((accepted, finished))
            writer.close()
        except BaseException as error:  # noqa: BLE001 - reported by the test thread below
            failures.append(error)

    thread = threading.Thread(target=write_all)
    thread.start()

    def started_at_least(count: int) -> Callable[[], bool]:
        return lambda: started >= count

    for number in range(1, parts + 1):
        with state:  # part `number` finishes only once the next one is in flight too
            assert state.wait_for(started_at_least(min(number + 1, parts)), WAIT)
        gates[number].set()
    thread.join(WAIT)

    assert failures == []
    assert overdrawn == []
    assert peak_active == concurrency
    assert storage.read_bytes("daily/set/files.tar.zst.enc") == data


def test_objects_are_encrypted_and_tagged_with_their_tier(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.name, "host", s3_bucket.client, part_size=MIN_PART_SIZE)
    storage.write_bytes("monthly/set/manifest.json", b"small", "monthly")
    storage.write_bytes("monthly/set/big.bin", os.urandom(MIN_PART_SIZE + 1), "monthly")

    for key in ("monthly/set/manifest.json", "monthly/set/big.bin"):
        head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=f"host/{key}")
        assert head["ServerSideEncryption"] == "AES256"
        tags = s3_bucket.client.get_object_tagging(Bucket=s3_bucket.name, Key=f"host/{key}")["TagSet"]
        assert tags == [{"Key": "tier", "Value": "monthly"}]
        assert storage.object_tags(key) == {"tier": "monthly"}


def test_objects_can_be_encrypted_with_a_kms_key(s3_bucket: S3Bucket) -> None:
    kms = boto3.client("kms", endpoint_url=s3_bucket.endpoint, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    storage = S3Storage(s3_bucket.name, "host", s3_bucket.client, sse="aws:kms", kms_key_id=key_id)
    storage.write_bytes("daily/set/manifest.json", b"manifest", "daily")

    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="host/daily/set/manifest.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]


def test_a_presigned_url_downloads_the_object_over_plain_http(s3_bucket: S3Bucket) -> None:
    data = os.urandom(100_000)
    storage = S3Storage(s3_bucket.name, "host", s3_bucket.client)
    storage.write_bytes("daily/set/redis.zst.enc", data)

    url = storage.presigned_url("daily/set/redis.zst.enc", expires_in=300)

    assert url.startswith(f"{s3_bucket.endpoint}/{s3_bucket.name}/host/daily/set/redis.zst.enc?")
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.read() == data


def test_a_failing_part_aborts_the_upload_and_is_reported_as_transient(s3_bucket: S3Bucket) -> None:
    calls = itertools.count(1)

    def upload_part(**kwargs: Any) -> Any:
        if next(calls) == 2:
            raise client_error("SlowDown", 503)
        return s3_bucket.client.upload_part(**kwargs)

    storage = S3Storage(
        s3_bucket.name,
        "host",
        ClientProxy(s3_bucket.client, upload_part=upload_part),
        part_size=MIN_PART_SIZE,
    )
    with pytest.raises(TransientStorageError) as caught:
        storage.write_bytes("daily/set/big.bin", os.urandom(3 * MIN_PART_SIZE))

    assert (
        one_line(caught.value) == f"s3://{s3_bucket.name}/host/daily/set/big.bin: SlowDown: SlowDown happened"
    )
    assert pending_uploads(s3_bucket) == []
    assert all_objects(s3_bucket) == []


def test_transient_s3_errors_are_retried_by_the_client_and_the_objects_are_stored_whole(
    s3_bucket: S3Bucket, proxy: FaultProxy
) -> None:
    """The faults come back as HTTP responses, so only botocore's retries (the engine's Config) can
    get past them: with retries off the first one fails the write."""
    throttled = proxy.fail(upload_part(2), times=1, status=503, code="SlowDown")
    failing = proxy.fail(upload_part(3), times=2, status=500, code="InternalError")
    completing = proxy.fail(operation("CompleteMultipartUpload"), times=1, status=500, code="InternalError")
    putting = proxy.fail(operation("PutObject"), times=1, status=503, code="ServiceUnavailable")
    storage = S3Storage(s3_bucket.name, "host", part_size=MIN_PART_SIZE)  # the engine's own client
    data, manifest = os.urandom(3 * MIN_PART_SIZE + 12_345), os.urandom(1000)

    storage.write_bytes("daily/set/postgres.dump.zst.enc", data, "daily")
    storage.write_bytes("daily/set/manifest.json", manifest, "daily")

    assert [f.hits for f in (throttled, failing, completing, putting)] == [1, 2, 1, 1]
    assert proxy.statuses(upload_part(1)) == [200]
    assert proxy.statuses(upload_part(2)) == [503, 200]
    assert proxy.statuses(upload_part(3)) == [500, 500, 200]
    assert proxy.statuses(upload_part(4)) == [200]
    assert proxy.statuses(operation("CompleteMultipartUpload")) == [500, 200]
    assert proxy.statuses(operation("PutObject")) == [503, 200]
    key = "host/daily/set/postgres.dump.zst.enc"
    assert s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read() == data
    assert s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key, PartNumber=1)["PartsCount"] == 4
    stored_manifest = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="host/daily/set/manifest.json")
    assert stored_manifest["Body"].read() == manifest
    assert pending_uploads(s3_bucket) == []


def test_persistent_server_errors_on_parts_fail_the_write_after_the_retries_and_leave_nothing(
    s3_bucket: S3Bucket, proxy: FaultProxy
) -> None:
    broken = proxy.fail(upload_part(), times=None, status=500, code="InternalError")
    storage = S3Storage(s3_bucket.name, "host", part_size=MIN_PART_SIZE)

    with pytest.raises(TransientStorageError) as caught:
        storage.write_bytes("daily/set/files.tar.zst.enc", os.urandom(3 * MIN_PART_SIZE), "daily")

    assert one_line(caught.value) == (
        f"s3://{s3_bucket.name}/host/daily/set/files.tar.zst.enc: "
        "InternalError: We encountered an internal error. Please try again."
    )
    assert {n: proxy.statuses(upload_part(n)) for n in (1, 2, 3)} == {n: [500] * ATTEMPTS for n in (1, 2, 3)}
    assert broken.hits == 3 * ATTEMPTS  # every try of every part met the fault; none reached S3
    assert proxy.statuses(operation("AbortMultipartUpload")) == [204]
    assert pending_uploads(s3_bucket) == []
    assert all_objects(s3_bucket) == []


def test_the_standard_aws_retry_variables_replace_the_engines_retries(
    s3_bucket: S3Bucket, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # tries, the first included
    proxy.fail(operation("PutObject"), times=None, status=500, code="InternalError")

    with pytest.raises(TransientStorageError):
        S3Storage(s3_bucket.name, "host").write_bytes("daily/set/manifest.json", b"m", "daily")

    assert proxy.statuses(operation("PutObject")) == [500, 500]


def test_a_retry_mode_alone_keeps_the_engines_number_of_tries(
    s3_bucket: S3Bucket, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")  # botocore's own default would be 3 tries
    proxy.fail(operation("PutObject"), times=None, status=500, code="InternalError")

    with pytest.raises(TransientStorageError):
        S3Storage(s3_bucket.name, "host").write_bytes("daily/set/manifest.json", b"m", "daily")

    assert proxy.statuses(operation("PutObject")) == [500] * ATTEMPTS


def test_a_permanent_s3_error_is_not_retried(s3_bucket: S3Bucket, proxy: FaultProxy) -> None:
    proxy.fail(operation("PutObject"), times=None, status=403, code="AccessDenied")
    storage = S3Storage(s3_bucket.name, "host")

    with pytest.raises(StorageError) as caught:
        storage.write_bytes("daily/set/manifest.json", b"m", "daily")

    assert not isinstance(caught.value, TransientStorageError)
    assert (
        one_line(caught.value)
        == f"s3://{s3_bucket.name}/host/daily/set/manifest.json: AccessDenied: Access Denied"
    )
    assert proxy.statuses(operation("PutObject")) == [403]
    assert all_objects(s3_bucket) == []


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("SlowDown", 503, True),
        ("Throttling", 400, True),
        ("RequestTimeout", 400, True),
        ("InternalError", 500, True),
        ("SomethingNew", 502, True),
        ("AccessDenied", 403, False),
        ("InvalidAccessKeyId", 403, False),
        ("SignatureDoesNotMatch", 403, False),
        ("KMS.DisabledException", 400, False),
    ],
)
def test_throttling_and_server_errors_are_transient_and_the_rest_permanent(
    s3_bucket: S3Bucket, code: str, status: int, transient: bool
) -> None:
    def put_object(**kwargs: Any) -> Any:
        raise client_error(code, status, "PutObject")

    storage = S3Storage(s3_bucket.name, "host", ClientProxy(s3_bucket.client, put_object=put_object))
    with pytest.raises(StorageError) as caught:
        storage.write_bytes("daily/set/manifest.json", b"m")

    assert isinstance(caught.value, TransientStorageError) is transient
    assert one_line(caught.value).startswith(f"s3://{s3_bucket.name}/host/daily/set/manifest.json: {code}: ")


def test_a_missing_bucket_fails_with_one_permanent_line_naming_it(s3_bucket: S3Bucket) -> None:
    storage = S3Storage("qb-no-such-bucket", "host", s3_bucket.client)
    attempts: list[Callable[[], object]] = [
        lambda: storage.write_bytes("daily/set/manifest.json", b"m"),
        lambda: storage.write_bytes("daily/set/big.bin", os.urandom(storage.part_size + 1)),
        lambda: storage.read_bytes("daily/set/manifest.json"),
        lambda: storage.size("daily/set/manifest.json"),
        lambda: list(storage.list_keys("daily")),
        lambda: storage.delete_prefix("daily/set"),
    ]
    for attempt in attempts:
        with pytest.raises(StorageError) as caught:
            attempt()
        assert not isinstance(caught.value, (TransientStorageError, NotFoundError))
        assert "s3://qb-no-such-bucket/" in one_line(caught.value)
        assert "NoSuchBucket" in str(caught.value)


def test_an_unreachable_endpoint_fails_with_one_transient_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    port = free_port()  # nobody listens there
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=2),
    )
    storage = S3Storage("qb-bucket", "host", client)

    for attempt in (lambda: storage.write_bytes("daily/x", b"x"), lambda: storage.size("daily/x")):
        with pytest.raises(TransientStorageError) as caught:
            attempt()
        assert one_line(caught.value) == (
            f"s3://qb-bucket/host/daily/x: cannot reach 127.0.0.1:{port} (EndpointConnectionError)"
        )


def test_missing_credentials_fail_with_one_line_saying_so(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("AWS_CONTAINER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.session.Session().client("s3", endpoint_url=s3_bucket.endpoint, region_name="us-east-1")
    storage = S3Storage(s3_bucket.name, "host", client)

    with pytest.raises(StorageError) as caught:
        storage.write_bytes("daily/set/manifest.json", b"m")

    assert (
        one_line(caught.value)
        == f"s3://{s3_bucket.name}/host/daily/set/manifest.json: no AWS credentials found"
    )


def test_credentials_never_appear_in_errors_or_logs(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="questboard_backup")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    client = boto3.session.Session().client("s3", endpoint_url=s3_bucket.endpoint, region_name="us-east-1")
    unreachable = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )

    def failing_abort(**kwargs: Any) -> Any:
        raise client_error("AccessDenied", 403, "AbortMultipartUpload")

    def failing_part(**kwargs: Any) -> Any:
        raise client_error("InternalError", 500)

    flaky = ClientProxy(client, upload_part=failing_part, abort_multipart_upload=failing_abort)
    attempts: list[Callable[[], object]] = [
        lambda: S3Storage("qb-no-such-bucket", "host", client).write_bytes("k", b"x"),
        lambda: S3Storage(s3_bucket.name, "host", client).read_bytes("missing"),
        lambda: S3Storage(s3_bucket.name, "host", unreachable).read_bytes("k"),
        lambda: S3Storage(s3_bucket.name, "host", flaky, part_size=MIN_PART_SIZE).write_bytes(
            "k", os.urandom(MIN_PART_SIZE + 1)
        ),
    ]
    messages = []
    for attempt in attempts:
        with pytest.raises((StorageError, NotFoundError)) as caught:
            attempt()
        messages.append(one_line(caught.value))

    ours = [r.getMessage() for r in caplog.records if r.name.startswith("questboard_backup")]
    assert any("multipart upload not aborted" in line for line in ours)
    for text in [*messages, *ours]:
        assert SECRET not in text
        assert ACCESS_KEY not in text


def test_delete_prefix_also_aborts_unfinished_uploads_and_deletes_in_batches(s3_bucket: S3Bucket) -> None:
    batches: list[int] = []

    def delete_objects(**kwargs: Any) -> Any:
        batches.append(len(kwargs["Delete"]["Objects"]))
        return s3_bucket.client.delete_objects(**kwargs)

    storage = S3Storage(
        s3_bucket.name,
        "host",
        ClientProxy(s3_bucket.client, delete_objects=delete_objects),
        part_size=MIN_PART_SIZE,
    )
    for index in range(1100):
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"host/temp/set/{index:04d}", Body=b"")
    unfinished = storage.open_write("temp/set/unfinished.bin")
    unfinished.write(os.urandom(MIN_PART_SIZE + 1))
    assert pending_uploads(s3_bucket) == ["host/temp/set/unfinished.bin"]

    storage.delete_prefix("temp/set")

    assert all_objects(s3_bucket) == []
    assert pending_uploads(s3_bucket) == []
    assert batches == [1000, 101]  # the 1,100 objects plus the exact key "temp/set"


def test_an_object_needing_more_than_the_part_limit_is_refused_and_aborted(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_streams, "MAX_PARTS", 3)
    storage = S3Storage(s3_bucket.name, "host", s3_bucket.client, part_size=MIN_PART_SIZE)
    storage.write_bytes("daily/set/at-limit.bin", os.urandom(3 * MIN_PART_SIZE))  # exactly the limit fits
    head = s3_bucket.client.head_object(
        Bucket=s3_bucket.name, Key="host/daily/set/at-limit.bin", PartNumber=1
    )
    assert head["PartsCount"] == 3

    writer = storage.open_write("daily/set/huge.bin")
    writer.write(os.urandom(3 * MIN_PART_SIZE))
    with pytest.raises(StorageError, match="exceeds the S3 limit of 3 parts") as caught:
        writer.write(b"one byte too many")

    assert "raise the part size" in one_line(caught.value)
    assert pending_uploads(s3_bucket) == []
    with pytest.raises(StorageError, match="cannot close: the upload failed and was aborted"):
        writer.close()
    with pytest.raises(StorageError, match="cannot write: the upload failed and was aborted"):
        writer.write(b"more")


def test_promote_refuses_to_move_a_set_because_s3_cannot_rename(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.name, "host", s3_bucket.client)
    address = SetAddress("host", "daily", "questboard_full_20240102_020000")
    assert address.staging_prefix(storage.stage_in_temp) == address.set_prefix
    storage.promote(address.set_prefix, address.set_prefix, "daily", "manifest.json")
    with pytest.raises(StorageError, match="cannot rename"):
        storage.promote(address.staging_prefix(True), address.set_prefix, "daily", "manifest.json")


def test_the_storage_describes_itself_by_its_s3_uri(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.name, "/host-1/", s3_bucket.client)
    assert storage.kind == "s3"
    assert storage.description == f"s3://{s3_bucket.name}/host-1"
    assert storage.uri("daily/set/manifest.json") == f"s3://{s3_bucket.name}/host-1/daily/set/manifest.json"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://my-bucket/host/daily/x", ("my-bucket", "host/daily/x")),
        ("s3://my.bucket", ("my.bucket", "")),
        ("s3://my-bucket/", ("my-bucket", "")),
    ],
)
def test_parse_s3_uri_splits_bucket_and_key(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", ["", "my-bucket/key", "s3://", "s3:///key", "s3://Bad_Bucket/key", "https://b/k"]
)
def test_parse_s3_uri_refuses_what_is_not_an_s3_uri(uri: str) -> None:
    with pytest.raises(ValueError, match="s3"):
        parse_s3_uri(uri)


def test_a_set_staged_in_temp_is_promoted_into_its_tier_retagged_with_the_manifest_last(
    s3_bucket: S3Bucket,
) -> None:
    storage = S3Storage(s3_bucket.name, "prod", s3_bucket.client, stage_in_temp=True)
    address = SetAddress("prod", "daily", "questboard_full_20240102_020000")
    staging = address.staging_prefix(storage.stage_in_temp)
    tag = address.staging_tag(storage.stage_in_temp)
    assert staging == "temp/questboard_full_20240102_020000"
    storage.write_bytes(f"{staging}/postgres.dump.zst.enc", b"component", tier=tag)
    storage.write_bytes(f"{staging}/manifest.json", b"{}", tier=tag)
    assert storage.object_tags(f"{staging}/postgres.dump.zst.enc") == {"tier": "temp"}
    storage.promote(staging, address.set_prefix, address.tier, "manifest.json")
    final = "daily/questboard_full_20240102_020000"
    assert sorted(storage.list_keys(final)) == [f"{final}/manifest.json", f"{final}/postgres.dump.zst.enc"]
    assert storage.read_bytes(f"{final}/postgres.dump.zst.enc") == b"component"
    assert storage.object_tags(f"{final}/postgres.dump.zst.enc") == {"tier": "daily"}
    assert storage.object_tags(f"{final}/manifest.json") == {"tier": "daily"}
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=f"prod/{final}/postgres.dump.zst.enc")
    assert head["ServerSideEncryption"] == "AES256"
    assert list(storage.list_keys("temp")) == []


def test_promote_never_overwrites_a_complete_set_and_a_retried_promote_is_harmless(
    s3_bucket: S3Bucket,
) -> None:
    storage = S3Storage(s3_bucket.name, "prod", s3_bucket.client, stage_in_temp=True)
    address = SetAddress("prod", "daily", "questboard_full_20240102_020000")
    staging = address.staging_prefix(True)
    final = address.set_prefix

    def stage(component: bytes, manifest: bytes) -> None:
        storage.write_bytes(f"{staging}/postgres.dump.zst.enc", component, tier="temp")
        storage.write_bytes(f"{staging}/manifest.json", manifest, tier="temp")

    stage(b"first component", b"first manifest")
    storage.promote(staging, final, "daily", "manifest.json")
    stage(b"first component", b"first manifest")  # the same set staged again: a retried step
    storage.promote(staging, final, "daily", "manifest.json")
    assert list(storage.list_keys("temp")) == []
    stage(b"second component", b"second manifest")  # another writer of the same id
    with pytest.raises(StorageError, match="already exists; nothing was copied"):
        storage.promote(staging, final, "daily", "manifest.json")
    assert storage.read_bytes(f"{final}/postgres.dump.zst.enc") == b"first component"
    assert storage.read_bytes(f"{final}/manifest.json") == b"first manifest"
