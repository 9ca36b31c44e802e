"""The admin API (API Gateway REST, Lambda proxy): start a backup, status, one set, download URLs.

Behind the token authorizer (lambdas/api_authorizer.py), which puts the caller's token name and scope
in the request context; the scope is checked here again, so a route is never served on the
authorizer's word alone. Every call leaves one audit line (token name, route, backup id, status,
source IP; never the token). Every error has one shape: ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestValidationError,
    ResponseValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.api_models import BackupBody, Detail, Download, DownloadBody, ErrorBody, Started, Status
from lambdas.dependencies import dependencies
from lambdas.observability import logger, tracer
from questboard_backup.address import ID_PATTERN
from questboard_backup.admin.service import DEFAULT_PAGE, MAX_PAGE, ConflictError
from questboard_backup.admin.tokens import Caller, check_scope
from questboard_backup.aws.starter import WorkflowError
from questboard_backup.errors import (
    BackupError,
    BadRequestError,
    ConfigurationError,
    NotFoundError,
    StorageError,
    TransientStorageError,
)
from questboard_backup.metrics import CONTENT_TYPE

PREFIX = "/api/admin"
#: Bodies are a few dozen bytes; anything larger is refused before it is parsed.
MAX_BODY_BYTES = 4096
TITLE = "Quest Board Backup admin API"
VERSION = "1.0.0"
#: The routes a ``read`` token may call; everything else needs ``admin``.
READ_ROUTES = {
    ("GET", f"{PREFIX}/backup/status"),
    ("GET", f"{PREFIX}/backup/<backupId>"),
    ("POST", f"{PREFIX}/backup/download-url"),
    ("GET", f"{PREFIX}/openapi.json"),
    ("GET", "/metrics"),
}

# A response that does not match its model is the server's bug: 500, never a client's 422.
app = APIGatewayRestResolver(
    enable_validation=True, response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR
)


def error_response(
    status: int, code: str, message: str, fields: list[dict[str, str]] | None = None
) -> Response:
    detail: dict[str, Any] = {"code": code, "message": message}
    if fields:
        detail["fields"] = fields
    return Response(status_code=status, content_type="application/json", body=json.dumps({"error": detail}))


def _errors(*statuses: int) -> dict[int, Any]:
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"model": ErrorBody}},
        }
        for status in (401, 403, *statuses, 429, 500, 502, 503)
    }


def _ok(status: int, model: type, description: str) -> dict[int, Any]:
    return {status: {"description": description, "content": {"application/json": {"model": model}}}}


def _json(status: int, body: dict[str, Any]) -> Response[Any]:
    return Response(status_code=status, content_type="application/json", body=body)


def refusal(event: dict[str, Any]) -> tuple[Caller | None, Response[Any] | None]:
    """Who calls, and the answer when the call is refused before routing: no caller (401), a scope
    that does not allow the route (403), a body too large (413) or not JSON (415). Checked before
    Powertools validates the body, so a refused caller learns nothing about the request's shape."""
    context = (event.get("requestContext") or {}).get("authorizer") or {}
    name, scope = context.get("token_name") or context.get("principalId"), context.get("scope")
    try:
        who = Caller(str(name), check_scope(str(scope))) if name else None
    except ConfigurationError:
        who = None
    method = str(event.get("httpMethod", "")).upper()
    resource = str(event.get("resource", "")).replace("{", "<").replace("}", ">")
    if who is None:
        return None, error_response(401, "UNAUTHORIZED", "Unauthorized")
    if (method, resource) not in READ_ROUTES and not who.may("admin"):
        return who, error_response(
            403, "ACCESS_DENIED", f"token {who.name!r} has scope read; this needs admin"
        )
    if method == "POST" and len(str(event.get("body") or "").encode()) > MAX_BODY_BYTES:
        return who, error_response(
            413, "REQUEST_TOO_LARGE", f"the body must be at most {MAX_BODY_BYTES} bytes"
        )
    if method == "POST" and not _is_json(event.get("headers")):
        return who, error_response(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json")
    return who, None


def _is_json(headers: dict[str, str] | None) -> bool:
    found = {key.lower(): value for key, value in (headers or {}).items()}.get("content-type", "")
    return found.split(";", 1)[0].strip().lower() == "application/json"


def _audit(event: dict[str, Any], who: Caller | None, response: dict[str, Any]) -> None:
    context = event.get("requestContext") or {}
    backup_id = (event.get("pathParameters") or {}).get("backupId")
    status = int(response.get("statusCode", 0))
    if backup_id is None and status < 300:
        try:
            backup_id = json.loads(response.get("body") or "{}").get("backup_id")
        except (ValueError, AttributeError):
            backup_id = None
    logger.info(
        "admin api call",
        extra={
            "audit": {
                "token": who.name if who else None,
                "scope": who.scope if who else None,
                "route": f"{event.get('httpMethod')} {event.get('resource')}",
                "backup_id": backup_id,
                "status": status,
                "source_ip": (context.get("identity") or {}).get("sourceIp"),
                "request_id": context.get("requestId"),
            }
        },
    )


@app.exception_handler(RequestValidationError)
def _invalid(error: RequestValidationError) -> Response:
    fields = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
        fields.append({"field": where, "problem": str(problem.get("msg") or problem.get("type"))})
    message = "; ".join(f"{item['field']}: {item['problem']}" for item in fields) or "invalid request"
    return error_response(422, "INVALID_REQUEST", message[:500], fields)


@app.exception_handler(ResponseValidationError)
def _bad_response(error: ResponseValidationError) -> Response:
    logger.error("admin api: an answer did not match its model", extra={"problem": str(error)[:500]})
    return error_response(500, "INTERNAL_ERROR", "internal error; see the logs")


@app.exception_handler(NotFoundError)
def _not_found(error: NotFoundError) -> Response:
    return error_response(404, "NOT_FOUND", str(error))


@app.exception_handler(ConflictError)
def _conflict(error: ConflictError) -> Response:
    return error_response(409, "CONFLICT", str(error))


@app.exception_handler(BadRequestError)
def _bad_parameter(error: BadRequestError) -> Response:
    return error_response(400, "BAD_REQUEST_PARAMETERS", str(error))


@app.exception_handler(ConfigurationError)
def _misconfigured(error: ConfigurationError) -> Response:
    logger.error("admin api: misconfigured", extra={"problem": str(error)})
    return error_response(500, "INTERNAL_ERROR", "the API is misconfigured; see its log")


@app.exception_handler(BackupError)
def _upstream(error: BackupError) -> Response:
    logger.error("admin api: a service failed", extra={"problem": str(error)})
    transient = isinstance(error, TransientStorageError)
    if isinstance(error, StorageError | WorkflowError):
        return error_response(
            503 if transient else 502, "UPSTREAM_ERROR", "an AWS service failed; see the logs"
        )
    return error_response(500, "INTERNAL_ERROR", "internal error; see the logs")


@app.not_found
def _no_route(_error: Exception) -> Response:
    return error_response(404, "NOT_FOUND", "no such route")


@app.post(
    f"{PREFIX}/backup",
    summary="Start a backup",
    responses={**_ok(202, Started, "Started"), **_errors(400, 409, 413, 415, 422)},
)
def start_backup(body: BackupBody) -> Response[Started]:
    started = dependencies().admin().start_backup(body.type, datetime.now(UTC))
    status_url = f"{_base_url()}{PREFIX}/backup/status"
    return _json(202, {**started, "status_url": status_url})


@app.get(
    f"{PREFIX}/backup/status",
    summary="Backup status: running, last results, retained sets, next runs, storage",
    responses={**_ok(200, Status, "Status"), **_errors(400, 422)},
)
def status(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    next_token: Annotated[str | None, Query(max_length=400)] = None,
    tier: Annotated[str | None, Query(pattern="^(daily|weekly|monthly|incremental)$")] = None,
) -> Response[Status]:
    return _json(200, dependencies().admin().status(limit, next_token, tier, datetime.now(UTC)))


@app.post(
    f"{PREFIX}/backup/download-url",
    summary="Presigned GET URLs for a set's manifest and objects",
    responses={**_ok(200, Download, "URLs"), **_errors(400, 404, 413, 415, 422)},
)
def download_url(body: DownloadBody) -> Response[Download]:
    return _json(200, dependencies().admin().download_urls(body.backupPath, datetime.now(UTC)))


@app.get(
    f"{PREFIX}/backup/<backupId>",
    summary="One backup set: its manifest summary and objects",
    responses={**_ok(200, Detail, "The set"), **_errors(400, 404, 422)},
)
def detail(backupId: Annotated[str, Path(pattern=ID_PATTERN)]) -> Response[Detail]:
    return _json(200, dependencies().admin().detail(backupId))


@app.get(
    f"{PREFIX}/openapi.json",
    summary="This document",
    responses={200: {"description": "OpenAPI 3.1"}, **_errors()},
)
def openapi() -> Response[dict[str, Any]]:
    return _json(200, openapi_document())


@app.get(
    "/metrics",
    summary="Prometheus metrics (text format 0.0.4)",
    responses={
        200: {"description": "The exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **_errors(),
    },
)
def prometheus() -> Response[str]:
    body = dependencies().admin().metrics(datetime.now(UTC)).decode()
    return Response(status_code=200, content_type=CONTENT_TYPE, body=body)


def _base_url() -> str:
    event = app.current_event
    host = (event.headers or {}).get("Host") or (event.headers or {}).get("host") or ""
    stage = event.request_context.stage
    if not host:
        return ""
    local = host.startswith(("127.0.0.1", "localhost"))
    return f"http://{host}" if local else f"https://{host}/{stage}"


def openapi_document() -> dict[str, Any]:
    """Powertools' OpenAPI 3.1 document, with bearer auth on every operation and its validation-error
    schema replaced by the one error shape this API answers with."""
    document = json.loads(
        app.get_openapi_json_schema(
            title=TITLE,
            version=VERSION,
            security_schemes={"bearer": HTTPBearer(description="Authorization: Bearer <token>")},
            security=[{"bearer": []}],
        )
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for status in ("422", "500"):  # both answered in the one error shape (the handlers above)
                response = operation.get("responses", {}).get(status)
                if response:
                    response.update(description=HTTPStatus(int(status)).phrase, content=error_body)
    return document


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler(capture_response=False)  # download URLs are credentials: not in traces
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    who, refused = refusal(event)
    if refused is not None:
        response = {
            "statusCode": refused.status_code,
            "headers": {"Content-Type": "application/json"},
            "body": refused.body,
            "isBase64Encoded": False,
        }
    else:
        response = app.resolve(event, context)
    _audit(event, who, response)
    return response


if __name__ == "__main__":  # python -m lambdas.api > docs/openapi.json (tests/unit/test_docs.py checks it)
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
