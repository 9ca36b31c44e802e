"""The Fargate path: the same dump and restore handlers on an ECS Fargate task, for a database whose
dump or restore would not fit in Lambda's 15 minutes (docs/fargate.md).

Nothing is built and Docker is never needed: the image is a stock ``python:3.12-slim`` (arm64) pulled
through an ECR pull-through cache rule from ECR Public (so private subnets without NAT reach it through
the ECR endpoints), and its command is ``layers/fargate_bootstrap.py`` inline, which downloads the same
code and layer zips CDK uploads for the functions and runs ``python -m lambdas.task_runner``. Each task
definition's role has exactly the grants of the function whose handler it runs (``grant_spec``), plus
SendTaskSuccess/Failure/Heartbeat: the workflows start it with ``ecs:runTask.waitForTaskToken``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from infra import constants as names
from infra.functions import (
    CODE_ASSET_EXCLUDE,
    FUNCTION_SPECS,
    REPO_ROOT,
    FunctionDependencies,
    LayerPaths,
    grant_spec,
)

#: The pull-through cache rule's prefix: {account}.dkr.ecr.{region}.amazonaws.com/ecr-public/...
CACHE_PREFIX = "ecr-public"
IMAGE_PATH = "docker/library/python:3.12-slim"
BOOTSTRAP = REPO_ROOT / "layers" / "fargate_bootstrap.py"
#: The handlers a task may run, and the task size (vCPU units, MiB); see docs/fargate.md's sizing table.
TASK_HANDLERS = (names.BACKUP_DUMP, names.RESTORE_COMPONENT)
TASK_CPU = 2048
TASK_MEMORY_MIB = 8192
#: A task that stops reporting (killed, out of memory) fails its state after this many seconds; the
#: first beat comes after the image pull and the assets' download, which can take minutes.
HEARTBEAT_SECONDS = 300
#: The longest a task may run (the state's timeout): within its state machine's own timeout.
TASK_TIMEOUT_HOURS = max(names.BACKUP_STATE_MACHINE_TIMEOUT_HOURS, names.RESTORE_STATE_MACHINE_TIMEOUT_HOURS)
#: What the handler is told it has (its deadline): its state machine's timeout less 10 minutes for
#: the steps after it.
TASK_BUDGET_SECONDS = {
    names.BACKUP_DUMP: names.BACKUP_STATE_MACHINE_TIMEOUT_HOURS * 3600 - 600,
    names.RESTORE_COMPONENT: names.RESTORE_STATE_MACHINE_TIMEOUT_HOURS * 3600 - 600,
}


@dataclass(frozen=True)
class TaskRunner:
    definition: ecs.FargateTaskDefinition
    container: ecs.ContainerDefinition


class FargatePath(Construct):
    """A cluster and one task definition per long-running handler (``runners[module]``)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deps: FunctionDependencies,
        layer_paths: LayerPaths,
        environment: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.subnets = deps.subnets
        self.security_groups = deps.security_groups
        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=deps.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )
        self.cache_rule = ecr.CfnPullThroughCacheRule(
            self,
            "PythonImageCache",
            ecr_repository_prefix=CACHE_PREFIX,
            upstream_registry_url="public.ecr.aws",
        )
        image_uri = f"{stack.account}.dkr.ecr.{stack.region}.{stack.url_suffix}/{CACHE_PREFIX}/{IMAGE_PATH}"
        # The very assets the functions use (same content, same hash: uploaded once).
        assets = [
            s3_assets.Asset(
                self, "Code", path=str(REPO_ROOT), exclude=CODE_ASSET_EXCLUDE, ignore_mode=IgnoreMode.GLOB
            ),
            s3_assets.Asset(self, "PythonDeps", path=str(layer_paths.python_deps)),
            s3_assets.Asset(self, "PgTools", path=str(layer_paths.pg_tools)),
        ]
        self.log_group = logs.LogGroup(
            self, "Logs", retention=names.LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY
        )
        self.execution_role = iam.Role(
            self, "ExecutionRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com")
        )
        # Pulling through the cache creates the cached repository on first use.
        self.execution_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"],
                resources=[
                    stack.format_arn(service="ecr", resource="repository", resource_name=f"{CACHE_PREFIX}/*")
                ],
            )
        )
        bootstrap = BOOTSTRAP.read_text(encoding="utf-8")
        specs = {spec.module: spec for spec in FUNCTION_SPECS}
        self.runners: dict[str, TaskRunner] = {}
        for module in TASK_HANDLERS:
            spec = specs[module]
            role = iam.Role(
                self,
                f"{spec.construct_id}TaskRole",
                assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            )
            grant_spec(role, spec, deps)
            for asset in assets:
                asset.grant_read(role)
            # Reporting back to the workflow (task tokens name no resource).
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"],
                    resources=["*"],
                )
            )
            definition = ecs.FargateTaskDefinition(
                self,
                f"{spec.construct_id}Task",
                cpu=TASK_CPU,
                memory_limit_mib=TASK_MEMORY_MIB,
                runtime_platform=ecs.RuntimePlatform(
                    cpu_architecture=ecs.CpuArchitecture.ARM64,
                    operating_system_family=ecs.OperatingSystemFamily.LINUX,
                ),
                task_role=role,
                execution_role=self.execution_role,
            )
            container = definition.add_container(
                "Handler",
                image=ecs.ContainerImage.from_registry(image_uri),
                command=["python3", "-c", bootstrap],
                environment={
                    **environment,
                    "QB_TASK_HANDLER": module,
                    "QB_TASK_BUDGET_SECONDS": str(TASK_BUDGET_SECONDS[module]),
                    "QB_CODE_ASSET_URL": assets[0].s3_object_url,
                    "QB_LAYER_URLS": ",".join(asset.s3_object_url for asset in assets[1:]),
                    "BACKUP_PG_BIN_DIR": "/opt/bin",
                },
                logging=ecs.LogDriver.aws_logs(stream_prefix=module, log_group=self.log_group),
                readonly_root_filesystem=False,
            )
            self.runners[module] = TaskRunner(definition, container)
            NagSuppressions.add_resource_suppressions(
                role,
                [
                    NagPackSuppression(
                        id="AwsSolutions-IAM5",
                        reason="The function's own reviewed grants (its S3 prefixes), the CDK asset zips "
                        "it downloads, and states:SendTask* (task tokens have no resource ARN).",
                    )
                ],
                apply_to_children=True,
            )
            NagSuppressions.add_resource_suppressions(
                definition,
                [
                    NagPackSuppression(
                        id="AwsSolutions-ECS2",
                        reason="The variables are settings and resource names (bucket, key ARN, secret ARNs), "
                        "no secret: the task reads the database URL from Secrets Manager itself.",
                    )
                ],
            )
        NagSuppressions.add_resource_suppressions(
            self.execution_role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="The pull-through cache's repositories (created on first pull) and ECR's "
                    "GetAuthorizationToken, which has no resource ARN.",
                )
            ],
            apply_to_children=True,
        )
