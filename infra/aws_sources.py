"""Grants for the AWS-native sources: uploads in an S3 bucket (``uploadsS3Uri``) and configuration in
SSM Parameter Store and Secrets Manager (``configParameterPaths``, ``configSecretIds``). The dump
function may only read them; the restore functions may write the uploads prefix and the staging and
previous-copy prefixes beside it (``{prefix}.restore-{ts}/``, ``{prefix}.pre-restore-{ts}/``).
Configuration is restored with the CLI only (its values are staged in memory), so no function may
write a parameter or a secret."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from cdk_nag import NagPackSuppression, NagSuppressions

from infra.config import StackConfig


def grant_aws_sources(function: lambda_.Function | iam.Role, access: str, config: StackConfig) -> None:
    """``access``: "read" (the dump function) or "write" (the restore functions)."""
    stack = Stack.of(function)
    wildcards: list[str] = []
    if config.uploads_s3_uri:
        bucket, _, prefix = config.uploads_s3_uri.removeprefix("s3://").partition("/")
        base = prefix.strip("/")
        # A backup reads beneath the prefix; a restore also stages and keeps copies beside it.
        pattern = f"{base}/*" if access == "read" else f"{base}*"
        listing = ["s3:ListBucket"] + (["s3:ListBucketMultipartUploads"] if access == "write" else [])
        function.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=listing,
                resources=[stack.format_arn(service="s3", region="", account="", resource=bucket)],
                conditions={"StringLike": {"s3:prefix": [pattern, base]}} if access == "read" else None,
            ),
        )
        wildcards.append(f"Resource::arn:<AWS::Partition>:s3:::{bucket}/{pattern}")
        objects = ["s3:GetObject"]
        if access == "write":
            objects += ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
        function.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=objects,
                resources=[
                    stack.format_arn(service="s3", region="", account="", resource=f"{bucket}/{pattern}")
                ],
            ),
        )
    if access != "read":
        _suppress(function, wildcards)
        return
    if config.config_parameter_paths:
        parameters = []
        for path in config.config_parameter_paths:
            name = path.strip("/")
            parameters += [
                stack.format_arn(service="ssm", resource="parameter", resource_name=name),
                stack.format_arn(service="ssm", resource="parameter", resource_name=f"{name}/*"),
            ]
        function.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ssm:GetParametersByPath", "ssm:GetParameter"], resources=parameters
            ),
        )
        wildcards += [
            f"Resource::arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:parameter/{path.strip('/')}/*"
            for path in config.config_parameter_paths
        ]
        # DescribeParameters (each parameter's type, key, tier) has no resource-level permissions.
        function.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["ssm:DescribeParameters"], resources=["*"])
        )
    if config.config_secret_ids:
        function.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[
                    stack.format_arn(
                        service="secretsmanager",
                        resource="secret",
                        resource_name=f"{name}-??????",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                    for name in config.config_secret_ids
                ],
            ),
        )
        wildcards += [
            f"Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:{name}-??????"
            for name in config.config_secret_ids
        ]
    _suppress(function, wildcards)


def _suppress(function: lambda_.Function | iam.Role, wildcards: list[str]) -> None:
    if not wildcards:
        return
    NagSuppressions.add_resource_suppressions(
        function,
        [
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="The application's own uploads prefix, parameter paths and secrets (their names end "
                "in AWS's random suffix): object keys and parameter names are unknown at deploy time.",
                applies_to=wildcards,
            )
        ],
        apply_to_children=True,
    )
