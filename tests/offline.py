"""The offline world: the synthesized stack's state machines executed by moto's Step Functions
interpreter, their Lambda tasks routed in-process to the real handlers, against real PostgreSQL and
Redis. The e2e tests provision it inside ``mock_aws``; `make api` and `make demo` get it served by an
in-process moto server (``served_world``), which boto3 reaches through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import boto3

from lambdas import dependencies as deps_module
from lambdas.dependencies import Dependencies, FunctionSettings
from questboard_backup.admin.tokens import TokenDocument
from questboard_backup.storage.s3_client import make_client
from tests.infra.asl import PSEUDO, concrete_definition
from tests.lambda_runtime import in_process_lambdas
from tests.servers import PostgresServer, RedisServer

REGION = PSEUDO["AWS::Region"]
#: The admin API token every world holds (scope admin), as `make api` stores ADMIN_TOKEN.
ADMIN_TOKEN_NAME = "local-admin"
#: The status catalog's DynamoDB table (keys and billing as the stack declares them).
CATALOG_TABLE = "catalog"
#: Annotations stay annotations, as in tests/infra: cdk-nag's findings must not fail this synth.
SYNTH_CONTEXT = {"@aws-cdk/core:annotationsInValidationReport": False}
#: What moto's credentials and region are, for the handlers, the CLI and any boto3 client.
FAKE_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
#: What the functions' Powertools read (as the stack sets it), with X-Ray off: there is no daemon.
POWERTOOLS_ENVIRONMENT = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "QuestBoardBackup",
}


def synthesize(workdir: Path) -> dict[str, Any]:
    """The stack's CloudFormation template, synthesized in-process (about 8 s) with placeholder layer
    folders: the handlers run in this process, not from the layers."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from infra.application import build_app
    from infra.functions import LayerPaths

    paths = LayerPaths(python_deps=workdir / "layers" / "python", pg_tools=workdir / "layers" / "pgtools")
    for path in (paths.python_deps, paths.pg_tools):
        path.mkdir(parents=True, exist_ok=True)
        (path / "README").write_text("the offline world runs the handlers in-process\n")
    app, stack = build_app(SYNTH_CONTEXT, layer_paths=paths, outdir=str(workdir / "cdk.out"))
    artifact = app.synth().get_stack_artifact(stack.artifact_id)
    return dict(json.loads(Path(artifact.template_full_path).read_text(encoding="utf-8")))


@dataclass
class World:
    """One deployment's worth of AWS resources in moto, and the sources its backups read."""

    machines: dict[str, str]
    settings: FunctionSettings
    database_url: str
    redis: RedisServer
    uploads: Path
    config: Path
    queue_url: str
    admin_token: str
    template: dict[str, Any]
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, name: str) -> Any:
        return self.clients.get(name) or boto3.client(name, region_name=REGION)

    def install(self, **overrides: Any) -> Dependencies:
        secrets = boto3.client("secretsmanager", region_name=REGION)
        # Handlers run at once in several threads (Parallel branches, API calls), and boto3's default
        # session must not build two clients at the same time.
        lock = threading.Lock()

        def client(name: str) -> Any:
            with lock:
                if name in self.clients:
                    return self.clients[name]
                # S3 as the engine builds it on AWS (SigV4, so presigned URLs are what AWS signs).
                return make_client() if name == "s3" else boto3.client(name, region_name=REGION)

        deps = Dependencies(
            self.settings,
            clients=client,
            secrets=lambda arn: secrets.get_secret_value(SecretId=arn)["SecretString"],
        )
        deps_module.install(deps)
        return deps

    def run(self, machine: str, body: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.start_execution(
            stateMachineArn=self.machines[machine],
            name=f"{machine}-{uuid.uuid4().hex[:12]}",
            input=json.dumps(body),
        )["executionArn"]
        return self.wait(arn, timeout)

    def wait(self, execution_arn: str, timeout: float = 180.0) -> dict[str, Any]:
        """The execution's description once it has ended."""
        sfn = boto3.client("stepfunctions", region_name=REGION)
        deadline = time.monotonic() + timeout
        while True:
            description = sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return dict(description)
            assert time.monotonic() < deadline, f"{execution_arn} still running after {timeout}s"
            time.sleep(0.1)  # polling the interpreter's thread for completion, bounded by the deadline

    def objects(self, prefix: str = "") -> list[str]:
        s3 = boto3.client("s3", region_name=REGION)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.settings.s3_bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def alerts(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs", region_name=REGION)
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]


def schedules(template: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each schedule in the stack by what it starts: ``{"full": ("cron(0 2 * * ? *)", "Asia/Tokyo")}``,
    and "drill" for the monthly restore drill."""
    found = {}
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Scheduler::Schedule":
            properties = resource["Properties"]
            payload = json.loads(properties["Target"]["Input"])
            kind = payload["type"] if "type" in payload else "drill" if payload.get("drill") else "other"
            found[kind] = (
                properties["ScheduleExpression"],
                properties.get("ScheduleExpressionTimezone", "UTC"),
            )
    return found


def _catalog_table_properties(template: dict[str, Any]) -> dict[str, Any]:
    tables = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
    if len(tables) != 1:
        raise AssertionError(f"the stack should have one DynamoDB table (the catalog), not {len(tables)}")
    return tables[0]


def provision(
    template: dict[str, Any],
    *,
    database_url: str,
    redis: RedisServer,
    uploads: Path,
    config: Path,
    bucket: str,
    hostname: str,
    admin_token: str | None = None,
    schedule_zone: tzinfo = UTC,
) -> World:
    """Create the deployment's AWS resources in whichever moto boto3 reaches (``mock_aws``, or a server
    through AWS_ENDPOINT_URL), and install the handlers' adapters for them. ``admin_token`` (a fresh
    one when None) is the admin API's only token, named ADMIN_TOKEN_NAME."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    sns = boto3.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    secrets = boto3.client("secretsmanager", region_name=REGION)
    database_secret = secrets.create_secret(Name="db", SecretString=json.dumps({"url": database_url}))["ARN"]
    redis_secret = secrets.create_secret(Name="redis", SecretString=json.dumps({"url": redis.url(0)}))["ARN"]
    tokens, admin_token = TokenDocument().add(ADMIN_TOKEN_NAME, "admin", token=admin_token)
    tokens_secret = secrets.create_secret(Name="api-tokens", SecretString=tokens.dumps())["ARN"]
    table = _catalog_table_properties(template)
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=CATALOG_TABLE,
        **{key: table[key] for key in ("AttributeDefinitions", "KeySchema", "BillingMode")},
    )
    machines = _functions_and_state_machines(template)
    runs = schedules(template)
    settings = FunctionSettings(
        s3_bucket=bucket,
        hostname=hostname,
        kms_key_id=key_id,
        enabled=True,
        database_secret_arn=database_secret,
        redis_secret_arn=redis_secret,
        alert_topic_arn=topic,
        state_machine_arn=machines["backup"],
        catalog_table=CATALOG_TABLE,
        api_tokens_secret=tokens_secret,
        full_schedule=runs.get("full", ("", ""))[0],
        incremental_schedule=runs.get("incremental", ("", ""))[0],
        schedule_zone=schedule_zone,
        files_paths=(uploads,),
        config_paths=(config,),
        pg_split_min_bytes=0,  # the test database is small: split it all the same (parallel dump streams)
    )
    world = World(
        machines=machines,
        settings=settings,
        database_url=database_url,
        redis=redis,
        uploads=uploads,
        config=config,
        queue_url=queue_url,
        admin_token=admin_token,
        template=template,
    )
    world.install()
    return world


def _functions_and_state_machines(template: dict[str, Any]) -> dict[str, str]:
    """Every function of the stack (code never runs: moto's invocation is routed to the handler) and
    both state machines with their concrete ASL; returns ``{"backup": arn, "restore": arn}``."""
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="offline", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("placeholder.py", "")
    awslambda = boto3.client("lambda", region_name=REGION)
    attrs: dict[tuple[str, str], str] = {}
    refs: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        refs[logical_id] = f"ref-{logical_id}"
        if resource["Type"] == "AWS::Lambda::Function":
            # Import now, as Lambda's init phase would, not inside the interpreter's worker threads.
            importlib.import_module(resource["Properties"]["Handler"].rsplit(".", 1)[0])
            attrs[(logical_id, "Arn")] = awslambda.create_function(
                FunctionName=logical_id[:64],
                Runtime="python3.12",
                Role=role,
                Handler=resource["Properties"]["Handler"],
                Code={"ZipFile": archive.getvalue()},
                Timeout=int(resource["Properties"]["Timeout"]),
            )["FunctionArn"]
    network = _fargate_resources(template, refs, attrs)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machines = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        asl = concrete_definition(template, logical_id, refs, attrs)
        text = json.dumps(asl)
        for deployed, offline in network.items():  # the stack's subnets and group, as moto made them
            text = text.replace(deployed, offline)
        asl = json.loads(text)
        kind = "backup" if "Prepare" in asl["States"] else "restore"
        machines[kind] = sfn.create_state_machine(name=kind, definition=json.dumps(asl), roleArn=role)[
            "stateMachineArn"
        ]
    return machines


def _fargate_resources(
    template: dict[str, Any], refs: dict[str, str], attrs: dict[tuple[str, str], str]
) -> dict[str, str]:
    """The Fargate path's cluster and task definitions, registered in moto (whose Fargate tasks need a
    real subnet and security group: made here); returns the stack's subnet and group ids -> moto's."""
    resources = template["Resources"]
    definitions = {k: r for k, r in resources.items() if r["Type"] == "AWS::ECS::TaskDefinition"}
    if not definitions:
        return {}
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="fargate", Description="offline", VpcId=vpc)["GroupId"]
    ecs = boto3.client("ecs", region_name=REGION)
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::ECS::Cluster":
            arn = ecs.create_cluster(clusterName=logical_id)["cluster"]["clusterArn"]
            attrs[(logical_id, "Arn")] = arn
            refs[logical_id] = logical_id
    for resource in definitions.values():
        properties = resource["Properties"]
        (container,) = properties["ContainerDefinitions"]
        handler = next(v["Value"] for v in container["Environment"] if v["Name"] == "QB_TASK_HANDLER")
        ecs.register_task_definition(
            family=properties["Family"],
            # Not awsvpc: moto's awsvpc tasks fail making their network interface (this moto version).
            networkMode="bridge",
            cpu=str(properties["Cpu"]),
            memory=str(properties["Memory"]),
            # The task runs the real runner in this process (tests/fargate_tasks.py): the handler's
            # name is all it needs of the container's environment.
            containerDefinitions=[
                {
                    "name": container["Name"],
                    "image": "offline",
                    "memory": int(properties["Memory"]),  # moto sums the containers' memory
                    "environment": [{"name": "QB_TASK_HANDLER", "value": handler}],
                }
            ],
        )
    return {
        "subnet-0123456789abcdef0": subnet,
        "subnet-0123456789abcdef1": subnet,
        "sg-0123456789abcdef0": group,
    }


@dataclass
class ServedWorld:
    """The world behind a moto server: ``endpoint`` is its URL, ``environment`` what a process needs to
    reach it (the operator's `backup.sh verify` included)."""

    world: World
    endpoint: str
    environment: dict[str, str]
    #: What is removed on exit: the work folder (synth, Redis, the app's files) and PostgreSQL's.
    folders: tuple[Path, ...]


@contextlib.contextmanager
def served_world(
    admin_token: str,
    *,
    bucket: str = "questboard-backups-local",
    hostname: str = "questboard",
    on_step: Callable[[str], None] = lambda step: None,
) -> Iterator[ServedWorld]:
    """Synthesize the stack, start PostgreSQL, Redis (the sample dataset loaded) and a moto server on
    free ports, and provision the world there; everything is stopped and removed on exit. Sets this
    process's AWS environment (AWS_ENDPOINT_URL, fake credentials) until then: meant for a process of
    its own, such as `make api`."""
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer

    from tests.dataset import load_postgres, load_redis, make_files

    work = Path(tempfile.mkdtemp(prefix="questboard-api-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        on_step("synthesizing the stack")
        template = synthesize(work / "synth")
        on_step("starting PostgreSQL and Redis, loading the sample dataset")
        postgres = PostgresServer.in_new_folder()
        stack.callback(postgres.stop)
        postgres.start()
        redis = RedisServer(work / "redis")
        stack.callback(redis.stop)
        redis.start()
        database_url = _created_database(postgres, "questboard")
        load_postgres(database_url)
        load_redis(redis.url(0))
        uploads, config = make_files(work / "app")
        on_step("starting moto and creating the stack's resources")
        werkzeug_log = logging.getLogger("werkzeug")  # moto's server logs every request at INFO
        stack.callback(werkzeug_log.setLevel, werkzeug_log.level)
        werkzeug_log.setLevel(logging.WARNING)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()  # returns once the socket is listening
        stack.callback(moto.stop)
        port = moto.get_host_and_port()[1]
        endpoint = f"http://127.0.0.1:{port}"
        # The interpreter's own clients call http://localhost:$MOTO_PORT.
        process_environment = {
            **FAKE_AWS_ENVIRONMENT,
            **POWERTOOLS_ENVIRONMENT,
            "AWS_ENDPOINT_URL": endpoint,
            "MOTO_PORT": str(port),
        }
        stack.enter_context(mock.patch.dict(os.environ, process_environment))
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)  # patch.dict puts them back on exit
        stack.enter_context(
            mock.patch.dict(default_user_config["stepfunctions"], {"execute_state_machine": True})
        )
        stack.enter_context(in_process_lambdas())
        zone = schedules(template).get("full", ("", "UTC"))[1]
        world = provision(
            template,
            database_url=database_url,
            redis=redis,
            uploads=uploads,
            config=config,
            bucket=bucket,
            hostname=hostname,
            admin_token=admin_token,
            schedule_zone=ZoneInfo(zone),
        )
        stack.callback(deps_module.install, None)
        operator = operator_environment(endpoint, world.settings.kms_key_id)
        yield ServedWorld(world, endpoint, operator, (work, postgres.root))


def operator_environment(endpoint: str, kms_key_id: str) -> dict[str, str]:
    """What `scripts/backup.sh verify <folder>` needs for a set this world made: its data keys are
    wrapped by moto's KMS, so the CLI must reach moto (endpoint, any credentials, the region)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": FAKE_AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": FAKE_AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": REGION,
        "BACKUP_KMS_KEY_ID": kms_key_id,
    }


def _created_database(server: PostgresServer, name: str) -> str:
    import psycopg2

    admin = psycopg2.connect(server.url())
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return server.url(name)
