"""How botocore's errors become the engine's: one line naming where, never a credential, and
throttling, server errors and dropped connections told apart as transient."""

from __future__ import annotations

from urllib.parse import urlsplit

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

from questboard_backup.errors import StorageError, TransientStorageError

MESSAGE_LIMIT = 200
TRANSIENT_CODES = {
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
#: A conditional request lost: the object is not (or no longer) the version named, or another
#: conditional write of it is in flight.
CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
BOTO_ERRORS = (BotoCoreError, ClientError)


def error_code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return ""


def is_missing(error: Exception) -> bool:
    return error_code(error) in _MISSING_CODES


def _endpoint_host(error: Exception) -> str:
    endpoint = str(getattr(error, "kwargs", {}).get("endpoint_url") or "")
    return urlsplit(endpoint).netloc or "the S3 endpoint"


def storage_error(error: BotoCoreError | ClientError, location: str) -> StorageError:
    """The one place botocore errors become ours: one line, naming where, never a credential."""
    if isinstance(error, ClientError):
        code = error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = str(error.response.get("Error", {}).get("Message") or "").strip().splitlines()
        message = f"{location}: {code}: {text[0][:MESSAGE_LIMIT]}" if text else f"{location}: {code}"
        if code in TRANSIENT_CODES or status >= 500:
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
    first = (str(error).splitlines() or [""])[0][:MESSAGE_LIMIT]
    return StorageError(f"{location}: {type(error).__name__}: {first}")
