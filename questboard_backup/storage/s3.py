"""S3 storage: key K lives at ``s3://{bucket}/{prefix}/K``, streamed in with bounded multipart uploads.

S3 has no rename: a backup set is written in place and becomes a backup when its manifest appears.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO, cast
from urllib.parse import urlencode

from questboard_backup.errors import (
    ConfigurationError,
    NotFoundError,
    StorageError,
    TransientStorageError,
)
from questboard_backup.storage.base import ObjectVersion, Storage
from questboard_backup.storage.s3_client import make_client
from questboard_backup.storage.s3_errors import (
    BOTO_ERRORS,
    CONDITION_FAILED,
    MESSAGE_LIMIT,
    TRANSIENT_CODES,
    error_code,
    is_missing,
    storage_error,
)
from questboard_backup.storage.s3_retention import ObjectLockRetention
from questboard_backup.storage.s3_streams import MAX_PART_SIZE, MIN_PART_SIZE, ObjectReader, S3Writer

logger = logging.getLogger(__name__)

DELETE_BATCH = 1000


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
        self._retention = ObjectLockRetention(object_lock, retention_days)
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
        if error_code(error) != "NoSuchKey":
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except BOTO_ERRORS as bucket_error:  # only a missing bucket changes the answer
                if is_missing(bucket_error) or error_code(bucket_error) == "NoSuchBucket":
                    return StorageError(f"{location}: NoSuchBucket: bucket {self.bucket} does not exist")
        return NotFoundError(f"{location} does not exist")

    def uri(self, key: str) -> str:
        return self._location(self._object_key(key))

    def open_write(self, key: str, tier: str | None = None) -> S3Writer:
        object_key = self._object_key(key)
        put_args = {**self._sse_args, **self._retention.put_args(tier)}
        if tier:
            put_args["Tagging"] = urlencode({"tier": tier})
        return S3Writer(
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
        except BOTO_ERRORS as error:
            if is_missing(error):
                raise self._not_found(object_key, error) from None
            raise storage_error(error, self._location(object_key)) from None
        return cast(BinaryIO, ObjectReader(response["Body"], self._location(object_key)))

    def _list(self, operation: str, items: str, prefix: str) -> Iterator[dict[str, Any]]:
        location = self._location(prefix)
        try:
            for page in self._client.get_paginator(operation).paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get(items, [])
        except BOTO_ERRORS as error:
            raise storage_error(error, location) from None

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

    def list_ages(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        """(key, size, last modified) of every object under ``prefix``."""
        for item in self._list("list_objects_v2", "Contents", self._under(prefix)):
            name = str(item["Key"])
            if not name.endswith("/"):
                yield name[len(self._root) :], int(item.get("Size", 0)), item["LastModified"]

    def hostnames_in_bucket(self) -> list[str]:
        """The top-level folders of the bucket: the host names that store there."""
        names = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Delimiter="/")
            for page in pages:
                names += [str(item["Prefix"]).rstrip("/") for item in page.get("CommonPrefixes", [])]
        except BOTO_ERRORS as error:
            raise storage_error(error, f"s3://{self.bucket}") from None
        return sorted(names)

    def list_unfinished(self, prefix: str) -> Iterator[str]:
        for upload in self._list("list_multipart_uploads", "Uploads", self._under(prefix)):
            yield str(upload["Key"])[len(self._root) :]

    def size(self, key: str) -> int:
        object_key = self._object_key(key)
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=object_key)
        except BOTO_ERRORS as error:
            if is_missing(error):
                raise self._not_found(object_key, error) from None
            raise storage_error(error, self._location(object_key)) from None
        return int(response["ContentLength"])

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=object_key)
        except BOTO_ERRORS as error:
            raise storage_error(error, self._location(object_key)) from None

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
                except BOTO_ERRORS as error:
                    if error_code(error) != "NoSuchUpload":
                        raise storage_error(error, location) from None
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
        except BOTO_ERRORS as error:
            raise storage_error(error, location) from None
        errors = response.get("Errors") or []
        if errors:
            first, code = errors[0], str(errors[0].get("Code", "Unknown"))
            error_class = TransientStorageError if code in TRANSIENT_CODES else StorageError
            raise error_class(
                f"{self._location(str(first.get('Key', '')))}: {code}: "
                f"{str(first.get('Message', ''))[:MESSAGE_LIMIT]} ({len(errors)} objects not deleted)"
            )

    def _put_if(
        self, object_key: str, data: bytes, condition: dict[str, str], tier: str | None = None
    ) -> bool:
        """One conditional PUT; False when the condition does not hold (or another conditional write
        of the key is in flight: S3's ConditionalRequestConflict means someone else is winning)."""
        extra = {**self._sse_args, **self._retention.put_args(tier)}
        if tier:
            extra["Tagging"] = urlencode({"tier": tier})
        try:
            self._client.put_object(Bucket=self.bucket, Key=object_key, Body=data, **condition, **extra)
        except BOTO_ERRORS as error:
            if error_code(error) in CONDITION_FAILED or is_missing(error):
                return False
            raise storage_error(error, self._location(object_key)) from None
        return True

    def create_exclusive(self, key: str, data: bytes, tier: str | None = None) -> bool:
        return self._put_if(self._object_key(key), data, {"IfNoneMatch": "*"}, tier)

    def read_versioned(self, key: str) -> tuple[bytes, ObjectVersion]:
        object_key = self._object_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=object_key)
            data = bytes(response["Body"].read())
        except BOTO_ERRORS as error:
            if is_missing(error):
                raise self._not_found(object_key, error) from None
            raise storage_error(error, self._location(object_key)) from None
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
        except BOTO_ERRORS as error:
            if error_code(error) in CONDITION_FAILED or is_missing(error):
                return False
            raise storage_error(error, self._location(object_key)) from None
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
            lock = self._retention.put_args(tier)
            if lock:
                self._client.put_object_retention(
                    Bucket=self.bucket,
                    Key=target,
                    Retention={
                        "Mode": lock["ObjectLockMode"],
                        "RetainUntilDate": lock["ObjectLockRetainUntilDate"],
                    },
                )
        except BOTO_ERRORS as error:
            raise storage_error(error, self._location(target)) from None

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A GET URL valid for ``expires_in`` seconds. It is a bearer credential: never log it."""
        object_key = self._object_key(key)
        try:
            return str(
                self._client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": object_key}, ExpiresIn=expires_in
                )
            )
        except BOTO_ERRORS as error:
            raise storage_error(error, self._location(object_key)) from None

    def object_tags(self, key: str) -> dict[str, str]:
        object_key = self._object_key(key)
        try:
            response = self._client.get_object_tagging(Bucket=self.bucket, Key=object_key)
        except BOTO_ERRORS as error:
            if is_missing(error):
                raise self._not_found(object_key, error) from None
            raise storage_error(error, self._location(object_key)) from None
        return {str(tag["Key"]): str(tag["Value"]) for tag in response.get("TagSet", [])}
