"""A property-based fuzz of the admin API from its committed OpenAPI document: schemathesis generates
valid and invalid requests for every operation and sends them to the local server (`make api`: the
real authorizer and handlers behind the API Gateway emulation, over the offline world). No answer may
be a server error, and every answer must be one the document declares: its status, its content type
and its body's schema."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.local_api import LocalApi, local_api

REPO = Path(__file__).resolve().parents[2]
TOKEN = "qbb_fuzz_" + secrets.token_urlsafe(24)
schema = schemathesis.openapi.from_path(str(REPO / "docs" / "openapi.json"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApi]:
    with local_api(TOKEN, tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error_and_every_answer_is_documented(
    case: schemathesis.Case, api: LocalApi
) -> None:
    case.call_and_validate(
        base_url=api.url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=60,
    )
