"""The admin API's TOKEN authorizer: ``Authorization: Bearer <token>`` against the stored token hashes.

An unknown or missing token raises ``Unauthorized`` (API Gateway answers 401). A known one gets a
policy for every route its scope allows, not only the route called: API Gateway caches the policy per
token for the stage's cache time and applies it to each later call (a ``read`` token gets GET and the
download URL route, an ``admin`` token everything). A route outside the policy is 403. The context
passes the token's name and scope to the API function, which checks the scope again.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.observability import logger, tracer
from questboard_backup.admin.tokens import Caller, bearer_token


class UnauthorizedError(Exception):
    """API Gateway turns exactly this message into a 401."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def allowed_resources(method_arn: str, caller: Caller) -> list[str]:
    """``arn:...:{api}/{stage}/{method}/{path}`` patterns of every route ``caller``'s scope allows."""
    parts = method_arn.split("/")
    if len(parts) < 3:
        raise UnauthorizedError
    base = "/".join(parts[:2])
    if caller.may("admin"):
        return [f"{base}/*/*"]
    return [f"{base}/GET/*", f"{base}/POST/api/admin/backup/download-url"]


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    token = bearer_token(event.get("authorizationToken"))
    caller = dependencies().api_tokens().identify(token) if token else None
    if caller is None:
        logger.info("admin api: token refused")
        raise UnauthorizedError
    return {
        "principalId": caller.name,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow",
                    "Resource": allowed_resources(str(event.get("methodArn", "")), caller),
                }
            ],
        },
        "context": {"token_name": caller.name, "scope": caller.scope},
    }
