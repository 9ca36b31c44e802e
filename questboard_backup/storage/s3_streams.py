"""Streaming one S3 object in and out: the bounded multipart writer behind ``open_write`` and the
reader behind ``open_read``, both turning botocore's errors into storage errors."""

from __future__ import annotations

import io
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from questboard_backup.errors import StorageError
from questboard_backup.storage.s3_errors import BOTO_ERRORS, storage_error

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 2**20
MAX_PART_SIZE = 5 * 2**30
MAX_PARTS = 10_000
_ENDED = {"closed": "was closed", "aborted": "was aborted", "failed": "failed and was aborted"}


class ObjectReader(io.RawIOBase):
    """A GetObject body whose read errors arrive as storage errors."""

    def __init__(self, body: Any, location: str) -> None:
        self._body = body
        self._location = location

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        try:
            return bytes(self._body.read(None if size is None or size < 0 else size))
        except BOTO_ERRORS as error:
            raise storage_error(error, self._location) from None

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


class S3Writer:
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
            if isinstance(error, BOTO_ERRORS):
                raise storage_error(error, self._location) from None
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
            if isinstance(error, BOTO_ERRORS):
                raise storage_error(error, self._location) from None
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
        except BOTO_ERRORS as error:  # an abort runs on failure paths; lifecycle rules sweep up
            logger.warning(
                "multipart upload not aborted location=%s error=%s",
                self._location,
                storage_error(error, self._location),
            )
