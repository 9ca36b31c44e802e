"""The Fargate path in the template: a Docker-free task (stock image through a pull-through cache, the
bootstrap inline), task roles with the functions' own grants, the private subnets, and the workflows'
choice between the Lambda and the task, both ways."""

from __future__ import annotations

import json
from typing import Any

from infra import constants as names
from infra.fargate import BOOTSTRAP, HEARTBEAT_SECONDS
from questboard_backup import runtime
from tests.infra.asl import definition
from tests.infra.conftest import Synthesized

SUBNETS = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]


def _asl(synth: Synthesized, machine: str) -> dict[str, Any]:
    return definition(synth.resources[synth.logical_id(getattr(synth.stack, machine).state_machine)])


def _states(states: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name, state in states.items():
        found[name] = state
        for branch in state.get("Branches", []):
            found.update(_states(branch["States"]))
        if "ItemProcessor" in state:
            found.update(_states(state["ItemProcessor"]["States"]))
    return found


def _statements(synth: Synthesized, role_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_the_engine_and_the_stack_agree_on_what_may_run_on_fargate() -> None:
    assert set(names.FARGATE_COMPONENTS) == set(runtime.FARGATE_COMPONENTS)


def test_the_task_is_a_stock_image_through_the_cache_running_the_bootstrap_arm64(synth: Synthesized) -> None:
    (rule,) = synth.of_type("AWS::ECR::PullThroughCacheRule").values()
    assert rule["Properties"] == {
        "EcrRepositoryPrefix": "ecr-public",
        "UpstreamRegistryUrl": "public.ecr.aws",
    }
    definitions = synth.of_type("AWS::ECS::TaskDefinition")
    assert len(definitions) == 2
    for task in definitions.values():
        properties = task["Properties"]
        assert properties["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
        assert properties["RequiresCompatibilities"] == ["FARGATE"] and properties["NetworkMode"] == "awsvpc"
        (container,) = properties["ContainerDefinitions"]
        assert "ecr-public/docker/library/python:3.12-slim" in json.dumps(container["Image"])
        assert container["Command"] == ["python3", "-c", BOOTSTRAP.read_text(encoding="utf-8")]
        variables = {v["Name"]: v["Value"] for v in container["Environment"]}
        assert variables["QB_TASK_HANDLER"] in (names.BACKUP_DUMP, names.RESTORE_COMPONENT)
        assert variables["BACKUP_COMPONENT_RUNTIME"] == "auto"
        assert "QB_CODE_ASSET_URL" in variables and len(str(variables["QB_LAYER_URLS"]).split(",")) >= 1
        assert container["LogConfiguration"]["LogDriver"] == "awslogs"


def test_each_task_role_has_its_functions_grants_and_may_only_report_to_step_functions(
    synth: Synthesized,
) -> None:
    fargate = synth.stack.fargate
    assert fargate is not None
    for module in (names.BACKUP_DUMP, names.RESTORE_COMPONENT):
        role = fargate.runners[module].definition.task_role
        function_role = synth.stack.functions[module].role
        assert function_role is not None
        task_statements = _statements(synth, synth.logical_id(role))
        function_statements = _statements(synth, synth.logical_id(function_role))
        extra = [s for s in task_statements if s not in function_statements]
        # Beyond the function's grants: reading the asset zips, and reporting with the task token.
        for statement in extra:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert set(actions) <= {
                "s3:GetObject*",
                "s3:GetBucket*",
                "s3:List*",
                "states:SendTaskSuccess",
                "states:SendTaskFailure",
                "states:SendTaskHeartbeat",
            }, (module, statement)
        missing = [
            s
            for s in function_statements
            if s not in task_statements and "xray" not in json.dumps(s["Action"])
        ]
        assert missing == [], module


def test_the_dump_and_the_staging_choose_lambda_or_fargate_on_the_chosen_runtime(synth: Synthesized) -> None:
    fargate = synth.stack.fargate
    assert fargate is not None
    for machine, choice_name, module in (
        ("backup", "DumpPostgresWhere", names.BACKUP_DUMP),
        ("restore", "StageComponentWhere", names.RESTORE_COMPONENT),
    ):
        states = _states(_asl(synth, machine)["States"])
        choice = states[choice_name]
        (rule,) = choice["Choices"]
        conditions = json.dumps(rule)
        assert '"StringEquals": "fargate"' in conditions and '"$.runtime.postgres"' in conditions
        # Otherwise: the Lambda, as before.
        lambda_task = states[choice["Default"]]
        lambda_id = synth.logical_id(synth.stack.functions[module])
        assert lambda_id in json.dumps(lambda_task["Resource"])
        # On Fargate: the event built, then the task, reporting with the token, heartbeating.
        build = states[rule["Next"]]
        assert build["Type"] == "Pass" and "event" in build["Parameters"]
        task = states[build["Next"]]
        assert task["Resource"].endswith(":states:::ecs:runTask.waitForTaskToken") or (
            "ecs:runTask.waitForTaskToken" in json.dumps(task["Resource"])
        )
        assert task["HeartbeatSeconds"] == HEARTBEAT_SECONDS
        parameters = task["Parameters"]
        assert parameters["LaunchType"] == "FARGATE"
        network = parameters["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["Subnets"] == SUBNETS and network.get("AssignPublicIp", "DISABLED") == "DISABLED"
        (override,) = parameters["Overrides"]["ContainerOverrides"]
        variables = {v["Name"]: v for v in override["Environment"]}
        assert variables["QB_TASK_TOKEN"]["Value.$"] == "$$.Task.Token"
        assert variables["QB_TASK_EVENT"]["Value.$"] == "States.JsonToString($.event)"
        runner = fargate.runners[module].definition
        assert parameters["TaskDefinition"] == synth.stack.resolve(runner.family)


def test_a_stack_forced_to_lambda_deploys_no_fargate_path(disabled_synth: Synthesized) -> None:
    assert disabled_synth.stack.fargate is None
    assert not disabled_synth.of_type("AWS::ECS::TaskDefinition")
    assert "ecs:runTask" not in json.dumps(_asl(disabled_synth, "backup"))


def test_a_task_is_told_the_time_its_state_machine_leaves_it(synth: Synthesized) -> None:
    from infra.fargate import TASK_BUDGET_SECONDS
    from lambdas.restore_validate import FARGATE_STAGE_SECONDS

    assert TASK_BUDGET_SECONDS[names.RESTORE_COMPONENT] == FARGATE_STAGE_SECONDS
    assert TASK_BUDGET_SECONDS[names.BACKUP_DUMP] < names.BACKUP_STATE_MACHINE_TIMEOUT_HOURS * 3600
    for task in synth.of_type("AWS::ECS::TaskDefinition").values():
        (container,) = task["Properties"]["ContainerDefinitions"]
        variables = {v["Name"]: v["Value"] for v in container["Environment"]}
        assert variables["QB_TASK_BUDGET_SECONDS"] == str(TASK_BUDGET_SECONDS[variables["QB_TASK_HANDLER"]])
