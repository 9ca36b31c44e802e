"""Every Lambda function, built by one factory from a table of per-task specs: one shared code asset
(``lambdas/`` + ``questboard_backup/``, no Docker), two layers, and least-privilege grants per spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Duration, IgnoreMode, Size, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk.aws_ec2 import ISecurityGroup, IVpc, SubnetSelection
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from infra import constants as names
from infra.aws_sources import grant_aws_sources
from infra.config import StackConfig
from infra.permissions import (
    KmsAccess,
    S3Scope,
    grant_bucket,
    grant_wrapping_key,
    wildcard_resources,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Glob ignore rules (last match wins): drop everything, then allow the two code folders back in.
CODE_ASSET_EXCLUDE = [
    "*",
    ".*",  # "*" skips dot files and folders (.git, .venv, .gitignore)
    "!lambdas",
    "!lambdas/**",
    "!questboard_backup",
    "!questboard_backup/**",
    "**/__pycache__",
    "**/*.pyc",
    "**/.*",
]


class LayerNotBuiltError(FileNotFoundError):
    """A layer's asset folder is missing: `make layers` has not run."""


@dataclass(frozen=True)
class LayerPaths:
    """The asset folders of the two layers (each folder is the root of its layer zip)."""

    python_deps: Path = REPO_ROOT / "build" / "layers" / "python"
    pg_tools: Path = REPO_ROOT / "build" / "layers" / "pgtools"

    def check(self) -> None:
        for path in (self.python_deps, self.pg_tools):
            if not path.is_dir():
                raise LayerNotBuiltError(
                    f"Lambda layer folder {path} does not exist: run `make layers` first"
                )


@dataclass(frozen=True)
class FunctionSpec:
    """What one task needs: its size, its time limit and the least it may touch."""

    module: str
    description: str
    timeout_seconds: int
    s3: frozenset[S3Scope]
    #: The data-key wrapping key: only the functions that wrap or unwrap a data key get it.
    kms: KmsAccess | None = None
    memory_mb: int = 512
    reads_secrets: bool = False
    publishes_alerts: bool = False
    #: In the private subnets, beside the databases; False: outside any VPC (AWS APIs only).
    in_vpc: bool = True
    #: The uploads/config file system (EFS), when the stack names one: "read" (ClientMount only: a
    #: backup never writes there) or "write" (restores stage and swap there, drills clean up).
    files: str | None = None

    @property
    def construct_id(self) -> str:
        return "".join(part.capitalize() for part in self.module.split("_"))


_GEN, _DEC = KmsAccess.GENERATE_DATA_KEY, KmsAccess.DECRYPT
#: What each function does with the bucket (infra/permissions.py): read it, write staging, publish
#: into a tier, move the pointer, hold the lock, clean staging. Nothing else deletes.
_R = S3Scope.READ
_NONE: frozenset[S3Scope] = frozenset()
_READS = frozenset({_R})
_LOCKS = frozenset({_R, S3Scope.LOCK})
_STAGES = frozenset({_R, S3Scope.STAGE})
_PUBLISHES = frozenset({_R, S3Scope.PUBLISH, S3Scope.CLEAN_STAGING, S3Scope.RENEW_LOCK})
_POINTS = frozenset({_R, S3Scope.POINTER})
_CLEANS = frozenset({_R, S3Scope.CLEAN_STAGING, S3Scope.LOCK})
_READS_OWN = frozenset({S3Scope.READ_OWN})

#: Dumps and component restores stream whole databases: 15 minutes (900 s, Lambda's most), and
#: 3008 MB for the CPU share that compression and encryption need (Lambda CPU grows with memory).
#: Verification re-reads and authenticates every object: one full vCPU. Everything else is
#: bookkeeping on small objects. The admin API's two functions never reach a database, so they run
#: outside the VPC; its handler gets 30 s, one more than API Gateway waits for it (29 s).
FUNCTION_SPECS: tuple[FunctionSpec, ...] = (
    FunctionSpec(names.BACKUP_START, "Start a scheduled backup, execution named after its id", 60, _NONE),
    # Prepare reads the database's size (a secret) to project the dump's duration (Lambda or Fargate).
    FunctionSpec(
        names.BACKUP_PREPARE,
        "Plan a backup, take the lock, wrap a data key, choose where the dump runs",
        60,
        _LOCKS,
        _GEN,
        reads_secrets=True,
    ),
    FunctionSpec(
        names.BACKUP_DUMP,
        "Stream one component to S3",
        900,
        _STAGES,
        _DEC,
        3008,
        reads_secrets=True,
        files="read",
    ),
    FunctionSpec(names.BACKUP_SEAL, "Write the authenticated manifest", 120, _STAGES, _DEC),
    FunctionSpec(
        names.BACKUP_VERIFY, "Read the staged set back and authenticate it", 300, _READS, _DEC, 1769
    ),
    FunctionSpec(names.BACKUP_PROMOTE, "Move the staged set to its tier", 300, _PUBLISHES),
    FunctionSpec(names.BACKUP_PUBLISH, "Emit metrics and the latest pointer", 60, _POINTS),
    FunctionSpec(names.BACKUP_RELEASE, "Release the backup lock", 60, _LOCKS),
    FunctionSpec(
        names.BACKUP_FAILURE, "Clean up a failed backup and alert", 120, _CLEANS, publishes_alerts=True
    ),
    # Resolve authenticates what it picks: `latest` skips a forged newer manifest.
    FunctionSpec(names.RESTORE_RESOLVE, "Find the authentic backup to restore", 60, _READS, _DEC),
    FunctionSpec(
        names.RESTORE_VALIDATE,
        "Take the lock; authenticate the manifest, check every object and target",
        300,
        _LOCKS,
        _DEC,
        reads_secrets=True,
        files="write",
    ),
    FunctionSpec(
        names.RESTORE_COMPONENT,
        "Stage one component's restore",
        900,
        _READS,
        _DEC,
        3008,
        reads_secrets=True,
        files="write",
    ),
    FunctionSpec(
        names.RESTORE_SWAP,
        "Swap every staged component in at once",
        300,
        _NONE,
        reads_secrets=True,
        files="write",
    ),
    FunctionSpec(
        names.RESTORE_VERIFY, "Check restored data against the manifest", 300, _NONE, reads_secrets=True
    ),
    # In a drill, Report runs the SQL checks and cleans the drill targets (secrets) from the manifest
    # it authenticates (Decrypt); the failure path cleans a failed drill the same way.
    FunctionSpec(
        names.RESTORE_REPORT,
        "Release the lock, report a finished restore; a drill's checks and cleanup",
        300,
        _LOCKS,
        _DEC,
        reads_secrets=True,
        publishes_alerts=True,
        files="write",
    ),
    FunctionSpec(
        names.RESTORE_FAILURE,
        "Undo a failed restore (clean a failed drill), release the lock, alert",
        300,
        _LOCKS,
        _DEC,
        reads_secrets=True,
        publishes_alerts=True,
        files="write",
    ),
    FunctionSpec(
        names.API,
        "Admin API: start a backup, report status, sign a download URL",
        30,
        _READS_OWN,
        in_vpc=False,
    ),
    FunctionSpec(
        names.STORAGE_WATCH,
        "Count staged objects older than a day (hourly)",
        60,
        _READS_OWN,
        in_vpc=False,
    ),
    FunctionSpec(
        names.API_AUTHORIZER,
        "Admin API: check a bearer token against the stored hashes",
        10,
        _NONE,
        memory_mb=256,
        in_vpc=False,
    ),
)


def _timeout_seconds(module: str) -> int:
    return next(spec.timeout_seconds for spec in FUNCTION_SPECS if spec.module == module)


@dataclass(frozen=True)
class FunctionDependencies:
    """The resources every function is wired to, built by other constructs."""

    bucket: s3.IBucket
    #: The data-key wrapping key (BACKUP_KMS_KEY_ID).
    key: kms.IKey
    #: The bucket's SSE-KMS key (BACKUP_S3_KMS_KEY_ID): usable only through S3.
    bucket_key: kms.IKey
    #: GOVERNANCE or COMPLIANCE: the Object Lock mode of every object put in its tier.
    object_lock_mode: str
    alert_topic: sns.ITopic
    database_secret: secretsmanager.ISecret
    redis_secret: secretsmanager.ISecret | None
    vpc: IVpc
    subnets: SubnetSelection
    security_groups: list[ISecurityGroup]
    hostname: str
    backups_enabled: bool
    log_level: str
    #: The schedules' time zone: the tier rule follows its calendar (BACKUP_TIMEZONE).
    schedule_timezone: str
    #: Restore drills' targets, checks and RTO target (BACKUP_DRILL_*), from the stack's context.
    drill_environment: Mapping[str, str] = field(default_factory=dict)
    #: BACKUP_FILES_PATHS and BACKUP_CONFIG_PATHS (on the mounted file system).
    files_environment: Mapping[str, str] = field(default_factory=dict)
    #: The uploads/config file system's mounts by access ("read", "write"); empty: none.
    files_mounts: Mapping[str, lambda_.FileSystem] = field(default_factory=dict)
    #: Uploads in S3 and configuration in SSM / Secrets Manager, for the grants (infra/aws_sources.py).
    source_config: StackConfig | None = None
    #: BACKUP_COMPONENT_RUNTIME: "auto", "lambda" or "fargate" (componentRuntime).
    component_runtime: str = "lambda"


class BackupFunctions(Construct):
    """The functions of both state machines and of the admin API, by module name."""

    functions: dict[str, lambda_.Function]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deps: FunctionDependencies,
        layer_paths: LayerPaths,
        specs: tuple[FunctionSpec, ...] = FUNCTION_SPECS,
    ) -> None:
        super().__init__(scope, construct_id)
        layer_paths.check()
        self._deps = deps
        self._code = lambda_.Code.from_asset(
            str(REPO_ROOT), exclude=CODE_ASSET_EXCLUDE, ignore_mode=IgnoreMode.GLOB
        )
        self._layers = [
            _layer(self, "PythonDepsLayer", layer_paths.python_deps, "Python dependencies"),
            _layer(
                self, "PgToolsLayer", layer_paths.pg_tools, "PostgreSQL client tools (pg_dump, pg_restore)"
            ),
        ]
        self.functions = {spec.module: self._build(spec) for spec in specs}

    def __getitem__(self, module: str) -> lambda_.Function:
        return self.functions[module]

    @property
    def environment(self) -> dict[str, str]:
        """Every function's environment (a Fargate task running a handler gets the same)."""
        return self._environment()

    def _environment(self) -> dict[str, str]:
        deps = self._deps
        return {
            "POWERTOOLS_SERVICE_NAME": names.SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": names.METRICS_NAMESPACE,
            "LOG_LEVEL": deps.log_level,
            "BACKUP_S3_BUCKET": deps.bucket.bucket_name,
            "BACKUP_HOSTNAME": deps.hostname,
            "BACKUP_TIMEZONE": deps.schedule_timezone,
            "BACKUP_KMS_KEY_ID": deps.key.key_arn,
            "BACKUP_S3_KMS_KEY_ID": deps.bucket_key.key_arn,
            "BACKUP_S3_OBJECT_LOCK": deps.object_lock_mode,
            "DATABASE_SECRET_ARN": deps.database_secret.secret_arn,
            "REDIS_SECRET_ARN": deps.redis_secret.secret_arn if deps.redis_secret else "",
            "BACKUP_ENABLED": "true" if deps.backups_enabled else "false",
            "ALERT_TOPIC_ARN": deps.alert_topic.topic_arn,
            # Validate refuses a restore whose estimate does not fit in one staging invocation.
            "RESTORE_STAGE_TIMEOUT_SECONDS": str(_timeout_seconds(names.RESTORE_COMPONENT)),
            **deps.drill_environment,
            **deps.files_environment,
            "BACKUP_COMPONENT_RUNTIME": deps.component_runtime,
            # Prepare sends a dump projected beyond the dump function's limit to Fargate.
            "DUMP_TIMEOUT_SECONDS": str(_timeout_seconds(names.BACKUP_DUMP)),
        }

    def _build(self, spec: FunctionSpec) -> lambda_.Function:
        deps = self._deps
        log_group = logs.LogGroup(self, f"{spec.construct_id}Logs", retention=names.LOG_RETENTION)
        function = lambda_.Function(
            self,
            spec.construct_id,
            description=f"Quest Board Backup: {spec.description}",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=f"lambdas.{spec.module}.handler",  # the asset root holds the lambdas package
            code=self._code,
            layers=self._layers,
            timeout=Duration.seconds(spec.timeout_seconds),
            memory_size=spec.memory_mb,
            # Nothing is staged on disk: every stream goes source -> zstd -> encryption -> S3.
            ephemeral_storage_size=Size.mebibytes(512),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            vpc=deps.vpc if spec.in_vpc else None,
            vpc_subnets=deps.subnets if spec.in_vpc else None,
            security_groups=deps.security_groups if spec.in_vpc else None,
            environment=self._environment(),
            filesystem=deps.files_mounts.get(spec.files) if spec.files else None,
        )
        self._grant(function, spec)
        self._suppress_reviewed_findings(function, spec)
        return function

    def _grant(self, function: lambda_.Function, spec: FunctionSpec) -> None:
        grant_spec(function, spec, self._deps)

    def _suppress_reviewed_findings(self, function: lambda_.Function, spec: FunctionSpec) -> None:
        stack = Stack.of(self)
        bucket_id = stack.resolve(stack.get_logical_id(self._deps.bucket.node.default_child))  # type: ignore[arg-type]
        NagSuppressions.add_resource_suppressions(
            function,
            [
                NagPackSuppression(
                    id="AwsSolutions-L1",
                    reason="Python 3.12 on purpose: the layers' compiled wheels (psycopg2, zstandard, "
                    "cryptography) are built for cp312 arm64; move runtime and layers together.",
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM4",
                    reason="AWS's minimal policies for a function (in a VPC): log delivery, and the ENI calls "
                    "(ec2:CreateNetworkInterface and friends) that do not support resource scoping.",
                    applies_to=[
                        f"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/{policy}"
                        for policy in _managed_policies(spec)
                    ],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="xray:PutTraceSegments and xray:PutTelemetryRecords (ACTIVE tracing) support no "
                    "resource-level permissions.",
                    applies_to=["Resource::*"],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="Object keys hold backup ids unknown at deploy time: each grant names exact "
                    "actions on one prefix of the backup bucket (staging, a tier, the lock; reads: all).",
                    applies_to=[
                        f"Resource::<{bucket_id}.Arn>{suffix}"
                        for suffix in sorted(wildcard_resources(self._deps.hostname))
                    ],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="SNS.grant_publish on the encrypted alert topic: the topic's own alerts key, "
                    "through SNS; CDK's action group for it.",
                    applies_to=["Action::kms:GenerateDataKey*"],
                ),
            ],
            apply_to_children=True,
        )


def _managed_policies(spec: FunctionSpec) -> list[str]:
    """The AWS managed policies CDK attaches to a function's role."""
    basic = "AWSLambdaBasicExecutionRole"
    return [basic, "AWSLambdaVPCAccessExecutionRole"] if spec.in_vpc else [basic]


def _layer(scope: Construct, construct_id: str, path: Path, what: str) -> lambda_.LayerVersion:
    return lambda_.LayerVersion(
        scope,
        construct_id,
        code=lambda_.Code.from_asset(str(path)),
        compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
        compatible_architectures=[lambda_.Architecture.ARM_64],
        description=f"Quest Board Backup: {what}",
    )


def grant_spec(grantee: lambda_.Function | iam.Role, spec: FunctionSpec, deps: FunctionDependencies) -> None:
    """What ``spec`` may touch, granted to a function or to the Fargate task role that runs its handler."""
    # The uploads in S3 and the configuration: the dump reads them, the restore steps write the
    # uploads; Report only cleans a drill's scratch folder (EFS) and gets none of this.
    if spec.files is not None and deps.source_config is not None and spec.module != names.RESTORE_REPORT:
        grant_aws_sources(grantee, spec.files, deps.source_config)
    grant_bucket(grantee, deps.bucket, deps.bucket_key, deps.hostname, spec.s3)
    if spec.kms is not None:
        grant_wrapping_key(grantee, deps.key, spec.kms)
    if spec.reads_secrets:
        deps.database_secret.grant_read(grantee)
        if deps.redis_secret:
            deps.redis_secret.grant_read(grantee)
    if spec.publishes_alerts:
        deps.alert_topic.grant_publish(grantee)
