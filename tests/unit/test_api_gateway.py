"""The local API Gateway (`make api`): routing, the TOKEN authorizer's rules, policy evaluation and its
cache, the proxy event and the answer, without a socket and with stand-in functions."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from tests.api_gateway import (
    MAX_BODY_BYTES,
    Gateway,
    HttpRequest,
    arn_matches,
    authorizer_context,
    evaluate_policy,
    proxy_event,
    proxy_response,
)
from tests.rest_api import Authorizer, Function, GatewayResponse, Method, RestApi

API_FUNCTION = Function("lambdas.api.handler", "Api", 30)
AUTHORIZER_FUNCTION = Function("lambdas.api_authorizer.handler", "ApiAuthorizer", 10)
ERROR_SHAPE = '{"error":{"code":"$context.error.responseType","message":$context.error.messageString}}'
START_SCHEMA = {
    "type": "object",
    "properties": {"type": {"type": "string", "enum": ["full", "incremental"]}},
    "required": ["type"],
    "additionalProperties": False,
}
RESOURCES = (
    "/",
    "/api",
    "/api/admin",
    "/api/admin/backup",
    "/api/admin/backup/status",
    "/api/admin/backup/{backupId}",
    "/api/admin/backup/download-url",
    "/metrics",
)
API = RestApi(
    resources=RESOURCES,
    methods=(
        Method("POST", "/api/admin/backup", API_FUNCTION, body_models={"application/json": START_SCHEMA}),
        Method("GET", "/api/admin/backup/status", API_FUNCTION),
        Method("GET", "/api/admin/backup/{backupId}", API_FUNCTION),
        Method("POST", "/api/admin/backup/download-url", API_FUNCTION),
        Method("GET", "/metrics", API_FUNCTION),
    ),
    authorizer=Authorizer(AUTHORIZER_FUNCTION, "Authorization", r"^Bearer [A-Za-z0-9_-]{20,200}$", 60),
    responses={
        "DEFAULT_4XX": GatewayResponse(None, ERROR_SHAPE),
        "DEFAULT_5XX": GatewayResponse(None, ERROR_SHAPE),
        "UNAUTHORIZED": GatewayResponse(401, ERROR_SHAPE, {"WWW-Authenticate": "Bearer"}),
        "BAD_REQUEST_BODY": GatewayResponse(
            400,
            '{"error":{"code":"$context.error.responseType","message":"$context.error.validationErrorString"}}',
        ),
    },
    stage="prod",
    api_id="abc123",
)
TOKEN = "qbb_" + "a" * 40
EMPTY: Mapping[str, str] = MappingProxyType({})
ARN_BASE = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod"


def allow(*resources: str, effect: str = "Allow") -> dict[str, Any]:
    return {
        "principalId": "ops",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": list(resources)}],
        },
        "context": {"token_name": "ops", "scope": "admin"},
    }


class Functions:
    """Stand-ins for the two functions: the authorizer answers ``authorizer_answer`` (or fails with
    ``authorizer_error``), the API function echoes what it got."""

    def __init__(self, authorizer_answer: Any = None, authorizer_error: str | None = None) -> None:
        self.authorizer_answer = (
            authorizer_answer if authorizer_answer is not None else allow(f"{ARN_BASE}/*/*")
        )
        self.authorizer_error = authorizer_error
        self.api_answer: Any = None
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, function: Function, event: dict[str, Any]) -> tuple[Any, dict[str, str] | None]:
        self.calls.append((function.name, event))
        if function is AUTHORIZER_FUNCTION:
            if self.authorizer_error:
                return None, {"errorType": "UnauthorizedError", "errorMessage": self.authorizer_error}
            return self.authorizer_answer, None
        answer = self.api_answer or {"statusCode": 200, "headers": {}, "body": json.dumps({"event": event})}
        return answer, None

    def called(self, name: str) -> list[dict[str, Any]]:
        return [event for called, event in self.calls if called == name]


def request(
    method: str,
    target: str,
    token: str | None = TOKEN,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] = EMPTY,
) -> HttpRequest:
    pairs = [("Host", "127.0.0.1:8080"), *headers.items()]
    if token is not None:
        pairs.append(("Authorization", f"Bearer {token}"))
    return HttpRequest(method, target, tuple(pairs), body, "10.0.0.7")


def error(response: Any) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status, body["code"], body["message"]


# Resources


@pytest.mark.parametrize(
    ("path", "resource", "parameters"),
    [
        ("/api/admin/backup/status", "/api/admin/backup/status", {}),
        ("/api/admin/backup/download-url", "/api/admin/backup/download-url", {}),
        (
            "/api/admin/backup/questboard_full_20240101_020000",
            "/api/admin/backup/{backupId}",
            {"backupId": "questboard_full_20240101_020000"},
        ),
        ("/api/admin/backup/a%20b", "/api/admin/backup/{backupId}", {"backupId": "a b"}),
        ("/api/admin/backup/", "/api/admin/backup", {}),
        ("/metrics", "/metrics", {}),
        ("/", "/", {}),
    ],
)
def test_a_path_reaches_its_resource_and_literal_parts_win_over_parameters(
    path: str, resource: str, parameters: dict[str, str]
) -> None:
    assert API.match(path) == (resource, parameters)


@pytest.mark.parametrize("path", ["/api/admin/backup/x/y", "/nothing", "/api/admin/restore"])
def test_a_path_no_resource_matches_reaches_none(path: str) -> None:
    assert API.match(path) is None


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/nothing"),
        ("DELETE", "/api/admin/backup/status"),
        ("GET", "/api/admin"),
        ("POST", "/metrics"),
    ],
)
def test_an_unknown_resource_or_method_is_403_missing_authentication_token_before_any_function(
    method: str, target: str
) -> None:
    functions = Functions()

    answer = Gateway(API, functions).handle(request(method, target))

    assert error(answer) == (403, "MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")
    assert functions.calls == []


# Policies


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        (f"{ARN_BASE}/*/*", True),
        (f"{ARN_BASE}/GET/*", True),
        (f"{ARN_BASE}/GET/api/admin/*", True),
        (f"{ARN_BASE}/POST/*", False),
        (f"{ARN_BASE}/GET/api/admin/backup/statu?", True),
        (f"{ARN_BASE}/GET/api/admin/backup/stat?", False),
        ("arn:aws:execute-api:us-east-1:123456789012:other/prod/*/*", False),
        ("*", True),
    ],
)
def test_arn_wildcards_star_spans_slashes_and_question_mark_is_one_character(
    pattern: str, matches: bool
) -> None:
    assert arn_matches(pattern, f"{ARN_BASE}/GET/api/admin/backup/status") is matches


def test_a_matching_deny_wins_over_an_allow_and_without_an_allow_the_call_is_denied() -> None:
    arn = f"{ARN_BASE}/POST/api/admin/backup"
    allow_all = {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{ARN_BASE}/*/*"}
    deny_post = {"Action": "execute-api:*", "Effect": "Deny", "Resource": [f"{ARN_BASE}/POST/*"]}
    other_action = {"Action": "execute-api:ManageConnections", "Effect": "Allow", "Resource": "*"}

    assert evaluate_policy({"Statement": [allow_all]}, arn) == "allow"
    assert evaluate_policy({"Statement": allow_all}, arn) == "allow"  # one statement, not a list
    assert evaluate_policy({"Statement": [allow_all, deny_post]}, arn) == "explicit deny"
    assert evaluate_policy({"Statement": [deny_post]}, f"{ARN_BASE}/GET/metrics") == "no allow"
    assert evaluate_policy({"Statement": [other_action]}, arn) == "no allow"
    assert evaluate_policy({"Statement": []}, arn) == "no allow"


# The authorizer


@pytest.mark.parametrize(
    ("headers", "target"),
    [
        ({}, "/api/admin/backup/status"),
        ({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, "/api/admin/backup/status"),
        ({"Authorization": "Bearer short"}, "/api/admin/backup/status"),
        ({"Authorization": f"Bearer {TOKEN}!"}, "/api/admin/backup/status"),
        ({}, f"/api/admin/backup/status?token={TOKEN}&access_token={TOKEN}&Authorization=Bearer+{TOKEN}"),
    ],
)
def test_a_missing_or_malformed_authorization_header_is_401_without_invoking_the_authorizer(
    headers: dict[str, str], target: str
) -> None:
    functions = Functions()

    answer = Gateway(API, functions).handle(request("GET", target, token=None, headers=headers))

    assert error(answer) == (401, "UNAUTHORIZED", "Unauthorized")
    assert answer.header("WWW-Authenticate") == "Bearer"
    assert functions.calls == []


def test_the_authorizer_gets_the_header_and_the_method_arn_of_the_call() -> None:
    functions = Functions()

    Gateway(API, functions).handle(request("GET", "/api/admin/backup/questboard_full_20240101_020000?x=1"))

    assert functions.called("ApiAuthorizer") == [
        {
            "type": "TOKEN",
            "authorizationToken": f"Bearer {TOKEN}",
            "methodArn": f"{ARN_BASE}/GET/api/admin/backup/questboard_full_20240101_020000",
        }
    ]


def test_an_unknown_token_the_authorizer_refuses_is_401() -> None:
    functions = Functions(authorizer_error="Unauthorized")

    answer = Gateway(API, functions).handle(request("GET", "/api/admin/backup/status"))

    assert error(answer) == (401, "UNAUTHORIZED", "Unauthorized")
    assert functions.called("Api") == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (allow(f"{ARN_BASE}/GET/*"), "User is not authorized to access this resource"),
        (
            allow(f"{ARN_BASE}/*", effect="Deny"),
            "User is not authorized to access this resource with an explicit deny",
        ),
    ],
)
def test_a_policy_without_a_matching_allow_or_with_a_matching_deny_is_403(
    answer: dict[str, Any], message: str
) -> None:
    functions = Functions(authorizer_answer=answer)

    refused = Gateway(API, functions).handle(request("POST", "/api/admin/backup", body=b'{"type": "full"}'))

    assert error(refused) == (403, "ACCESS_DENIED", message)
    assert functions.called("Api") == []


def test_the_cached_policy_of_a_token_is_applied_to_its_later_calls_on_other_routes() -> None:
    # The authorizer allowed only the route of the first call: API Gateway reuses that answer.
    functions = Functions(authorizer_answer=allow(f"{ARN_BASE}/GET/api/admin/backup/status"))
    now = [1000.0]
    gateway = Gateway(API, functions, clock=lambda: now[0])

    first = gateway.handle(request("GET", "/api/admin/backup/status"))
    second = gateway.handle(request("GET", "/metrics"))
    now[0] += 61  # past the authorizer's 60 s cache time: asked again
    gateway.handle(request("GET", "/metrics"))

    assert first.status == 200
    assert error(second)[:2] == (403, "ACCESS_DENIED")
    assert len(functions.called("ApiAuthorizer")) == 2


def test_an_authorizer_answer_that_is_not_a_policy_is_500() -> None:
    nested = {**allow(f"{ARN_BASE}/*/*"), "context": {"scopes": ["read"]}}
    for answer in ({"principalId": "ops"}, nested, "Allow"):
        functions = Functions(authorizer_answer=answer)

        refused = Gateway(API, functions).handle(request("GET", "/metrics"))

        assert refused.status == 500
        assert refused.json() == {"error": {"code": "AUTHORIZER_CONFIGURATION_ERROR", "message": None}}


def test_the_authorizer_context_reaches_the_function_as_strings_with_the_principal() -> None:
    answer = {**allow("*"), "context": {"token_name": "ops", "scope": "admin", "n": 3, "ok": True}}

    assert authorizer_context(answer) == {
        "principalId": "ops",
        "token_name": "ops",
        "scope": "admin",
        "n": "3",
        "ok": "true",
    }


# The proxy event and the answer


def test_the_proxy_event_carries_the_resource_parameters_query_headers_and_authorizer_context() -> None:
    call = request("GET", "/api/admin/backup/questboard_full_20240101_020000?limit=5&tier=a&tier=b&flag")
    functions = Functions()

    Gateway(API, functions).handle(call)

    (event,) = functions.called("Api")
    assert event["resource"] == "/api/admin/backup/{backupId}"
    assert event["path"] == "/api/admin/backup/questboard_full_20240101_020000"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"backupId": "questboard_full_20240101_020000"}
    assert event["queryStringParameters"] == {"limit": "5", "tier": "b", "flag": ""}
    assert event["multiValueQueryStringParameters"] == {"limit": ["5"], "tier": ["a", "b"], "flag": [""]}
    assert event["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert event["headers"]["Host"] == "127.0.0.1:8080"
    assert event["multiValueHeaders"]["X-Forwarded-For"] == ["10.0.0.7"]
    assert event["body"] is None and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["resourcePath"] == "/api/admin/backup/{backupId}"
    assert context["stage"] == "prod"
    assert context["path"] == "/prod/api/admin/backup/questboard_full_20240101_020000"
    assert context["identity"]["sourceIp"] == "10.0.0.7"
    assert context["authorizer"] == {"principalId": "ops", "token_name": "ops", "scope": "admin"}
    assert context["requestId"]


def test_a_body_reaches_the_function_as_text() -> None:
    event = proxy_event(
        API, request("POST", "/api/admin/backup", body=b'{"type": "full"}'), "/r", {}, None, "id"
    )

    assert event["body"] == '{"type": "full"}'
    assert event["pathParameters"] is None and event["queryStringParameters"] is None


def test_the_body_validator_refuses_a_body_outside_the_model_with_what_is_wrong() -> None:
    functions = Functions()
    gateway = Gateway(API, functions)

    wrong = gateway.handle(request("POST", "/api/admin/backup", body=b'{"type": "daily"}'))
    not_json = gateway.handle(request("POST", "/api/admin/backup", body=b"type=full"))
    right = gateway.handle(request("POST", "/api/admin/backup", body=b'{"type": "full"}'))

    assert error(wrong)[:2] == (400, "BAD_REQUEST_BODY") and "'daily' is not one of" in error(wrong)[2]
    assert error(not_json)[:2] == (400, "BAD_REQUEST_BODY")
    assert right.status == 200
    assert len(functions.called("Api")) == 1


def test_a_body_over_api_gateways_limit_is_413() -> None:
    functions = Functions()

    answer = Gateway(API, functions).handle(
        request("POST", "/api/admin/backup", body=b"x" * (MAX_BODY_BYTES + 1))
    )

    assert error(answer) == (413, "REQUEST_TOO_LARGE", "Request Too Long")
    assert functions.calls == []


def test_the_functions_answer_becomes_the_http_response() -> None:
    answer = {
        "statusCode": 202,
        "headers": {"Content-Type": "application/json", "X-One": "1", "Content-Length": "999"},
        "multiValueHeaders": {"X-One": ["a", "b"], "Set-Cookie": ["c=1"]},
        "body": '{"ok": true}',
        "isBase64Encoded": False,
    }

    response = proxy_response(answer, "req-1")

    assert response is not None
    assert response.status == 202
    assert response.body == b'{"ok": true}'
    assert [value for name, value in response.headers if name == "X-One"] == ["a", "b"]
    assert response.header("Content-Length") is None  # the server counts the bytes it sends
    assert response.header("x-amzn-RequestId") == "req-1"


def test_a_base64_answer_is_decoded_and_a_missing_content_type_is_json() -> None:
    response = proxy_response(
        {"statusCode": 200, "body": base64.b64encode(b"\x00\xff").decode(), "isBase64Encoded": True}, "r"
    )

    assert response is not None and response.body == b"\x00\xff"
    assert response.header("Content-Type") == "application/json"


@pytest.mark.parametrize(
    "answer",
    [None, "ok", {"body": "x"}, {"statusCode": "200"}, {"statusCode": 200, "body": {"a": 1}}],
)
def test_an_answer_that_is_not_a_proxy_response_or_a_failed_function_is_502(answer: Any) -> None:
    functions = Functions()
    functions.api_answer = answer or {"statusCode": "oops"}

    response = Gateway(API, functions).handle(request("GET", "/metrics"))

    assert error(response) == (502, "DEFAULT_5XX", "Internal server error")


def test_the_stacks_rest_api_is_read_from_the_template() -> None:
    api = RestApi.from_template(TEMPLATE)

    assert api.stage == "prod"
    assert api.match("/api/admin/backup/status") == ("/api/admin/backup/status", {})
    assert api.match("/api/admin/backup/x") == ("/api/admin/backup/{backupId}", {"backupId": "x"})
    status = api.method("/api/admin/backup/status", "GET")
    start = api.method("/api/admin/backup", "POST")
    assert status is not None and start is not None
    assert status.function == Function("lambdas.api.handler", "Api", 30)
    assert status.authorized and status.body_models == {}
    assert start.body_models == {"application/json": START_SCHEMA}
    assert api.authorizer == Authorizer(
        Function("lambdas.api_authorizer.handler", "ApiAuthorizer", 10),
        "Authorization",
        r"^Bearer [A-Za-z0-9_-]{20,200}$",
        60,
    )
    assert api.responses["UNAUTHORIZED"] == GatewayResponse(401, ERROR_SHAPE, {"WWW-Authenticate": "Bearer"})


def _ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


_ROOT = {"Fn::GetAtt": ["RestApi", "RootResourceId"]}
_INTEGRATION = {
    "Type": "AWS_PROXY",
    "Uri": {"Fn::Join": ["", ["arn:aws:apigateway:", {"Fn::GetAtt": ["Api", "Arn"]}, "/invocations"]]},
}
#: What CDK synthesizes for the admin API, cut down to the parts the emulation reads.
TEMPLATE: dict[str, Any] = {
    "Resources": {
        "Api": {
            "Type": "AWS::Lambda::Function",
            "Properties": {"Handler": "lambdas.api.handler", "Timeout": 30},
        },
        "ApiAuthorizer": {
            "Type": "AWS::Lambda::Function",
            "Properties": {"Handler": "lambdas.api_authorizer.handler", "Timeout": 10},
        },
        "RestApi": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "admin"}},
        "Stage": {"Type": "AWS::ApiGateway::Stage", "Properties": {"StageName": "prod"}},
        "Authorizer": {
            "Type": "AWS::ApiGateway::Authorizer",
            "Properties": {
                "Type": "TOKEN",
                "IdentitySource": "method.request.header.Authorization",
                "IdentityValidationExpression": r"^Bearer [A-Za-z0-9_-]{20,200}$",
                "AuthorizerResultTtlInSeconds": 60,
                "AuthorizerUri": {"Fn::Join": ["", ["arn:", {"Fn::GetAtt": ["ApiAuthorizer", "Arn"]}]]},
            },
        },
        "ResApi": {"Type": "AWS::ApiGateway::Resource", "Properties": {"ParentId": _ROOT, "PathPart": "api"}},
        "ResAdmin": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {"ParentId": _ref("ResApi"), "PathPart": "admin"},
        },
        "ResBackup": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {"ParentId": _ref("ResAdmin"), "PathPart": "backup"},
        },
        "ResStatus": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {"ParentId": _ref("ResBackup"), "PathPart": "status"},
        },
        "ResId": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {"ParentId": _ref("ResBackup"), "PathPart": "{backupId}"},
        },
        "Validator": {
            "Type": "AWS::ApiGateway::RequestValidator",
            "Properties": {"ValidateRequestBody": True, "ValidateRequestParameters": True},
        },
        "StartModel": {"Type": "AWS::ApiGateway::Model", "Properties": {"Schema": START_SCHEMA}},
        "StartMethod": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "HttpMethod": "POST",
                "ResourceId": _ref("ResBackup"),
                "AuthorizationType": "CUSTOM",
                "Integration": _INTEGRATION,
                "RequestModels": {"application/json": _ref("StartModel")},
                "RequestValidatorId": _ref("Validator"),
            },
        },
        "StatusMethod": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "HttpMethod": "GET",
                "ResourceId": _ref("ResStatus"),
                "AuthorizationType": "CUSTOM",
                "Integration": _INTEGRATION,
                "RequestValidatorId": _ref("Validator"),
            },
        },
        "DetailMethod": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "HttpMethod": "GET",
                "ResourceId": _ref("ResId"),
                "AuthorizationType": "CUSTOM",
                "Integration": _INTEGRATION,
            },
        },
        "Unauthorized": {
            "Type": "AWS::ApiGateway::GatewayResponse",
            "Properties": {
                "ResponseType": "UNAUTHORIZED",
                "StatusCode": "401",
                "ResponseTemplates": {"application/json": ERROR_SHAPE},
                "ResponseParameters": {"gatewayresponse.header.WWW-Authenticate": "'Bearer'"},
            },
        },
    }
}
