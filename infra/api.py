"""The admin HTTP API: a regional REST API whose every route needs a bearer token, checked by a token
authorizer against hashes kept in Secrets Manager, with request validation, one error shape, and a
throttled, access-logged, traced stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, NamedTuple

from aws_cdk import Duration, RemovalPolicy, SecretValue, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_wafv2 as wafv2
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import Construct

from infra import constants as names
from infra.config import StackConfig

#: The variable the authorizer finds the tokens secret's ARN in.
TOKENS_SECRET_VARIABLE: Final = "BACKUP_API_TOKENS_SECRET"
#: What the tokens secret holds until `questboard-backup token create` adds the first token's hash.
INITIAL_TOKENS: Final = '{"tokens": []}'
#: A header that cannot hold a token is refused (401) before the authorizer is invoked.
BEARER_HEADER_PATTERN: Final = r"^Bearer [A-Za-z0-9_-]{20,200}$"

#: One JSON line per request. Never a body: the stage's execution logs carry no data either.
ACCESS_LOG_FIELDS: Final = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "principalId": "$context.authorizer.principalId",  # the token's name, as the authorizer returns it
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "authorizerError": "$context.authorizer.error",
    "errorType": "$context.error.responseType",
}


@dataclass(frozen=True)
class Route:
    """One method of the API; ``body`` names the model its JSON body must match."""

    method: str
    path: str
    body: str | None = None


ROUTES: Final = (
    Route("POST", "/api/admin/backup", body="StartBackupRequest"),
    Route("GET", "/api/admin/backup/status"),
    Route("GET", "/api/admin/backup/{backupId}"),
    Route("POST", "/api/admin/backup/download-url", body="DownloadUrlRequest"),
    Route("GET", "/api/admin/openapi.json"),
    Route("GET", "/metrics"),  # the Prometheus scrape (read scope)
)

#: Request bodies, checked by API Gateway before the function runs (the handler checks them again).
BODY_SCHEMAS: Final = {
    "StartBackupRequest": apigw.JsonSchema(
        schema=apigw.JsonSchemaVersion.DRAFT4,
        title="StartBackupRequest",
        type=apigw.JsonSchemaType.OBJECT,
        properties={
            "type": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, enum=list(names.BACKUP_TYPES))
        },
        required=["type"],
        additional_properties=False,
    ),
    "DownloadUrlRequest": apigw.JsonSchema(
        schema=apigw.JsonSchemaVersion.DRAFT4,
        title="DownloadUrlRequest",
        type=apigw.JsonSchemaType.OBJECT,
        properties={
            "backupPath": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=1024)
        },
        required=["backupPath"],
        additional_properties=False,
    ),
}

_MESSAGE = "$context.error.messageString"  # already a quoted JSON string


class GatewayError(NamedTuple):
    """One of API Gateway's own error responses; ``status`` None keeps the one API Gateway chose."""

    response_type: apigw.ResponseType
    status: str | None
    message: str = _MESSAGE
    headers: dict[str, str] | None = None


#: API Gateway's own errors in the API's one error shape, ``{"error": {"code", "message"}}``; the
#: code is the gateway response type (UNAUTHORIZED, BAD_REQUEST_BODY, THROTTLED...).
GATEWAY_ERRORS: Final = (
    GatewayError(apigw.ResponseType.DEFAULT_4_XX, None),
    GatewayError(apigw.ResponseType.DEFAULT_5_XX, None),
    GatewayError(apigw.ResponseType.UNAUTHORIZED, "401", headers={"WWW-Authenticate": "'Bearer'"}),
    GatewayError(apigw.ResponseType.ACCESS_DENIED, "403"),
    # What the body validator found wrong, e.g. a missing property or a value outside the enum.
    GatewayError(apigw.ResponseType.BAD_REQUEST_BODY, "400", '"$context.error.validationErrorString"'),
    GatewayError(apigw.ResponseType.THROTTLED, "429"),
    GatewayError(apigw.ResponseType.REQUEST_TOO_LARGE, "413"),
)


def error_body(message: str) -> str:
    """A gateway response template (simple substitution, not VTL) in the API's error shape."""
    return '{"error":{"code":"$context.error.responseType","message":' + message + "}}"


class AdminApi(Construct):
    """The REST API, its authorizer, the token hashes, the handler's wiring and the stage's logs.

    Tokens are named and stored as hashes in ``tokens_secret``; the authorizer returns the token's
    name as the principal. API Gateway caches an authorizer decision per token for the context's
    ``apiAuthorizerCacheSeconds``: that is how long a revoked token may still work.
    """

    tokens_secret: secretsmanager.Secret
    authorizer: apigw.TokenAuthorizer
    access_logs: logs.LogGroup
    rest_api: apigw.RestApi
    body_validator: apigw.RequestValidator
    models: dict[str, apigw.Model]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: lambda_.Function,
        authorizer: lambda_.Function,
        backup_state_machine: sfn.IStateMachine,
        config: StackConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        self.tokens_secret = self._tokens_secret()
        self.tokens_secret.grant_read(authorizer)
        authorizer.add_environment(TOKENS_SECRET_VARIABLE, self.tokens_secret.secret_arn)
        _wire_handler(handler, backup_state_machine, config)
        self.authorizer = apigw.TokenAuthorizer(
            self,
            "TokenAuthorizer",
            handler=authorizer,
            authorizer_name="bearer-token",
            identity_source=apigw.IdentitySource.header("Authorization"),
            validation_regex=BEARER_HEADER_PATTERN,
            # How long a revoked token may still work (the decision is cached per token).
            results_cache_ttl=Duration.seconds(config.api_authorizer_cache_seconds),
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=names.LOG_RETENTION)
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=names.API_NAME,
            description="Quest Board Backup admin API: start backups, backup status, download URLs",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            deploy_options=self._stage_options(config),
            fail_on_warnings=True,
            # Execution logs need the region's API Gateway account to name a role that may write to
            # CloudWatch Logs. That setting is shared by every REST API in the region: the role is
            # kept when this stack goes, so the others keep logging.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            # Every method: the handler through a Lambda proxy integration, behind the authorizer.
            default_integration=apigw.LambdaIntegration(handler, allow_test_invoke=False),
            default_method_options=apigw.MethodOptions(
                authorizer=self.authorizer, authorization_type=apigw.AuthorizationType.CUSTOM
            ),
        )
        self.body_validator = self.rest_api.add_request_validator(
            "Validator",
            request_validator_name="body-and-parameters",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        self.models = {
            name: self.rest_api.add_model(
                name, model_name=name, content_type="application/json", schema=schema
            )
            for name, schema in BODY_SCHEMAS.items()
        }
        for route in ROUTES:
            self._add_route(route)
        for error in GATEWAY_ERRORS:
            self.rest_api.add_gateway_response(
                f"{error.response_type.response_type}Response",
                type=error.response_type,
                status_code=error.status,
                response_headers=error.headers,
                templates={"application/json": error_body(error.message)},
            )
        if config.api_waf_acl_arn:
            wafv2.CfnWebACLAssociation(
                self,
                "WebAcl",
                resource_arn=self.rest_api.deployment_stage.stage_arn,
                web_acl_arn=config.api_waf_acl_arn,
            )
        self._suppress_reviewed_findings(handler, backup_state_machine, has_waf=bool(config.api_waf_acl_arn))

    @property
    def admin_url(self) -> str:
        """The deployed URL of the admin routes (ends with ``/api/admin/``)."""
        return self.rest_api.url_for_path(names.API_ADMIN_PATH)

    def _tokens_secret(self) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "Tokens",
            description="Quest Board Backup: the admin API's token hashes (questboard-backup token create)",
            # Not a secret: an empty list the CLI fills with hashes. Never change it: CloudFormation
            # would write the new value over the stored hashes, revoking every token.
            secret_string_value=SecretValue.unsafe_plain_text(INITIAL_TOKENS),
            removal_policy=RemovalPolicy.RETAIN,
        )
        NagSuppressions.add_resource_suppressions(
            secret,
            [
                NagPackSuppression(
                    id="AwsSolutions-SMG4",
                    reason="Holds hashes of named API tokens, not a password: a token is rotated by creating "
                    "a new named token and revoking the old one with the CLI (questboard-backup token).",
                )
            ],
        )
        return secret

    def _stage_options(self, config: StackConfig) -> apigw.StageOptions:
        return apigw.StageOptions(
            stage_name=names.API_STAGE_NAME,
            # Stage-wide, on every method: there are no API keys, so no per-client usage plan.
            throttling_rate_limit=config.api_throttle_rate,
            throttling_burst_limit=config.api_throttle_burst,
            access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
            access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
            tracing_enabled=True,
            logging_level=apigw.MethodLoggingLevel.ERROR,
            data_trace_enabled=False,  # would log request and response bodies: download URLs, tokens
        )

    def _add_route(self, route: Route) -> None:
        resource = self.rest_api.root.resource_for_path(route.path)
        path_parameters = {
            f"method.request.path.{part[1:-1]}": True
            for part in route.path.split("/")
            if part.startswith("{")
        }
        resource.add_method(
            route.method,
            request_parameters=path_parameters or None,
            request_models={"application/json": self.models[route.body]} if route.body else None,
            request_validator=self.body_validator,
        )

    def _suppress_reviewed_findings(
        self, handler: lambda_.Function, backup_state_machine: sfn.IStateMachine, has_waf: bool
    ) -> None:
        """Each reviewed finding on the one resource it is about."""
        for method in self.rest_api.methods:
            NagSuppressions.add_resource_suppressions(
                method,
                [
                    NagPackSuppression(
                        id="AwsSolutions-COG4",
                        reason="Machine-to-machine API: named bearer tokens scoped read or admin, stored "
                        "hashed in Secrets Manager and checked by the token authorizer; no end users.",
                    )
                ],
            )
        NagSuppressions.add_resource_suppressions(
            self.rest_api.node.find_child("CloudWatchRole"),
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM4",
                    reason="API Gateway's role for writing execution and access logs to CloudWatch Logs: "
                    "AWS's managed policy is the documented one for this account-level setting.",
                    applies_to=[
                        "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                        "AmazonAPIGatewayPushToCloudWatchLogs"
                    ],
                )
            ],
        )
        if not has_waf:
            NagSuppressions.add_resource_suppressions(
                self.rest_api.deployment_stage,
                [
                    NagPackSuppression(
                        id="AwsSolutions-APIG3",
                        reason="No web ACL by default: every method needs a bearer token (a malformed "
                        "header is refused before any code runs) and the stage is throttled; the context's "
                        "apiWafAclArn attaches one.",
                    )
                ],
            )
        stack = Stack.of(self)
        machine_id = stack.resolve(stack.get_logical_id(backup_state_machine.node.default_child))  # type: ignore[arg-type]
        NagSuppressions.add_resource_suppressions(
            handler,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="Execution names hold backup ids unknown at deploy time: DescribeExecution and "
                    "GetExecutionHistory on the executions of the backup state machine only.",
                    applies_to=[
                        RegexAppliesTo(
                            regex=rf"/^Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:"
                            rf'execution:.*"Ref":"{machine_id}".*:\*$/g'
                        )
                    ],
                )
            ],
            apply_to_children=True,
        )


def _wire_handler(
    handler: lambda_.Function, backup_state_machine: sfn.IStateMachine, config: StackConfig
) -> None:
    """Start backups and follow their executions; the schedules to show; the download URLs' lifetime."""
    handler.add_environment("BACKUP_STATE_MACHINE_ARN", backup_state_machine.state_machine_arn)
    handler.add_environment("BACKUP_FULL_SCHEDULE", config.full_backup_schedule)
    handler.add_environment("BACKUP_INCREMENTAL_SCHEDULE", config.incremental_backup_schedule)
    handler.add_environment("BACKUP_API_URL_EXPIRY_SECONDS", str(config.download_url_expiry_seconds))
    backup_state_machine.grant(handler, "states:StartExecution", "states:ListExecutions")
    backup_state_machine.grant_execution(handler, "states:DescribeExecution", "states:GetExecutionHistory")
