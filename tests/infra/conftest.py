"""Synthesize the stack in-process once per session (cdk.json context, placeholder layer folders)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import Stack
from aws_cdk.assertions import Template
from constructs import IConstruct

from infra.application import build_app
from infra.functions import LayerPaths
from infra.stack import QuestBoardBackupStack

#: Annotations stay annotations (instead of failing synth) so the cdk-nag test can name each finding.
TEST_CONTEXT = {"@aws-cdk/core:annotationsInValidationReport": False}

WAF_ACL_ARN = (
    "arn:aws:wafv2:ap-northeast-1:123456789012:regional/webacl/questboard-admin/"
    "0123abcd-4567-89ef-0123-456789abcdef"
)

#: The second deployment: everything optional switched the other way.
DISABLED_CONTEXT = {
    "backupsEnabled": "false",  # as `-c backupsEnabled=false` passes it
    "createVpcEndpoints": False,
    "scheduleTimezone": "Europe/Paris",
    "bucketName": "questboard-backups-test",
    "alertEmail": "ops@example.com",
    "alertTopicArn": "arn:aws:sns:ap-northeast-1:123456789012:chatops",
    "redisSecret": "",
    "objectLockMode": "compliance",
    "databaseSecret": "arn:aws:secretsmanager:ap-northeast-1:123456789012:secret:questboard/db-AbCdEf",
    "apiThrottleRate": "2",
    "apiThrottleBurst": "4",
    "apiAuthorizerCacheSeconds": "0",
    "downloadUrlExpirySeconds": "300",
    "apiWafAclArn": WAF_ACL_ARN,
    "expectedBackupBytes": "500000000000",  # as `-c expectedBackupBytes=500000000000` passes it
    "alertSlackWorkspaceId": "T0123ABCDEF",
    "alertSlackChannelId": "C0123ABCDEF",
    # No drill target: no drill schedule.
    "drillDatabase": "",
    "drillRedisDb": "",
    # Uploads and config on EFS.
    "uploadsFileSystemId": "fs-0123456789abcdef0",
    "uploadsAccessPointId": "fsap-0123456789abcdef0",
    "filesPaths": ["/mnt/questboard/uploads"],
    "configPaths": '["/mnt/questboard/config/app.env"]',  # as `-c configPaths='[...]'` passes it
    # Uploads in S3 too, and configuration in SSM and Secrets Manager.
    "uploadsS3Uri": "s3://questboard-uploads/prod/uploads",
    "configParameterPaths": ["/questboard/prod"],
    "configSecretIds": ["questboard/prod/app"],
    # Every component on Lambda: no Fargate path.
    "componentRuntime": "lambda",
}


@dataclass(frozen=True)
class Synthesized:
    stack: QuestBoardBackupStack
    template: Template
    template_path: Path

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.template.to_json()["Resources"])

    def of_type(self, resource_type: str) -> dict[str, Any]:
        return {key: value for key, value in self.resources.items() if value["Type"] == resource_type}

    def logical_id(self, construct: IConstruct) -> str:
        child = construct.node.default_child or construct
        return str(Stack.of(construct).resolve(self.stack.get_logical_id(child)))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def layer_paths(tmp_path_factory: pytest.TempPathFactory) -> LayerPaths:
    """Stand-ins for `make layers` output: the tests check the template, not the layers' contents."""
    root = tmp_path_factory.mktemp("layers")
    paths = LayerPaths(python_deps=root / "python", pg_tools=root / "pgtools")
    for path in (paths.python_deps, paths.pg_tools):
        path.mkdir()
        (path / "README").write_text("placeholder for tests/infra; `make layers` builds the real one\n")
    return paths


def _synth(context: dict[str, Any], layer_paths: LayerPaths, outdir: Path) -> Synthesized:
    app, stack = build_app({**TEST_CONTEXT, **context}, layer_paths=layer_paths, outdir=str(outdir))
    assembly = app.synth()
    template_path = Path(assembly.get_stack_artifact(stack.artifact_id).template_full_path)
    template = Template.from_json(json.loads(template_path.read_text(encoding="utf-8")))
    return Synthesized(stack=stack, template=template, template_path=template_path)


@pytest.fixture(scope="session")
def synth(layer_paths: LayerPaths, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The stack as cdk.json configures it (backups enabled)."""
    return _synth({}, layer_paths, tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def disabled_synth(layer_paths: LayerPaths, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Backups disabled, no VPC endpoints, another time zone, an e-mail and an extra topic, the admin
    API with other limits and a web ACL, a fixed expected bucket size and a Slack channel; no drills; uploads and config on EFS."""
    return _synth(DISABLED_CONTEXT, layer_paths, tmp_path_factory.mktemp("cdk.out.disabled"))
