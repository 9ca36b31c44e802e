"""The stack's REST API as the synthesized template declares it: its resources, its methods and the
function behind each, the TOKEN authorizer, the body models, the gateway responses and the stage; and
which resource a path reaches (a literal path part wins over a ``{parameter}``, as on API Gateway)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.infra.asl import PSEUDO

ACCOUNT = PSEUDO["AWS::AccountId"]
REGION = PSEUDO["AWS::Region"]
#: When the authorizer names no cache time, API Gateway caches its answer for 300 s.
DEFAULT_AUTHORIZER_TTL = 300
#: API Gateway's body when the API customizes neither the response type nor its DEFAULT_4XX/5XX.
BUILT_IN_TEMPLATE = '{"message":$context.error.messageString}'


@dataclass(frozen=True)
class Function:
    """A Lambda function of the stack: its handler (``module.attribute``), name and time limit."""

    handler: str
    name: str
    timeout_seconds: int


@dataclass(frozen=True)
class Method:
    http_method: str
    resource: str  # "/api/admin/backup/{backupId}"
    function: Function
    authorized: bool = True
    #: The JSON schema the body must match, per content type; empty: the body is not validated.
    body_models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Authorizer:
    function: Function
    header: str = "Authorization"
    validation: str | None = None
    ttl_seconds: int = DEFAULT_AUTHORIZER_TTL


@dataclass(frozen=True)
class GatewayResponse:
    status: int | None
    template: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RestApi:
    resources: tuple[str, ...]
    methods: tuple[Method, ...]
    authorizer: Authorizer | None
    responses: Mapping[str, GatewayResponse]
    stage: str
    api_id: str = "local"

    @classmethod
    def from_template(cls, template: Mapping[str, Any]) -> RestApi:
        return _rest_api_of(template)

    def match(self, path: str) -> tuple[str, dict[str, str]] | None:
        """The resource ``path`` (as sent: percent-encoded) reaches, and its path parameters (decoded);
        None when no resource matches."""
        segments = [part for part in path.split("/") if part] if path != "/" else []
        best: tuple[tuple[bool, ...], str, dict[str, str]] | None = None
        for resource in self.resources:
            parts = [part for part in resource.split("/") if part]
            if len(parts) != len(segments):
                continue
            parameters = {}
            for part, segment in zip(parts, segments, strict=True):
                if part.startswith("{") and part.endswith("}"):
                    parameters[part[1:-1]] = unquote(segment)
                elif part != unquote(segment):
                    break
            else:
                # At each depth a literal part wins over a parameter: rank by where the parameters are.
                rank = tuple(part.startswith("{") for part in parts)
                if best is None or rank < best[0]:
                    best = (rank, resource, parameters)
        return None if best is None else (best[1], best[2])

    def method(self, resource: str, http_method: str) -> Method | None:
        return next(
            (m for m in self.methods if m.resource == resource and m.http_method in (http_method, "ANY")),
            None,
        )

    def method_arn(self, http_method: str, path: str) -> str:
        return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{self.api_id}/{self.stage}/{http_method}/{path.lstrip('/')}"


def _of_type(resources: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {key: value["Properties"] for key, value in resources.items() if value["Type"] == kind}


def _refs_in(value: Any) -> Iterable[str]:
    """Every logical id a Ref or Fn::GetAtt in ``value`` names."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            yield value["Ref"]
        elif set(value) == {"Fn::GetAtt"}:
            yield value["Fn::GetAtt"][0]
        else:
            for item in value.values():
                yield from _refs_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs_in(item)


def _function_in(resources: Mapping[str, Any], uri: Any) -> Function:
    functions = _of_type(resources, "AWS::Lambda::Function")
    found = [logical_id for logical_id in _refs_in(uri) if logical_id in functions]
    if not found:
        raise ValueError(f"no Lambda function in {uri!r}")
    properties = functions[found[0]]
    return Function(properties["Handler"], found[0][:64], int(properties.get("Timeout", 3)))


def _rest_api_of(template: Mapping[str, Any]) -> RestApi:
    resources = template["Resources"]
    apis = _of_type(resources, "AWS::ApiGateway::RestApi")
    if len(apis) != 1:
        raise ValueError(f"the template should hold one REST API, not {len(apis)}")
    tree = _of_type(resources, "AWS::ApiGateway::Resource")

    def path_of(reference: Any) -> str:
        if "Fn::GetAtt" in reference:  # the API's RootResourceId
            return "/"
        properties = tree[reference["Ref"]]
        return path_of(properties["ParentId"]).rstrip("/") + "/" + properties["PathPart"]

    models = {key: value["Schema"] for key, value in _of_type(resources, "AWS::ApiGateway::Model").items()}
    validators = _of_type(resources, "AWS::ApiGateway::RequestValidator")
    methods = []
    for properties in _of_type(resources, "AWS::ApiGateway::Method").values():
        integration = properties.get("Integration", {})
        if integration.get("Type") != "AWS_PROXY":
            raise ValueError(f"only Lambda proxy integrations are emulated, not {integration.get('Type')}")
        validator = validators.get(properties.get("RequestValidatorId", {}).get("Ref", ""), {})
        body_models = {
            content_type: models[reference["Ref"]]
            for content_type, reference in (properties.get("RequestModels") or {}).items()
        }
        methods.append(
            Method(
                http_method=properties["HttpMethod"],
                resource=path_of(properties["ResourceId"]),
                function=_function_in(resources, integration["Uri"]),
                authorized=properties.get("AuthorizationType", "NONE") == "CUSTOM",
                body_models=body_models if validator.get("ValidateRequestBody") else {},
            )
        )
    authorizers = list(_of_type(resources, "AWS::ApiGateway::Authorizer").values())
    authorizer = None
    if authorizers:
        properties = authorizers[0]
        if properties["Type"] != "TOKEN":
            raise ValueError(f"only TOKEN authorizers are emulated, not {properties['Type']}")
        authorizer = Authorizer(
            function=_function_in(resources, properties["AuthorizerUri"]),
            header=properties["IdentitySource"].removeprefix("method.request.header."),
            validation=properties.get("IdentityValidationExpression"),
            ttl_seconds=int(properties.get("AuthorizerResultTtlInSeconds", DEFAULT_AUTHORIZER_TTL)),
        )
    responses = {
        properties["ResponseType"]: GatewayResponse(
            status=int(properties["StatusCode"]) if properties.get("StatusCode") else None,
            template=(properties.get("ResponseTemplates") or {}).get("application/json", BUILT_IN_TEMPLATE),
            headers={
                name.removeprefix("gatewayresponse.header."): value.strip("'")
                for name, value in (properties.get("ResponseParameters") or {}).items()
            },
        )
        for properties in _of_type(resources, "AWS::ApiGateway::GatewayResponse").values()
    }
    stages = [
        properties["StageName"] for properties in _of_type(resources, "AWS::ApiGateway::Stage").values()
    ]
    return RestApi(
        resources=("/", *sorted(path_of({"Ref": key}) for key in tree)),
        methods=tuple(methods),
        authorizer=authorizer,
        responses=responses,
        stage=stages[0] if stages else "prod",
    )
