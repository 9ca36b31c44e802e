"""The admin API: six routes, every one behind the bearer-token authorizer; validated bodies; one error
shape; a throttled, logged, traced stage; least-privilege functions; the catalog table and outputs."""

from __future__ import annotations

import json
import re
from typing import Any

from infra import constants as names
from infra.api import ROUTES
from tests.infra.conftest import WAF_ACL_ARN, Synthesized

EXPECTED_ROUTES = {
    ("POST", "/api/admin/backup"),
    ("GET", "/api/admin/backup/status"),
    ("GET", "/api/admin/backup/{backupId}"),
    ("POST", "/api/admin/backup/download-url"),
    ("GET", "/api/admin/openapi.json"),
    ("GET", "/metrics"),
}
XRAY = {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}


def _one(synth: Synthesized, resource_type: str) -> tuple[str, dict[str, Any]]:
    (found,) = synth.of_type(resource_type).items()
    return found[0], found[1]["Properties"]


def _ref(synth: Synthesized, construct: Any) -> dict[str, str]:
    return {"Ref": synth.logical_id(construct)}


def _arn(synth: Synthesized, construct: Any) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def _methods(synth: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    """Every method by (verb, path), the path rebuilt from the resources' parents."""
    resources = synth.of_type("AWS::ApiGateway::Resource")

    def path(parent: Any) -> str:
        if "Ref" not in parent:  # the root resource (Fn::GetAtt RootResourceId)
            return ""
        properties = resources[parent["Ref"]]["Properties"]
        return f"{path(properties['ParentId'])}/{properties['PathPart']}"

    return {
        (method["Properties"]["HttpMethod"], path(method["Properties"]["ResourceId"])): method["Properties"]
        for method in synth.of_type("AWS::ApiGateway::Method").values()
    }


def _statements(synth: Synthesized, module: str) -> list[dict[str, Any]]:
    role = synth.stack.functions[module].role
    assert role is not None
    return [
        statement
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if _ref(synth, role) in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def _granted(synth: Synthesized, module: str, prefix: str) -> list[tuple[set[str], Any, Any]]:
    """(actions, resource, condition) of every statement with actions of the ``prefix`` service."""
    granted = []
    for statement in _statements(synth, module):
        actions = {action for action in _actions(statement) if action.startswith(prefix)}
        if actions:
            granted.append((actions, statement["Resource"], statement.get("Condition")))
    return granted


def _environment(synth: Synthesized, module: str) -> dict[str, Any]:
    function = synth.resources[synth.logical_id(synth.stack.functions[module])]["Properties"]
    return dict(function["Environment"]["Variables"])


def test_the_admin_api_is_one_regional_rest_api_without_api_keys(synth: Synthesized) -> None:
    _, api = _one(synth, "AWS::ApiGateway::RestApi")
    assert api["Name"] == "questboard-backup-admin"
    assert api["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    for resource_type in ("AWS::ApiGateway::ApiKey", "AWS::ApiGateway::UsagePlan"):
        assert not synth.of_type(resource_type), resource_type


def test_the_six_routes_reach_the_api_function_through_a_lambda_proxy(synth: Synthesized) -> None:
    methods = _methods(synth)
    assert set(methods) == EXPECTED_ROUTES
    assert {(route.method, route.path) for route in ROUTES} == EXPECTED_ROUTES
    for route, method in methods.items():
        integration = method["Integration"]
        assert integration["Type"] == "AWS_PROXY", route
        assert _arn(synth, synth.stack.functions[names.API]) in integration["Uri"]["Fn::Join"][1], route


def test_every_method_needs_the_token_authorizer_and_none_is_open(synth: Synthesized) -> None:
    authorizer_id, _ = _one(synth, "AWS::ApiGateway::Authorizer")
    for route, method in _methods(synth).items():
        assert method["AuthorizationType"] == "CUSTOM", route
        assert method["AuthorizerId"] == {"Ref": authorizer_id}, route
        assert route[0] not in ("OPTIONS", "ANY"), route


def test_the_authorizer_checks_the_bearer_header_shape_before_it_runs(synth: Synthesized) -> None:
    _, authorizer = _one(synth, "AWS::ApiGateway::Authorizer")
    assert authorizer["Type"] == "TOKEN"
    assert authorizer["IdentitySource"] == "method.request.header.Authorization"
    pattern = authorizer["IdentityValidationExpression"]
    assert pattern == "^Bearer [A-Za-z0-9_-]{20,200}$"
    assert re.match(pattern, "Bearer " + "a-Z_9" * 8)
    for refused in (
        "Bearer short",
        "Basic dXNlcjpwYXNzd29yZA==aaaaaaaa",
        "Bearer " + "a" * 201,
        "bearer " + "a" * 20,
    ):
        assert not re.match(pattern, refused), refused
    uri = json.dumps(authorizer["AuthorizerUri"])
    assert synth.logical_id(synth.stack.functions[names.API_AUTHORIZER]) in uri


def test_authorizer_decisions_are_cached_for_the_configured_time(
    synth: Synthesized, disabled_synth: Synthesized
) -> None:
    # The cache time is how long a revoked token may still work.
    assert _one(synth, "AWS::ApiGateway::Authorizer")[1]["AuthorizerResultTtlInSeconds"] == 60
    assert _one(disabled_synth, "AWS::ApiGateway::Authorizer")[1]["AuthorizerResultTtlInSeconds"] == 0


def _stage_settings(synth: Synthesized) -> tuple[dict[str, Any], dict[str, Any]]:
    _, stage = _one(synth, "AWS::ApiGateway::Stage")
    (settings,) = stage["MethodSettings"]
    assert (settings["HttpMethod"], settings["ResourcePath"]) == ("*", "/*"), "every method"
    return stage, settings


def test_the_stage_throttles_every_method(synth: Synthesized, disabled_synth: Synthesized) -> None:
    stage, settings = _stage_settings(synth)
    assert stage["StageName"] == names.API_STAGE_NAME == "prod"
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (5, 10)
    _, settings = _stage_settings(disabled_synth)
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (2, 4)


def test_the_stage_writes_a_json_access_log_line_per_request_to_its_own_group(synth: Synthesized) -> None:
    stage, _ = _stage_settings(synth)
    destination = json.dumps(stage["AccessLogSetting"]["DestinationArn"])
    group_id = synth.logical_id(synth.stack.api.access_logs)
    assert json.dumps({"Ref": group_id}) in destination
    assert synth.resources[group_id]["Properties"]["RetentionInDays"] == 90
    fields = json.loads(stage["AccessLogSetting"]["Format"])
    assert (
        fields
        | {
            "requestId": "$context.requestId",
            "ip": "$context.identity.sourceIp",
            "principalId": "$context.authorizer.principalId",
            "httpMethod": "$context.httpMethod",
            "resourcePath": "$context.resourcePath",
            "status": "$context.status",
            "responseLength": "$context.responseLength",
            "authorizerError": "$context.authorizer.error",
        }
        == fields
    )
    assert not any("body" in value.lower() for value in fields.values())


def test_the_stage_is_traced_and_logs_errors_but_never_bodies(synth: Synthesized) -> None:
    stage, settings = _stage_settings(synth)
    assert stage["TracingEnabled"] is True
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False
    _, account = _one(synth, "AWS::ApiGateway::Account")
    assert "CloudWatchRole" in json.dumps(account["CloudWatchRoleArn"])


def test_post_bodies_are_validated_against_their_json_models(synth: Synthesized) -> None:
    validator_id, validator = _one(synth, "AWS::ApiGateway::RequestValidator")
    assert validator["ValidateRequestBody"] is True and validator["ValidateRequestParameters"] is True
    models = {
        properties["Name"]: (logical_id, properties)
        for logical_id, resource in synth.of_type("AWS::ApiGateway::Model").items()
        for properties in [resource["Properties"]]
    }
    methods = _methods(synth)
    for route, model_name in (
        (("POST", "/api/admin/backup"), "StartBackupRequest"),
        (("POST", "/api/admin/backup/download-url"), "DownloadUrlRequest"),
    ):
        model_id, model = models[model_name]
        assert model["ContentType"] == "application/json"
        assert methods[route]["RequestModels"] == {"application/json": {"Ref": model_id}}, route
        assert methods[route]["RequestValidatorId"] == {"Ref": validator_id}, route
    backup = models["StartBackupRequest"][1]["Schema"]
    assert backup["required"] == ["type"] and backup["additionalProperties"] is False
    assert backup["properties"] == {"type": {"type": "string", "enum": ["full", "incremental"]}}
    download = models["DownloadUrlRequest"][1]["Schema"]
    assert download["required"] == ["backupPath"] and download["additionalProperties"] is False
    assert download["properties"] == {"backupPath": {"type": "string", "minLength": 1, "maxLength": 1024}}
    detail = methods[("GET", "/api/admin/backup/{backupId}")]
    assert detail["RequestParameters"] == {"method.request.path.backupId": True}


def _render(template: str, response_type: str) -> Any:
    """A gateway response body as API Gateway substitutes it (messageString is already quoted)."""
    return json.loads(
        template.replace("$context.error.responseType", response_type)
        .replace("$context.error.messageString", '"Unauthorized"')
        .replace("$context.error.validationErrorString", "[object has missing required properties]")
    )


def test_api_gateways_own_errors_share_the_apis_error_shape(synth: Synthesized) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synth.of_type("AWS::ApiGateway::GatewayResponse").values()
    }
    statuses = {
        "DEFAULT_4XX": None,
        "DEFAULT_5XX": None,
        "UNAUTHORIZED": "401",
        "ACCESS_DENIED": "403",
        "BAD_REQUEST_BODY": "400",
        "THROTTLED": "429",
        "REQUEST_TOO_LARGE": "413",
    }
    assert set(responses) == set(statuses)
    for response_type, status in statuses.items():
        response = responses[response_type]
        assert response.get("StatusCode") == status, response_type
        body = _render(response["ResponseTemplates"]["application/json"], response_type)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, response_type
        assert body["error"]["code"] == response_type
    validation = responses["BAD_REQUEST_BODY"]["ResponseTemplates"]["application/json"]
    assert "$context.error.validationErrorString" in validation
    assert responses["UNAUTHORIZED"]["ResponseParameters"] == {
        "gatewayresponse.header.WWW-Authenticate": "'Bearer'"
    }


def test_the_api_function_reads_only_this_deployments_prefix_and_writes_nothing(synth: Synthesized) -> None:
    bucket = _arn(synth, synth.stack.storage.bucket)
    s3 = _granted(synth, names.API, "s3:")
    assert sorted(
        (sorted(actions), json.dumps(resource), condition) for actions, resource, condition in s3
    ) == [
        (["s3:GetObject"], json.dumps({"Fn::Join": ["", [bucket, "/questboard/*"]]}), None),
        (["s3:ListBucket"], json.dumps(bucket), {"StringLike": {"s3:prefix": ["questboard/*"]}}),
    ]


def test_the_api_function_decrypts_only_through_s3_and_cannot_unwrap_a_data_key(synth: Synthesized) -> None:
    ((actions, resource, condition),) = _granted(synth, names.API, "kms:")
    assert actions == {"kms:Decrypt"}
    assert resource == _arn(synth, synth.stack.security.bucket_key)
    assert '"s3."' in json.dumps(condition["StringEquals"]["kms:ViaService"])
    wrapping_key = synth.logical_id(synth.stack.security.backup_key)
    assert wrapping_key not in json.dumps(_statements(synth, names.API))


def test_the_api_function_starts_and_follows_backup_executions_only(synth: Synthesized) -> None:
    machine = _ref(synth, synth.stack.backup.state_machine)
    granted = {
        json.dumps(resource): actions for actions, resource, _ in _granted(synth, names.API, "states:")
    }
    assert granted.pop(json.dumps(machine)) == {"states:StartExecution", "states:ListExecutions"}
    ((executions, actions),) = granted.items()
    assert actions == {"states:DescribeExecution", "states:GetExecutionHistory"}
    assert ":execution:" in executions and json.dumps(machine) in executions
    assert executions.endswith('":*"]]}')


def test_the_api_function_has_no_grant_beyond_its_reads_and_the_backup_executions(
    synth: Synthesized,
) -> None:
    actions = set().union(*(_actions(s) for s in _statements(synth, names.API)))
    assert actions == XRAY | {
        "s3:GetObject",
        "s3:ListBucket",
        "kms:Decrypt",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "states:StartExecution",
        "states:ListExecutions",
        "states:DescribeExecution",
        "states:GetExecutionHistory",
    }


def test_the_authorizer_may_only_read_the_tokens_secret(synth: Synthesized) -> None:
    secret = _ref(synth, synth.stack.api.tokens_secret)
    statements = [s for s in _statements(synth, names.API_AUTHORIZER) if _actions(s) != XRAY]
    assert [(_actions(s), s["Resource"]) for s in statements] == [
        ({"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}, secret)
    ]
    assert _environment(synth, names.API_AUTHORIZER)["BACKUP_API_TOKENS_SECRET"] == secret
    assert "BACKUP_API_TOKENS_SECRET" not in _environment(synth, names.API)


def test_the_tokens_secret_starts_with_no_token_and_is_kept(synth: Synthesized) -> None:
    secret = synth.resources[synth.logical_id(synth.stack.api.tokens_secret)]
    assert json.loads(secret["Properties"]["SecretString"]) == {"tokens": []}
    assert "GenerateSecretString" not in secret["Properties"]
    assert secret["DeletionPolicy"] == "Retain"


def test_publish_writes_the_catalog_the_failure_paths_and_report_only_count_and_the_api_only_reads_it(
    synth: Synthesized,
) -> None:
    table = _ref(synth, synth.stack.catalog.table)
    writes = {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "dynamodb:GetItem",
    }
    expected = {
        names.BACKUP_PUBLISH: writes,
        names.BACKUP_FAILURE: {"dynamodb:UpdateItem"},
        names.RESTORE_REPORT: {"dynamodb:UpdateItem"},
        names.RESTORE_FAILURE: {"dynamodb:UpdateItem"},
        names.API: {"dynamodb:GetItem", "dynamodb:Query"},
    }
    for module in synth.stack.functions.functions:
        granted = _granted(synth, module, "dynamodb:")
        if module not in expected:
            assert not granted and "BACKUP_CATALOG_TABLE" not in _environment(synth, module), module
            continue
        ((actions, resource, _),) = granted
        assert (actions, resource) == (expected[module], _arn(synth, synth.stack.catalog.table)), module
        assert _environment(synth, module)["BACKUP_CATALOG_TABLE"] == table, module


def test_the_catalog_table_is_on_demand_recoverable_encrypted_expiring_and_kept(synth: Synthesized) -> None:
    table = synth.resources[synth.logical_id(synth.stack.catalog.table)]
    properties = table["Properties"]
    assert properties["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {a["AttributeType"] for a in properties["AttributeDefinitions"]} == {"S"}
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}  # the AWS managed key
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["DeletionPolicy"] == "Retain"


def test_the_api_function_is_told_the_state_machine_schedules_and_url_lifetime(
    synth: Synthesized, disabled_synth: Synthesized
) -> None:
    variables = _environment(synth, names.API)
    assert variables["BACKUP_STATE_MACHINE_ARN"] == _ref(synth, synth.stack.backup.state_machine)
    assert variables["BACKUP_FULL_SCHEDULE"] == "cron(0 2 * * ? *)"
    assert variables["BACKUP_INCREMENTAL_SCHEDULE"] == "cron(0 8,14,20 * * ? *)"
    assert variables["BACKUP_API_URL_EXPIRY_SECONDS"] == "900"
    assert _environment(disabled_synth, names.API)["BACKUP_API_URL_EXPIRY_SECONDS"] == "300"


def test_the_api_functions_run_outside_the_vpc_within_api_gateways_time_limit(synth: Synthesized) -> None:
    for module, timeout, memory in ((names.API, 30, 512), (names.API_AUTHORIZER, 10, 256)):
        function = synth.resources[synth.logical_id(synth.stack.functions[module])]["Properties"]
        assert (function["Timeout"], function["MemorySize"]) == (timeout, memory), module
        assert "VpcConfig" not in function, module


def test_the_outputs_name_the_admin_url_the_tokens_secret_and_the_catalog_table(synth: Synthesized) -> None:
    outputs = synth.template.to_json()["Outputs"]
    url = outputs["AdminApiUrl"]["Value"]["Fn::Join"][1]
    assert url[0] == "https://" and url[-1] == "/api/admin/"
    assert {"Ref": _one(synth, "AWS::ApiGateway::Stage")[0]} in url
    assert outputs["ApiTokensSecretArn"]["Value"] == _ref(synth, synth.stack.api.tokens_secret)
    assert outputs["CatalogTableName"]["Value"] == _ref(synth, synth.stack.catalog.table)


def test_a_web_acl_is_attached_to_the_stage_only_when_one_is_given(
    synth: Synthesized, disabled_synth: Synthesized
) -> None:
    assert not synth.of_type("AWS::WAFv2::WebACLAssociation")
    _, association = _one(disabled_synth, "AWS::WAFv2::WebACLAssociation")
    assert association["WebACLArn"] == WAF_ACL_ARN
    stage_id, _ = _one(disabled_synth, "AWS::ApiGateway::Stage")
    assert json.dumps({"Ref": stage_id}) in json.dumps(association["ResourceArn"])
