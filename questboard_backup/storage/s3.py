"""S3 storage: key K lives at ``s3://{bucket}/{prefix}/K``, streamed in with bounded multipart uploads.

S3 has no rename: a backup set is written in place and becomes a backup when its manifest appears.
"""

from __future__ import annotations

import io
import logging
import os
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlencode, urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from questboard_backup.errors import (
    ConfigurationError,
    NotFoundError,
    StorageError,
    TransientStorageError,
)
from questboard_backup.storage.base import ObjectVersion, Storage

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 2**20
MAX_PART_SIZE = 5 * 2**30
MAX_PARTS = 10_000
DELETE_BATCH = 1000
_MESSAGE_LIMIT = 200
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "ConditionalRequestConflict",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_LOCK_MODES = ("", "GOVERNANCE", "COMPLIANCE")
#: A conditional request lost: the object is not (or no longer) the version named, or another
#: conditional write of it is in flight.
_CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_BOTO_ERRORS = (BotoCoreError, ClientError)
_ENDED = {"closed": "was closed", "aborted": "was aborted", "failed": "failed and was aborted"}


def _error_code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return ""


def _is_missing(error: Exception) -> bool:
    return _error_code(error) in _MISSING_CODES


def _endpoint_host(error: Exception) -> str:
    endpoint = str(getattr(error, "kwargs", {}).get("endpoint_url") or "")
    return urlsplit(endpoint).netloc or "the S3 endpoint"


def _storage_error(error: BotoCoreError | ClientError, location: str) -> StorageError:
    """The one place botocore errors become ours: one line, naming where, never a credential."""
    if isinstance(error, ClientError):
        code = _error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = str(error.response.get("Error", {}).get("Message") or "").strip().splitlines()
        message = f"{location}: {code}: {text[0][:_MESSAGE_LIMIT]}" if text else f"{location}: {code}"
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientStorageError(message)
        return StorageError(message)
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(f"{location}: no AWS credentials found")
    if isinstance(error, SSLError):
        return StorageError(f"{location}: TLS failure talking to {_endpoint_host(error)}")
    if isinstance(error, (HTTPClientError, BotoConnectionError)):
        return TransientStorageError(
            f"{location}: cannot reach {_endpoint_host(error)} ({type(error).__name__})"
        )
    if isinstance(error, IncompleteReadError):
        return TransientStorageError(f"{location}: the connection ended before the whole object arrived")
    first = (str(error).splitlines() or [""])[0][:_MESSAGE_LIMIT]
    return StorageError(f"{location}: {type(error).__name__}: {first}")


class _ObjectReader(io.RawIOBase):
    """A GetObject body whose read errors arrive as storage errors."""

    def __init__(self, body: Any, location: str) -> None:
        self._body = body
        self._location = location

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        try:
            return bytes(self._body.read(None if size is None or size < 0 else size))
        except _BOTO_ERRORS as error:
            raise _storage_error(error, self._location) from None

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        target = memoryview(buffer).cast("B")
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _S3Writer:
    """One object: a single PUT when it fits in one part, else a multipart upload with a bounded
    number of parts in flight (memory about part size x (concurrency + 1))."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        location: str,
        put_args: dict[str, str],
        part_size: int,
        max_concurrency: int,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._location = location
        self._put_args = put_args
        self._part_size = part_size
        self._max_concurrency = max_concurrency
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: deque[Future[dict[str, Any]]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._state = "open"

    def write(self, data: bytes) -> int:
        if self._state != "open":
            raise StorageError(f"{self._location}: cannot write: the upload {_ENDED[self._state]}")
        view = memoryview(data).cast("B")
        try:
            while view.nbytes:
                # A full buffer is sent only once more data arrives, so the last part is never empty.
                if len(self._buffer) >= self._part_size:
                    self._send_part()
                room = self._part_size - len(self._buffer)
                self._buffer += view[:room]
                view = view[room:]
        except BaseException as error:
            self._abandon("failed")
            if isinstance(error, _BOTO_ERRORS):
                raise _storage_error(error, self._location) from None
            raise
        return len(data)

    def close(self) -> None:
        if self._state == "closed":
            return
        if self._state != "open":
            raise StorageError(f"{self._location}: cannot close: the upload {_ENDED[self._state]}")
        try:
            if self._upload_id is None:
                self._client.put_object(
                    Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), **self._put_args
                )
            else:
                self._send_part(last=True)
                while self._in_flight:
                    self._collect_oldest()
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
                logger.debug(
                    "multipart upload completed location=%s parts=%d", self._location, len(self._parts)
                )
        except BaseException as error:
            self._abandon("failed")
            if isinstance(error, _BOTO_ERRORS):
                raise _storage_error(error, self._location) from None
            raise
        self._state = "closed"
        self._buffer = bytearray()
        self._shutdown_pool()

    def abort(self) -> None:
        """Discard the object; safe to call twice, after a failure, or after close (a no-op then)."""
        if self._state == "open":
            self._abandon("aborted")

    def _send_part(self, last: bool = False) -> None:
        number = len(self._parts) + len(self._in_flight) + 1
        if number > (MAX_PARTS if last else MAX_PARTS - 1):  # a part that is not last has a successor
            raise StorageError(
                f"{self._location}: object exceeds the S3 limit of {MAX_PARTS} parts "
                f"({MAX_PARTS * self._part_size} bytes at part size {self._part_size}); raise the part size"
            )
        if self._upload_id is None:
            response = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ChecksumAlgorithm="CRC32", **self._put_args
            )
            self._upload_id = str(response["UploadId"])
            self._pool = ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="s3-part")
            logger.debug("multipart upload started location=%s part_size=%d", self._location, self._part_size)
        while len(self._in_flight) >= self._max_concurrency:
            self._collect_oldest()
        body, self._buffer = bytes(self._buffer), bytearray()
        assert self._pool is not None
        self._in_flight.append(self._pool.submit(self._upload_part, number, body))

    def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        response = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="CRC32",
        )
        part: dict[str, Any] = {"ETag": response["ETag"], "PartNumber": number}
        if response.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    def _collect_oldest(self) -> None:
        self._parts.append(self._in_flight.popleft().result())

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _abandon(self, state: str) -> None:
        self._state = state
        self._buffer = bytearray()
        self._shutdown_pool()  # parts still uploading would outlive an abort otherwise
        self._in_flight.clear()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)
        except _BOTO_ERRORS as error:  # an abort runs on failure paths; lifecycle rules sweep up
            logger.warning(
                "multipart upload not aborted location=%s error=%s",
                self._location,
                _storage_error(error, self._location),
            )


#: botocore's retries where the environment says nothing: its "standard" mode, 5 retries (6 tries).
RETRIES: dict[str, Any] = {"mode": "standard", "max_attempts": 5}
_RETRY_VARIABLES = {"mode": "AWS_RETRY_MODE", "max_attempts": "AWS_MAX_ATTEMPTS"}


def _retries(environ: Mapping[str, str]) -> dict[str, Any]:
    """The engine's retry settings that the environment does not set itself, each on its own."""
    return {
        key: value for key, value in RETRIES.items() if not environ.get(_RETRY_VARIABLES[key], "").strip()
    }


def make_client(max_concurrency: int = 4) -> Any:
    """The S3 client the engine uses (the composition root injects it): timeouts, and throttling and
    server errors retried with backoff, 5 retries (6 tries) a request, unless the standard
    AWS_MAX_ATTEMPTS / AWS_RETRY_MODE say otherwise (a Config value would win over them)."""
    import boto3
    from botocore.config import Config

    retries: Any = {"retries": chosen} if (chosen := _retries(os.environ)) else {}
    return boto3.client(
        "s3",
        config=Config(
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=max(10, max_concurrency * 2),
            **retries,
        ),
    )


class S3Storage(Storage):
    """Objects under ``s3://{bucket}/{hostname}/``.

    Largest object: ``part_size`` x 10,000 (160 GiB at the default 16 MiB). ``tier`` becomes the object
    tag ``tier=...`` so lifecycle rules can expire each tier. Every object is server-side encrypted.
    """

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        hostname: str,
        client: Any | None = None,
        *,
        part_size: int = 16 * 2**20,
        max_concurrency: int = 4,
        sse: str = "AES256",
        kms_key_id: str | None = None,
        stage_in_temp: bool = False,
        object_lock: str = "",
        retention_days: Mapping[str, int] | None = None,
    ) -> None:
        if not bucket:
            raise ConfigurationError("the S3 bucket name is empty")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ConfigurationError(
                f"S3 part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, not {part_size}"
            )
        if max_concurrency < 1:
            raise ConfigurationError(f"S3 upload concurrency must be at least 1, not {max_concurrency}")
        if kms_key_id and not sse.startswith("aws:kms"):
            raise ConfigurationError(f"a KMS key for S3 encryption needs sse 'aws:kms', not {sse!r}")
        if object_lock not in _LOCK_MODES or (object_lock and not retention_days):
            raise ConfigurationError(f"S3 Object Lock mode must be one of {_LOCK_MODES} with tier retentions")
        self.object_lock = object_lock
        self._retention_days = dict(retention_days or {})
        self.bucket = bucket
        self.stage_in_temp = stage_in_temp
        self.hostname = hostname.strip("/")
        self._root = f"{self.hostname}/" if self.hostname else ""  # what every object key here starts with
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.description = f"s3://{bucket}/{self.hostname}" if self.hostname else f"s3://{bucket}"
        self._sse_args: dict[str, str] = {"ServerSideEncryption": sse} if sse else {}
        if kms_key_id:
            self._sse_args["SSEKMSKeyId"] = kms_key_id
        self._client = client if client is not None else make_client(max_concurrency)

    def _lock_args(self, tier: str | None) -> dict[str, str]:
        """Object Lock retention for an object written to its tier's place: its tier's days from now,
        so no credential can erase it sooner (governance: none without bypass rights; compliance: none
        at all). Staged objects (tier ``temp``), locks and pointers get none: they must stay deletable."""
        days = self._retention_days.get(tier or "")
        if not self.object_lock or days is None:
            return {}
        until = datetime.now(UTC) + timedelta(days=days)
        return {
            "ObjectLockMode": self.object_lock,
            "ObjectLockRetainUntilDate": f"{until:%Y-%m-%dT%H:%M:%SZ}",
        }

    def _object_key(self, key: str) -> str:
        parts = [part for part in key.split("/") if part]
        if not parts or any(part in (".", "..") for part in parts):
            raise StorageError(f"invalid storage key {key!r}")
        return "/".join([self.hostname, *parts]) if self.hostname else "/".join(parts)

    def _location(self, object_key: str) -> str:
        return f"s3://{self.bucket}/{object_key}"

    def _not_found(self, object_key: str, error: Exception) -> Exception:
        """A 404 without a body (HEAD) cannot tell a missing key from a missing bucket: ask."""
        location = self._location(object_key)
        if _error_code(error) != "NoSuchKey":
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except _BOTO_ERRORS as bucket_error:  # only a missing bucket changes the answer
                if _is_missing(bucket_error) or _error_code(bucket_error) == "NoSuchBucket":
                    return StorageError(f"{location}: NoSuchBucket: bucket {self.bucket} does not exist")
        return NotFoundError(f"{location} does not exist")

    def uri(self, key: str) -> str:
        return self._location(self._object_key(key))

    def open_write(self, key: str, tier: str | None = None) -> _S3Writer:
        object_key = self._object_key(key)
        put_args = {**self._sse_args, **self._lock_args(tier)}
        if tier:
            put_args["Tagging"] = urlencode({"tier": tier})
        return _S3Writer(
            self._client,
            self.bucket,
            object_key,
            self._location(object_key),
            put_args,
            self.part_size,
            self.max_concurrency,
        )

    def open_read(self, key: str) -> BinaryIO:
        object_key = self._object_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=object_key)
        except _BOTO_ERRORS as error:
            if _is_missing(error):
                raise self._not_found(object_key, error) from None
            raise _storage_error(error, self._location(object_key)) from None
        return cast(BinaryIO, _ObjectReader(response["Body"], self._location(object_key)))

    def _list(self, operation: str, items: str, prefix: str) -> Iterator[dict[str, Any]]:
        location = self._location(prefix)
        try:
            for page in self._client.get_paginator(operation).paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get(items, [])
        except _BOTO_ERRORS as error:
            raise _storage_error(error, location) from None

    def _under(self, prefix: str) -> str:
        """The S3 prefix for everything below ``prefix`` ('' is the whole storage), slash-terminated."""
        if not prefix.strip("/"):
            return self._root
        return self._object_key(prefix) + "/"

    def list_keys(self, prefix: str) -> Iterator[str]:
        for item in self._list("list_objects_v2", "Contents", self._under(prefix)):
            name = str(item["Key"])
            if not name.endswith("/"):
                yield name[len(self._root) :]

    def hostnames_in_bucket(self) -> list[str]:
        """The top-level folders of the bucket: the host names that store there."""
        names = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Delimiter="/")
            for page in pages:
                names += [str(item["Prefix"]).rstrip("/") for item in page.get("CommonPrefixes", [])]
        except _BOTO_ERRORS as error:
            raise _storage_error(error, f"s3://{self.bucket}") from None
        return sorted(names)

    def list_unfinished(self, prefix: str) -> Iterator[str]:
        for upload in self._list("list_multipart_uploads", "Uploads", self._under(prefix)):
            yield str(upload["Key"])[len(self._root) :]

    def size(self, key: str) -> int:
        object_key = self._object_key(key)
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=object_key)
        except _BOTO_ERRORS as error:
            if _is_missing(error):
                raise self._not_found(object_key, error) from None
            raise _storage_error(error, self._location(object_key)) from None
        return int(response["ContentLength"])

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=object_key)
        except _BOTO_ERRORS as error:
            raise _storage_error(error, self._location(object_key)) from None

    def delete_prefix(self, prefix: str) -> None:
        """Delete the object ``prefix`` and everything under ``prefix/``, unfinished uploads included."""
        exact = self._object_key(prefix)
        under = exact + "/"
        location = self._location(exact)
        for upload in self._list("list_multipart_uploads", "Uploads", exact):
            if upload["Key"] == exact or str(upload["Key"]).startswith(under):
                try:
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except _BOTO_ERRORS as error:
                    if _error_code(error) != "NoSuchUpload":
                        raise _storage_error(error, location) from None
        batch = [exact]
        for item in self._list("list_objects_v2", "Contents", under):
            batch.append(str(item["Key"]))
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch, location)
                batch = []
        if batch:
            self._delete_batch(batch, location)

    def _delete_batch(self, keys: list[str], location: str) -> None:
        try:
            response = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
            )
        except _BOTO_ERRORS as error:
            raise _storage_error(error, location) from None
        errors = response.get("Errors") or []
        if errors:
            first, code = errors[0], str(errors[0].get("Code", "Unknown"))
            error_class = TransientStorageError if code in _TRANSIENT_CODES else StorageError
            raise error_class(
                f"{self._location(str(first.get('Key', '')))}: {code}: "
                f"{str(first.get('Message', ''))[:_MESSAGE_LIMIT]} ({len(errors)} objects not deleted)"
            )

    def _put_if(
        self, object_key: str, data: bytes, condition: dict[str, str], tier: str | None = None
    ) -> bool:
        """One conditional PUT; False when the condition does not hold (or another conditional write
        of the key is in flight: S3's ConditionalRequestConflict means someone else is winning)."""
        extra = {**self._sse_args, **self._lock_args(tier)}
        if tier:
            extra["Tagging"] = urlencode({"tier": tier})
        try:
            self._client.put_object(Bucket=self.bucket, Key=object_key, Body=data, **condition, **extra)
        except _BOTO_ERRORS as error:
            if _error_code(error) in _CONDITION_FAILED or _is_missing(error):
                return False
            raise _storage_error(error, self._location(object_key)) from None
        return True

    def create_exclusive(self, key: str, data: bytes, tier: str | None = None) -> bool:
        return self._put_if(self._object_key(key), data, {"IfNoneMatch": "*"}, tier)

    def read_versioned(self, key: str) -> tuple[bytes, ObjectVersion]:
        object_key = self._object_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=object_key)
            data = bytes(response["Body"].read())
        except _BOTO_ERRORS as error:
            if _is_missing(error):
                raise self._not_found(object_key, error) from None
            raise _storage_error(error, self._location(object_key)) from None
        last_modified = response["LastModified"].astimezone(UTC)
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            answered_at = parsedate_to_datetime(date).astimezone(UTC) if date else None
        except (TypeError, ValueError):
            answered_at = None
        if answered_at is None:  # every S3 answer carries one; a proxy that drops it gets this machine's
            logger.warning("no Date header from S3; using this machine's clock location=%s", object_key)
            answered_at = datetime.now(UTC)
        return data, ObjectVersion(str(response["ETag"]), last_modified, answered_at)

    def replace_if(self, key: str, data: bytes, etag: str) -> bool:
        return self._put_if(self._object_key(key), data, {"IfMatch": etag})

    def delete_if(self, key: str, etag: str) -> bool:
        object_key = self._object_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=object_key, IfMatch=etag)
        except _BOTO_ERRORS as error:
            if _error_code(error) in _CONDITION_FAILED or _is_missing(error):
                return False
            raise _storage_error(error, self._location(object_key)) from None
        return True

    def promote(self, source_prefix: str, target_prefix: str, tier: str, last_name: str) -> None:
        """In place: nothing to do. Staged apart (the workflow, which verifies before promoting):
        server-side copy, re-tagged ``tier``, ``last_name`` last, then delete the staged objects."""
        staging, final = source_prefix.strip("/"), target_prefix.strip("/")
        if staging == final:
            return
        if not self.stage_in_temp:
            raise StorageError(
                f"S3 cannot rename {self.uri(staging)} to {self.uri(final)}: sets are written in place"
            )
        last_target = f"{final}/{last_name}"
        if self.exists(last_target):  # a complete set: never overwrite a byte of it
            if self._same_bytes(f"{staging}/{last_name}", last_target):  # promoted already (a retry)
                self.delete_prefix(staging)
                return
            raise StorageError(f"cannot promote: {self.uri(last_target)} already exists; nothing was copied")
        keys = sorted(self.list_keys(staging), key=lambda key: key.endswith("/" + last_name))
        for key in keys:
            target = f"{final}/{key[len(staging) + 1 :]}"
            if target == last_target:
                # Last, and create-only: of two writers of one set, the second cannot replace the first's.
                if not self.create_exclusive(target, self.read_bytes(key), tier):
                    raise StorageError(f"cannot promote: {self.uri(target)} already exists (another writer)")
            else:
                self._copy(key, target, tier)
        self.delete_prefix(staging)

    def _same_bytes(self, key: str, other: str) -> bool:
        try:
            return self.read_bytes(key) == self.read_bytes(other)
        except NotFoundError:
            return False

    def _copy(self, source_key: str, target_key: str, tier: str) -> None:
        source, target = self._object_key(source_key), self._object_key(target_key)
        try:
            self._client.copy(
                {"Bucket": self.bucket, "Key": source},
                self.bucket,
                target,
                ExtraArgs={"Tagging": urlencode({"tier": tier}), **self._sse_args},
            )
            # A multipart copy may not carry the tagging: set it explicitly, the lifecycle depends on it.
            self._client.put_object_tagging(
                Bucket=self.bucket, Key=target, Tagging={"TagSet": [{"Key": "tier", "Value": tier}]}
            )
            # Retention by its own call: a copy's lock headers are not honoured alike by every S3 (moto
            # wants an upload checksum). A promote cut short here is retried whole: the manifest, the
            # last object, is written with its retention, and only once every copy is locked.
            lock = self._lock_args(tier)
            if lock:
                self._client.put_object_retention(
                    Bucket=self.bucket,
                    Key=target,
                    Retention={
                        "Mode": lock["ObjectLockMode"],
                        "RetainUntilDate": lock["ObjectLockRetainUntilDate"],
                    },
                )
        except _BOTO_ERRORS as error:
            raise _storage_error(error, self._location(target)) from None

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A GET URL valid for ``expires_in`` seconds. It is a bearer credential: never log it."""
        object_key = self._object_key(key)
        try:
            return str(
                self._client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": object_key}, ExpiresIn=expires_in
                )
            )
        except _BOTO_ERRORS as error:
            raise _storage_error(error, self._location(object_key)) from None

    def object_tags(self, key: str) -> dict[str, str]:
        object_key = self._object_key(key)
        try:
            response = self._client.get_object_tagging(Bucket=self.bucket, Key=object_key)
        except _BOTO_ERRORS as error:
            if _is_missing(error):
                raise self._not_found(object_key, error) from None
            raise _storage_error(error, self._location(object_key)) from None
        return {str(tag["Key"]): str(tag["Value"]) for tag in response.get("TagSet", [])}
