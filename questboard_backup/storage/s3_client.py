"""The boto3 S3 client the engine uses: timeouts, a connection pool sized for the upload
concurrency, and botocore's retries unless the standard AWS variables choose their own."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

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
            # Presigned download URLs must be SigV4: SSE-KMS objects refuse anything else.
            signature_version="s3v4",
            **retries,
        ),
    )
