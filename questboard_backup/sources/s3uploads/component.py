"""Uploads kept in S3: every object under ``s3://bucket/prefix/`` as one streaming PAX tar, restored through
a staging prefix beside the target and a swap (swap.py).

The archive holds one regular-file member per object, in the listing's key order, named by its key below
the prefix; its metadata rides in PAX headers (``QB.s3.ContentType``, ``QB.s3.CacheControl``,
``QB.s3.ContentDisposition``, ``QB.s3.ContentEncoding``, ``QB.s3.ContentLanguage`` and the user metadata
as JSON in ``QB.s3.Metadata``). Not kept: tags, storage class, ACLs, object lock settings and the source's
server-side encryption key (restored objects take the bucket's default encryption).

Objects are streamed one at a time (GetObject's body read in chunks, uploads in bounded multipart parts);
listings are read a page at a time. A restore uploads each member into staging as it is read: every byte
the stream yields is authenticated, staging is beside the target (never in it), and any failure, the
stream's sealed end included, removes the staging before raising. The facts use the files component's
keys: ``files`` and ``bytes`` (checked on restore), ``skipped`` and ``changed_during_backup``.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from questboard_backup.address import TIMESTAMP_PATTERN, parse_s3_uri
from questboard_backup.errors import (
    BackupError,
    ConfigurationError,
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
    StorageError,
)
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StagedRestore, StreamOpener
from questboard_backup.sources.s3uploads import swap
from questboard_backup.sources.s3uploads.bucket import Bucket, source_error
from questboard_backup.sources.s3uploads.swap import Place
from questboard_backup.sources.tar_reading import next_member, open_archive
from questboard_backup.storage.s3_errors import BOTO_ERRORS
from questboard_backup.storage.s3_streams import S3Writer

logger = logging.getLogger(__name__)

NAME = "s3uploads"
#: GetObject answer field -> PAX header of the member.
METADATA_HEADERS = {
    "ContentType": "QB.s3.ContentType",
    "CacheControl": "QB.s3.CacheControl",
    "ContentDisposition": "QB.s3.ContentDisposition",
    "ContentEncoding": "QB.s3.ContentEncoding",
    "ContentLanguage": "QB.s3.ContentLanguage",
}
USER_METADATA_HEADER = "QB.s3.Metadata"
#: Restore uploads: parts of 8 MiB, two in flight (about 24 MiB of buffers per object being written).
PART_SIZE = 8 * 2**20
PART_CONCURRENCY = 2
#: The longest S3 key, in UTF-8 bytes.
KEY_LIMIT = 1024

ClientFactory = Callable[[str], Any]


@dataclass
class _Counts:
    files: int = 0
    bytes: int = 0
    skipped: int = 0
    changed_during_backup: int = 0


class S3UploadsComponent(StagedRestore):
    """Back up every object under an S3 prefix; restore into the prefix this instance is bound to.

    ``uri`` is ``s3://bucket/prefix``; the prefix is taken as a folder (``uploads`` means ``uploads/``) and
    may not be empty: a restore's staging and previous copy live beside it. ``client_factory`` builds the
    S3 client from the service name (``"s3"``); without one the engine's S3 client is built on first use.
    """

    def __init__(self, uri: str, client_factory: ClientFactory | None = None, name: str = NAME) -> None:
        self.name = name
        self.parallel_streams = False
        try:
            bucket, key = parse_s3_uri(uri)
        except ValueError as error:
            raise ConfigurationError(f"{name}: {error}") from None
        folder = key.strip("/")
        if not folder:
            raise ConfigurationError(
                f"{name}: {uri} names a whole bucket; name a prefix (s3://{bucket}/uploads/): "
                "a restore keeps its staging beside it"
            )
        self.prefix = folder + "/"
        self.uri = f"s3://{bucket}/{self.prefix}"
        self._bucket_name = bucket
        self._factory = client_factory
        self._bucket: Bucket | None = None

    @property
    def bucket(self) -> Bucket:
        if self._bucket is None:
            if self._factory is not None:
                client = self._factory("s3")
            else:
                from questboard_backup.storage.s3_client import make_client

                client = make_client(PART_CONCURRENCY)
            self._bucket = Bucket(self.name, client, self._bucket_name)
        return self._bucket

    def check(self) -> None:
        try:
            self.bucket.is_empty(self.prefix)
        except BackupError as error:
            raise SourceUnreachableError(str(error)) from None

    def check_restore_target(self) -> None:
        self.check()

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts:
        """``open_part`` is not used: one stream."""
        counts = _Counts()
        bucket = self.bucket
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=READ_SIZE) as tar:
            # Content is copied in chunks of this size (16 KiB by default); undocumented, hence untyped.
            tar.copybufsize = READ_SIZE  # type: ignore[attr-defined]
            for listed in bucket.objects(self.prefix):
                name = listed.key[len(self.prefix) :]
                if not name:
                    logger.warning(
                        "object skipped location=%s reason=%s",
                        bucket.location(listed.key),
                        "the prefix itself",
                    )
                    counts.skipped += 1
                    continue
                response = bucket.get(listed.key)
                if response is None:
                    logger.warning(
                        "object changed during backup location=%s change=vanished",
                        bucket.location(listed.key),
                    )
                    counts.changed_during_backup += 1
                    continue
                info = _member(name, response)
                body = _BodyReader(response["Body"], info.size, bucket, listed.key)
                try:
                    tar.addfile(info, cast(IO[bytes], body))
                finally:
                    body.close()
                counts.files += 1
                counts.bytes += info.size
                if str(response.get("ETag", "")) != listed.etag:
                    logger.warning(
                        "object changed during backup location=%s change=replaced",
                        bucket.location(listed.key),
                    )
                    counts.changed_during_backup += 1
        logger.info(
            "objects archived component=%s source=%s files=%d bytes=%d skipped=%d changed=%d",
            self.name,
            self.uri,
            counts.files,
            counts.bytes,
            counts.skipped,
            counts.changed_during_backup,
        )
        return {
            "source": self.uri,
            "files": counts.files,
            "bytes": counts.bytes,
            "skipped": counts.skipped,
            "changed_during_backup": counts.changed_during_backup,
        }

    def stage(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        expected = {key: facts.get(key) for key in ("files", "bytes")}
        if not all(type(value) is int and value >= 0 for value in expected.values()):
            raise IntegrityError(f"{self.name}: the manifest facts hold no file and byte counts")
        if facts.get("source") != self.uri:
            logger.warning(
                "restore target differs from the backed-up prefix component=%s target=%s", self.name, self.uri
            )
        place, bucket = self._place(options), self.bucket
        if not bucket.is_empty(place.staging):
            raise SourceError(
                f"{self.name}: staging {bucket.location(place.staging)} already exists; remove it first"
            )
        if not bucket.is_empty(place.previous):
            raise SourceError(
                f"{self.name}: {bucket.location(place.previous)} already exists; remove it first"
            )
        bucket.write_json(place.record, {"target": self.uri, "timestamp": options.timestamp})
        try:
            counts = self._upload(open_stream, place)
            problems = [
                f"{key} {expected[key]} expected, {getattr(counts, key)} found"
                for key in expected
                if expected[key] != getattr(counts, key)
            ]
            if problems:
                raise RestoreVerificationError(
                    f"{self.name}: archive does not match the manifest: {'; '.join(problems)}"
                )
            staged = _Counts()
            for item in bucket.objects(place.tree):
                staged.files += 1
                staged.bytes += item.size
            if (staged.files, staged.bytes) != (counts.files, counts.bytes):
                raise RestoreVerificationError(
                    f"{self.name}: staging {bucket.location(place.tree)} does not hold what was uploaded"
                )
        except BaseException:
            try:
                swap.remove_staging(bucket, self.uri, place)
            except BackupError as error:
                logger.error("staging not removed component=%s error=%s", self.name, error)
            raise
        logger.info(
            "objects staged component=%s target=%s files=%d bytes=%d",
            self.name,
            self.uri,
            counts.files,
            counts.bytes,
        )
        return {"target": self.uri, "files": counts.files, "bytes": counts.bytes}

    def swap_in(self, options: RestoreOptions) -> Facts:
        return swap.swap_in(self.bucket, self.uri, self._place(options))

    def settle(self, options: RestoreOptions) -> None:
        try:
            place = self._place(options)
        except ConfigurationError as error:
            logger.error("swap not settled component=%s error=%s", self.name, error)
            return
        swap.settle(self.bucket, self.uri, place)

    def undo(self, options: RestoreOptions) -> list[str]:
        return [f"{self.name}: {line}" for line in swap.undo(self.bucket, self.uri, self._place(options))]

    def clear_leftovers(self, options: RestoreOptions) -> list[str]:
        lines = swap.clear_leftovers(self.bucket, self.uri, self._place(options))
        return [f"{self.name}: {line}" for line in lines]

    def _place(self, options: RestoreOptions) -> Place:
        if not re.fullmatch(TIMESTAMP_PATTERN, options.timestamp, re.ASCII):
            raise ConfigurationError(f"restore timestamp {options.timestamp!r} is not YYYYMMDD_HHMMSS")
        return Place(self.prefix, options.timestamp)

    def _upload(self, open_stream: StreamOpener, place: Place) -> _Counts:
        """Read the archive to its authenticated end, uploading each member into staging as it comes."""
        counts = _Counts()
        previous: bytes | None = None
        with open_stream() as reader, open_archive(self.name, reader) as tar:
            while (member := next_member(self.name, tar)) is not None:
                encoded, put_args = _checked(self.name, member, previous)
                if len(place.prefix.encode()) + len(encoded) > KEY_LIMIT:
                    raise SourceError(
                        f"{self.name}: {member.name!r} below {self.uri} is longer than an S3 key may be"
                    )
                previous = encoded
                self._upload_member(tar, member, place.tree + member.name, put_args)
                counts.files += 1
                counts.bytes += member.size
        return counts

    def _upload_member(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, key: str, put_args: dict[str, Any]
    ) -> None:
        source = tar.extractfile(member)
        if source is None:
            raise IntegrityError(f"{self.name}: archive entry {member.name!r} has no content")
        bucket = self.bucket
        location = bucket.location(key)
        writer = S3Writer(bucket.client, bucket.name, key, location, put_args, PART_SIZE, PART_CONCURRENCY)
        try:
            while True:
                try:
                    chunk = source.read(READ_SIZE)
                except tarfile.TarError as error:
                    raise IntegrityError(
                        f"{self.name}: archive entry {member.name!r} unreadable ({error})"
                    ) from None
                if not chunk:
                    break
                writer.write(chunk)
            writer.close()
        except StorageError as error:
            writer.abort()
            raise source_error(self.name, error, location) from None
        except BaseException:
            writer.abort()
            raise


def _member(name: str, response: Mapping[str, Any]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE
    info.size = int(response["ContentLength"])
    info.mode = 0o644
    modified = response.get("LastModified")
    info.mtime = int(modified.timestamp()) if modified is not None else 0
    headers = {
        header: str(response[field]) for field, header in METADATA_HEADERS.items() if response.get(field)
    }
    if response.get("Metadata"):
        headers[USER_METADATA_HEADER] = json.dumps(dict(response["Metadata"]), sort_keys=True)
    info.pax_headers = headers
    return info


def _checked(label: str, member: tarfile.TarInfo, previous: bytes | None) -> tuple[bytes, dict[str, Any]]:
    """Refuse an entry that is not an object dump writes: a regular file with a key in order after the last
    (no duplicates) and well-formed metadata. Returns its key's encoding and the upload arguments."""
    name = member.name
    encoded = name.encode("utf-8", "surrogateescape")
    put_args: dict[str, Any] = {}
    if not member.isreg():
        reason: str | None = "not a regular file"
    elif not name or "\0" in name or not _is_utf8(name):
        reason = "empty or invalid name"
    elif previous is not None and encoded <= previous:
        reason = "duplicate or out of order"
    else:
        put_args, reason = _metadata(member)
    if reason is not None:
        raise IntegrityError(f"{label}: archive entry {name!r} refused: {reason}")
    return encoded, put_args


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _metadata(member: tarfile.TarInfo) -> tuple[dict[str, Any], str | None]:
    put_args: dict[str, Any] = {}
    for field, header in METADATA_HEADERS.items():
        if header in member.pax_headers:
            put_args[field] = member.pax_headers[header]
    raw = member.pax_headers.get(USER_METADATA_HEADER)
    if raw is not None:
        try:
            metadata = json.loads(raw)
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
        ):
            return {}, "user metadata is not a map of strings"
        put_args["Metadata"] = metadata
    return put_args, None


class _BodyReader:
    """Exactly ``size`` bytes of a GetObject body, read in the chunks tarfile asks for; a body that ends
    early or fails is the source's failure, never a short archive member."""

    def __init__(self, body: Any, size: int, bucket: Bucket, key: str) -> None:
        self._body, self._remaining, self._bucket, self._key = body, size, bucket, key

    def read(self, size: int = -1) -> bytes:
        wanted = self._remaining if size < 0 else min(size, self._remaining)
        parts: list[bytes] = []
        got = 0
        while got < wanted:
            try:
                data = self._body.read(wanted - got)
            except BOTO_ERRORS as error:
                raise self._bucket.fail(error, self._key) from None
            if not data:
                raise SourceUnreachableError(
                    f"{self._bucket.label}: {self._bucket.location(self._key)}: the connection ended "
                    "before the whole object arrived"
                )
            parts.append(data)
            got += len(data)
        self._remaining -= wanted
        return b"".join(parts)

    def close(self) -> None:
        self._body.close()
