"""The uploads bucket as the s3uploads component uses it: listings checked to come in key order, small JSON
records, server-side copies and batched deletes. Every botocore error becomes a source error, one line
naming the object, classified as the storage module does (``storage_error``): throttling, 5xx and dropped
connections become SourceUnreachableError (retried by the workflows), anything else SourceError.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from questboard_backup.errors import (
    BackupError,
    SourceError,
    SourceUnreachableError,
    StorageError,
    TransientStorageError,
)
from questboard_backup.storage.s3_errors import BOTO_ERRORS, is_missing, storage_error

logger = logging.getLogger(__name__)

DELETE_BATCH = 1000
#: The largest object one CopyObject copies. Larger ones need a multipart copy (UploadPartCopy), which
#: this component does not do: a swap refuses, before it changes anything, a target holding one.
COPY_LIMIT = 5 * 2**30
#: What a JSON record may weigh; the component's own are a few hundred bytes.
RECORD_LIMIT = 64 * 1024


class Listed(NamedTuple):
    key: str
    size: int
    etag: str


def source_error(label: str, error: BaseException, location: str) -> BackupError:
    """A botocore error, or a storage error of the shared S3 writer, as the component's own error."""
    stored = storage_error(error, location) if isinstance(error, BOTO_ERRORS) else error
    if not isinstance(stored, StorageError):
        return SourceError(f"{label}: {location}: {type(error).__name__}")
    kind = SourceUnreachableError if isinstance(stored, TransientStorageError) else SourceError
    return kind(f"{label}: {stored}")


def ordered_key(key: str) -> bytes:
    """S3 lists keys in the binary order of their UTF-8 encoding."""
    return key.encode("utf-8", "surrogatepass")


class Bucket:
    def __init__(self, label: str, client: Any, name: str) -> None:
        self.label, self.client, self.name = label, client, name

    def location(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def fail(self, error: BaseException, key: str) -> BackupError:
        return source_error(self.label, error, self.location(key))

    def objects(self, prefix: str) -> Iterator[Listed]:
        """Every object under ``prefix``, in key order (refused when the listing is not: the swap's and the
        restore's merges rely on it), a page at a time."""
        previous: bytes | None = None
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    key = str(item["Key"])
                    if previous is not None and ordered_key(key) <= previous:
                        raise SourceError(
                            f"{self.label}: {self.location(prefix)} is not listed in key order "
                            "(a directory bucket?); it cannot be backed up or restored"
                        )
                    previous = ordered_key(key)
                    yield Listed(key, int(item.get("Size", 0)), str(item.get("ETag", "")))
        except BOTO_ERRORS as error:
            raise self.fail(error, prefix) from None

    def is_empty(self, prefix: str) -> bool:
        try:
            response = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix, MaxKeys=1)
        except BOTO_ERRORS as error:
            raise self.fail(error, prefix) from None
        return not response.get("Contents")

    def folders(self, prefix: str) -> Iterator[str]:
        """The "folders" (common prefixes up to the next ``/``) whose keys start with ``prefix``."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix, Delimiter="/"
        )
        try:
            for page in pages:
                for item in page.get("CommonPrefixes", []):
                    yield str(item["Prefix"])
        except BOTO_ERRORS as error:
            raise self.fail(error, prefix) from None

    def get(self, key: str) -> dict[str, Any] | None:
        """The GetObject answer (its body still to read); None when the object is gone."""
        try:
            return dict(self.client.get_object(Bucket=self.name, Key=key))
        except BOTO_ERRORS as error:
            if is_missing(error):
                return None
            raise self.fail(error, key) from None

    def read_json(self, key: str) -> dict[str, Any] | None:
        """A record the component wrote (S3 writes objects whole); None when there is none."""
        response = self.get(key)
        if response is None:
            return None
        body = response["Body"]
        try:
            data = body.read(RECORD_LIMIT + 1)
        except BOTO_ERRORS as error:
            raise self.fail(error, key) from None
        finally:
            body.close()
        try:
            record = json.loads(data) if len(data) <= RECORD_LIMIT else None
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise SourceError(f"{self.label}: {self.location(key)} is not a record of this engine")
        return record

    def write_json(self, key: str, record: dict[str, Any]) -> None:
        try:
            self.client.put_object(
                Bucket=self.name,
                Key=key,
                Body=json.dumps(record).encode(),
                ContentType="application/json",
            )
        except BOTO_ERRORS as error:
            raise self.fail(error, key) from None

    def copy(self, source: Listed, target: str) -> None:
        """A server-side copy, content and metadata (ContentType, user metadata, Cache-Control...)."""
        if source.size > COPY_LIMIT:
            raise self._too_large(source)
        try:
            # A checksum of the copy's own, computed by S3: a multipart source's is a checksum of its parts.
            self.client.copy_object(
                Bucket=self.name,
                Key=target,
                CopySource={"Bucket": self.name, "Key": source.key},
                ChecksumAlgorithm="CRC32",
            )
        except BOTO_ERRORS as error:
            raise self.fail(error, target) from None

    def refuse_too_large(self, prefix: str) -> None:
        """SourceError when an object under ``prefix`` is too large for a single CopyObject."""
        for item in self.objects(prefix):
            if item.size > COPY_LIMIT:
                raise self._too_large(item)

    def _too_large(self, item: Listed) -> SourceError:
        return SourceError(
            f"{self.label}: {self.location(item.key)} is larger than 5 GiB, and multipart copies are "
            "not supported: restore it by hand"
        )

    def delete(self, keys: Iterable[str]) -> int:
        """Delete ``keys`` (an iterator is consumed as it goes), a thousand a request; returns how many."""
        batch: list[str] = []
        count = 0
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, keys: list[str]) -> int:
        try:
            response = self.client.delete_objects(
                Bucket=self.name, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
            )
        except BOTO_ERRORS as error:
            raise self.fail(error, keys[0]) from None
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise SourceError(
                f"{self.label}: {self.location(str(first.get('Key', '')))}: "
                f"{first.get('Code', 'Unknown')} ({len(errors)} objects not deleted)"
            )
        return len(keys)

    def remove_prefix(self, prefix: str, last: str | None = None) -> int:
        """Delete every object under ``prefix`` and abort its unfinished uploads; the object ``last`` (a
        record saying whose the prefix is) goes only once everything else has. Returns objects deleted."""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.name, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    self.client.abort_multipart_upload(
                        Bucket=self.name, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
        except BOTO_ERRORS as error:
            raise self.fail(error, prefix) from None
        count = self.delete(item.key for item in self.objects(prefix) if item.key != last)
        if last is not None and last.startswith(prefix):
            count += self.delete([last])
        return count
