"""API Gateway's part of the admin API, emulated for `make api`: what API Gateway does with a request
to the stack's REST API (tests/rest_api.py): find the resource, run the authorizer (header regex, then
the function, its policy cached per token and evaluated against each call's method ARN), validate the
body, build the Lambda proxy event (REST, format 1.0), and turn the function's answer, or API
Gateway's own refusal, into HTTP.

No sockets here (scripts/api_server.py serves it): the tests call these functions directly.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.rest_api import ACCOUNT, BUILT_IN_TEMPLATE, Authorizer, Function, Method, RestApi

#: What API Gateway accepts in a request body (the socket layer reads no further).
MAX_BODY_BYTES = 10 * 1024 * 1024
#: API Gateway gives up on a Lambda integration after 29 s (the function may run on).
INTEGRATION_TIMEOUT_SECONDS = 29.0

#: API Gateway's own refusals: status, message (None renders as null), x-amzn-ErrorType.
GATEWAY_ERRORS: dict[str, tuple[int, str | None, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (
        403,
        "Missing Authentication Token",
        "MissingAuthenticationTokenException",
    ),
    "UNAUTHORIZED": (401, "Unauthorized", "UnauthorizedException"),
    "ACCESS_DENIED": (403, "User is not authorized to access this resource", "AccessDeniedException"),
    "BAD_REQUEST_BODY": (400, "Invalid request body", "BadRequestException"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long", "RequestTooLargeException"),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, None, "AuthorizerConfigurationException"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out", "InternalServerErrorException"),
    # A function that fails or answers something that is not a proxy response.
    "DEFAULT_5XX": (502, "Internal server error", "InternalServerErrorException"),
}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    #: The request target as sent: path and query, e.g. ``/api/admin/backup/status?limit=5``.
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    source_ip: str = "127.0.0.1"

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


# Policies


def arn_matches(pattern: str, arn: str) -> bool:
    """IAM's wildcards: ``*`` is any run of characters (``/`` included), ``?`` any one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, arn, flags=re.DOTALL) is not None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


Decision = Literal["allow", "explicit deny", "no allow"]


def evaluate_policy(document: Mapping[str, Any], method_arn: str) -> Decision:
    """What IAM decides for ``execute-api:Invoke`` on ``method_arn``: a matching Deny wins over any
    Allow, and without a matching Allow the call is denied."""
    allowed = False
    for statement in _listed(document.get("Statement")):
        actions = [str(action).lower() for action in _listed(statement.get("Action"))]
        if not any(arn_matches(action, "execute-api:invoke") for action in actions):
            continue
        if not any(arn_matches(str(resource), method_arn) for resource in _listed(statement.get("Resource"))):
            continue
        if statement.get("Effect") == "Deny":
            return "explicit deny"
        allowed = allowed or statement.get("Effect") == "Allow"
    return "allow" if allowed else "no allow"


def _valid_authorizer_answer(answer: Any) -> bool:
    if not isinstance(answer, dict) or not isinstance(answer.get("policyDocument"), dict):
        return False
    if "principalId" not in answer:
        return False
    context = answer.get("context") or {}
    return isinstance(context, dict) and all(
        isinstance(value, str | int | float | bool) or value is None for value in context.values()
    )


def authorizer_context(answer: Mapping[str, Any]) -> dict[str, Any]:
    """``requestContext.authorizer`` of the proxy event: the principal and the context, whose values a
    REST API passes on as strings."""
    context: dict[str, Any] = {"principalId": str(answer["principalId"])}
    for key, value in (answer.get("context") or {}).items():
        context[key] = json.dumps(value) if isinstance(value, bool) else "" if value is None else str(value)
    return context


# Responses


def _render(template: str, response_type: str, message: str | None, validation: str = "") -> str:
    substitutions = {
        "$context.error.validationErrorString": json.dumps(validation)[1:-1],
        "$context.error.messageString": json.dumps(message),
        "$context.error.responseType": response_type,
        "$context.error.message": message or "",
    }
    for name, value in substitutions.items():  # longest names first: messageString before message
        template = template.replace(name, value)
    return template


def gateway_error(
    api: RestApi, response_type: str, request_id: str, message: str | None = None, validation: str = ""
) -> HttpResponse:
    """API Gateway's own answer of ``response_type``, shaped by the API's gateway responses: the
    type's own, else DEFAULT_4XX/DEFAULT_5XX, else API Gateway's built-in ``{"message": ...}``."""
    default_status, default_message, error_type = GATEWAY_ERRORS[response_type]
    family = "DEFAULT_4XX" if default_status < 500 else "DEFAULT_5XX"
    custom = api.responses.get(response_type) or api.responses.get(family)
    status = (custom.status if custom else None) or default_status
    body = _render(
        custom.template if custom else BUILT_IN_TEMPLATE,
        response_type,
        default_message if message is None else message,
        validation,
    )
    headers = [("Content-Type", "application/json"), ("x-amzn-RequestId", request_id)]
    headers += [("x-amzn-ErrorType", error_type), *(custom.headers if custom else {}).items()]
    return HttpResponse(status, tuple(headers), body.encode())


def proxy_response(answer: Any, request_id: str) -> HttpResponse | None:
    """The HTTP response of a Lambda proxy answer; None when it is not one (API Gateway: 502)."""
    if not isinstance(answer, dict) or type(answer.get("statusCode")) is not int:
        return None
    body = answer.get("body")
    if body is not None and not isinstance(body, str):
        return None
    single, multi = answer.get("headers") or {}, answer.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        return None
    if any(not isinstance(values, list) for values in multi.values()):
        return None
    # Both maps are merged; where both name a header, multiValueHeaders' values are the ones sent.
    merged: dict[str, list[str]] = {name: [str(value)] for name, value in single.items()}
    merged.update({name: [str(value) for value in values] for name, values in multi.items()})
    try:
        payload = base64.b64decode(body or "", validate=True) if answer.get("isBase64Encoded") else None
    except ValueError:
        return None
    raw = payload if payload is not None else (body or "").encode()
    headers = [(name, value) for name, values in merged.items() for value in values]
    headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    headers.append(("x-amzn-RequestId", request_id))
    return HttpResponse(int(answer["statusCode"]), tuple(headers), raw)


# Requests


def authorizer_event(header: str, method_arn: str) -> dict[str, Any]:
    return {"type": "TOKEN", "authorizationToken": header, "methodArn": method_arn}


def proxy_event(
    api: RestApi,
    request: HttpRequest,
    resource: str,
    path_parameters: Mapping[str, str],
    authorizer: Mapping[str, Any] | None,
    request_id: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The REST API's Lambda proxy event (format 1.0) for ``request`` on ``resource``."""
    moment = now or datetime.now(UTC)
    target = urlsplit(request.target)
    path = unquote(target.path) or "/"
    forwarded = (
        ("X-Forwarded-For", request.source_ip),
        ("X-Forwarded-Proto", "http"),
        ("X-Amzn-Trace-Id", f"Root=1-{int(moment.timestamp()):08x}-{uuid.uuid4().hex[:24]}"),
    )
    multi_headers: dict[str, list[str]] = {}
    for name, value in (*request.headers, *forwarded):
        multi_headers.setdefault(name, []).append(value)
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(target.query, keep_blank_values=True):
        multi_query.setdefault(name, []).append(value)
    body: str | None = request.body.decode("utf-8", errors="replace") if request.body else None
    return {
        "resource": resource,
        "path": path,
        "httpMethod": request.method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": api.api_id,
            "stage": api.stage,
            "resourceId": f"{abs(hash(resource)) % 10**6:06d}",
            "resourcePath": resource,
            "httpMethod": request.method,
            "path": f"/{api.stage}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": moment.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(moment.timestamp() * 1000),
            "domainName": request.header("Host") or "127.0.0.1",
            "identity": {"sourceIp": request.source_ip, "userAgent": request.header("User-Agent")},
            "authorizer": dict(authorizer) if authorizer is not None else None,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def body_problems(method: Method, request: HttpRequest) -> str | None:
    """What the request validator finds wrong with the body (API Gateway's validationErrorString), or
    None. The model is chosen by Content-Type, application/json when there is none."""
    import jsonschema

    content_type = (request.header("Content-Type") or "application/json").split(";", 1)[0].strip().lower()
    schema = method.body_models.get(content_type)
    if schema is None:
        return None
    try:
        body = json.loads(request.body)
    except json.JSONDecodeError as error:
        return f"[Invalid JSON: {error.msg}]"
    except UnicodeDecodeError:
        return "[Invalid JSON: not UTF-8]"
    problems = sorted(error.message for error in jsonschema.Draft4Validator(schema).iter_errors(body))
    return f"[{', '.join(problems)}]" if problems else None


Invoke = Callable[[Function, dict[str, Any]], tuple[Any, dict[str, str] | None]]


class Gateway:
    """One stage of the REST API in front of ``invoke`` (which runs a function as Lambda would: the
    answer, or ``{"errorType", "errorMessage"}``). Like one Lambda container each, a function serves
    one call at a time."""

    def __init__(self, api: RestApi, invoke: Invoke, clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self._invoke, self._clock = api, invoke, clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _call(self, function: Function, event: dict[str, Any]) -> tuple[Any, dict[str, str] | None]:
        with self._guard:
            lock = self._locks.setdefault(function.name, threading.Lock())
        with lock:
            return self._invoke(function, event)

    def handle(self, request: HttpRequest) -> HttpResponse:
        request_id = str(uuid.uuid4())
        api = self.api
        if len(request.body) > MAX_BODY_BYTES:
            return gateway_error(api, "REQUEST_TOO_LARGE", request_id)
        raw_path = urlsplit(request.target).path or "/"
        path = unquote(raw_path)
        found = api.match(raw_path)
        method = api.method(found[0], request.method) if found else None
        if found is None or method is None:
            return gateway_error(api, "MISSING_AUTHENTICATION_TOKEN", request_id)
        resource, parameters = found
        context = None
        if method.authorized and api.authorizer is not None:
            decided = self._authorize(
                api.authorizer, request, api.method_arn(request.method, path), request_id
            )
            if isinstance(decided, HttpResponse):
                return decided
            context = decided
        problems = body_problems(method, request)
        if problems is not None:
            return gateway_error(api, "BAD_REQUEST_BODY", request_id, validation=problems)
        event = proxy_event(api, request, resource, parameters, context, request_id)
        started = self._clock()
        answer, error = self._call(method.function, event)
        if self._clock() - started > INTEGRATION_TIMEOUT_SECONDS:
            return gateway_error(api, "INTEGRATION_TIMEOUT", request_id)
        response = None if error else proxy_response(answer, request_id)
        return response or gateway_error(api, "DEFAULT_5XX", request_id)

    def _authorize(
        self, authorizer: Authorizer, request: HttpRequest, method_arn: str, request_id: str
    ) -> dict[str, Any] | HttpResponse:
        """The proxy event's ``requestContext.authorizer``, or the refusal (401, 403, 500)."""
        header = request.header(authorizer.header)
        if not header or (authorizer.validation and not re.search(authorizer.validation, header)):
            return gateway_error(self.api, "UNAUTHORIZED", request_id)
        cached = self._cache.get(header)
        if cached and cached[0] > self._clock():
            answer = cached[1]
        else:
            answer, error = self._call(authorizer.function, authorizer_event(header, method_arn))
            if error is not None and error.get("errorMessage") == "Unauthorized":
                return gateway_error(self.api, "UNAUTHORIZED", request_id)
            if error is not None or not _valid_authorizer_answer(answer):
                return gateway_error(self.api, "AUTHORIZER_CONFIGURATION_ERROR", request_id)
            if authorizer.ttl_seconds > 0:
                self._cache[header] = (self._clock() + authorizer.ttl_seconds, answer)
        decision = evaluate_policy(answer["policyDocument"], method_arn)
        if decision == "explicit deny":
            message = "User is not authorized to access this resource with an explicit deny"
            return gateway_error(self.api, "ACCESS_DENIED", request_id, message)
        if decision == "no allow":
            return gateway_error(self.api, "ACCESS_DENIED", request_id)
        return authorizer_context(answer)
