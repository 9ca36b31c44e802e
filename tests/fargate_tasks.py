"""Fargate tasks offline: moto's ECS accepts ``RunTask`` and then nothing runs, so each task started
is routed, as the Lambda tasks are, to the real entrypoint: ``lambdas.task_runner.main`` with the
task's environment (its definition's, then the workflow's overrides: the event and the task token),
on a thread of its own, reporting back to the interpreter with the task token.

One shim for moto: its Step Functions interpreter hands the ECS integration's parameters to boto3 as
the state wrote them (``Cluster``, ``TaskDefinition``: Step Functions' PascalCase), which boto3's
``run_task`` (``cluster``, ``taskDefinition``) refuses, and then reads the reply with PascalCase keys.
The shim renames the keys, as Step Functions does, and leaves the rest to moto."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.ecs.models import EC2ContainerServiceBackend

from tests.offline import REGION


@dataclass
class RoutedTasks:
    """What ran: each task's environment and its runner's exit code."""

    started: list[dict[str, str]] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    #: True: a task dies before it reports anything (killed, out of memory): the runner never runs.
    die: bool = False


def _camel(value: Any) -> Any:
    """Step Functions' PascalCase parameter names as the ECS API spells them (``Cluster`` ->
    ``cluster``), recursively; values are left alone."""
    if isinstance(value, dict):
        return {key[:1].lower() + key[1:]: _camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel(item) for item in value]
    return value


def _run_task_with_ecs_names(
    self: Any,
    env: Any,
    resource_runtime_part: Any,
    normalised_parameters: dict[str, Any],
    state_credentials: Any,
) -> None:
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

    client = boto_client_for(
        region=resource_runtime_part.region, service="ecs", state_credentials=state_credentials
    )
    response = client.run_task(**_camel(normalised_parameters))
    response.pop("ResponseMetadata", None)
    env.stack.append(response)


@contextlib.contextmanager
def fargate_tasks_run_the_runner() -> Iterator[RoutedTasks]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
        StateTaskServiceEcs,
    )

    from lambdas import task_runner

    routed = RoutedTasks()
    original = EC2ContainerServiceBackend.run_task
    original_eval = StateTaskServiceEcs._eval_service_task

    def run_task(self: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> Any:
        tasks = original(self, *args, **kwargs)
        for task in tasks:
            environment: dict[str, str] = {}
            for container in self.describe_task_definition(task.task_definition_arn).container_definitions:
                environment.update({v["name"]: v["value"] for v in container.get("environment", [])})
            for override in task.overrides.get("containerOverrides", []):
                environment.update({v["name"]: v["value"] for v in override.get("environment", [])})
            routed.started.append(environment)
            if routed.die:
                continue

            def work(environ: dict[str, str] = environment) -> None:
                client = boto3.client("stepfunctions", region_name=REGION)
                routed.exit_codes.append(task_runner.main(environ, client))

            thread = threading.Thread(target=work, name="fargate-task", daemon=True)
            routed.threads.append(thread)
            thread.start()
        return tasks

    EC2ContainerServiceBackend.run_task = run_task  # type: ignore[method-assign]
    StateTaskServiceEcs._eval_service_task = _run_task_with_ecs_names  # type: ignore[method-assign]
    try:
        yield routed
    finally:
        EC2ContainerServiceBackend.run_task = original  # type: ignore[method-assign]
        StateTaskServiceEcs._eval_service_task = original_eval  # type: ignore[method-assign]
        for thread in routed.threads:
            thread.join(timeout=60)
