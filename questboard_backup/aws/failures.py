"""A failed AWS call as the adapters report it: its error code, one line of detail, whether a retry may help.

Each adapter turns the result into its own error class (KMS, SNS, Scheduler); only the rule of what is
worth retrying lives here, so the three cannot disagree on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

#: Error codes of throttling, timeouts and service-side faults (KMS, SNS, Scheduler and AWS-wide ones).
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KMSThrottling",
        "KMSThrottlingException",
    }
)
_DETAIL_LIMIT = 200


@dataclass(frozen=True)
class AwsFailure:
    code: str  # the AWS error code, or the botocore exception's name when no response came back
    detail: str  # the first line of the error's message, cut to 200 characters; may be empty
    transient: bool

    def __str__(self) -> str:
        return f"{self.code} ({self.detail})" if self.detail else self.code


def classify(error: BotoCoreError | ClientError) -> AwsFailure:
    """Throttling, 5xx and connection failures are transient; refusals and client-side errors are not."""
    if isinstance(error, ClientError):
        body = error.response.get("Error", {})
        code = str(body.get("Code") or "Unknown")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        transient = code in TRANSIENT_CODES or status == 429 or status >= 500
        return AwsFailure(code, _first_line(str(body.get("Message") or "")), transient)
    transient = isinstance(error, (HTTPClientError, BotoConnectionError))
    return AwsFailure(type(error).__name__, _first_line(str(error)), transient)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:_DETAIL_LIMIT]
