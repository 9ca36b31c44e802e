"""The state machines follow docs/serverless.md: order, payloads, retries, one failure path, limits."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra import constants as names
from infra.functions import REPO_ROOT
from questboard_backup import errors
from tests.infra.asl import definition, path_from
from tests.infra.conftest import Synthesized

RETRIED = [
    "TransientStorageError",
    "TransientKeyServiceError",
    "TransientAlertError",
    "SourceUnreachableError",
    "Lambda.ServiceException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
RETRY = {"ErrorEquals": RETRIED, "IntervalSeconds": 5, "MaxAttempts": 3, "BackoffRate": 2}
#: A Fargate task retries the engine's transient errors (it reports them by class name); there is no
#: Lambda service between.
FARGATE_RETRY = {**RETRY, "ErrorEquals": [e for e in RETRIED if not e.startswith("Lambda.")]}
CATCH_ALL = {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "HandleFailure"}


@pytest.fixture(scope="module")
def backup(synth: Synthesized) -> dict[str, Any]:
    return definition(synth.resources[synth.logical_id(synth.stack.backup.state_machine)])


@pytest.fixture(scope="module")
def restore(synth: Synthesized) -> dict[str, Any]:
    return definition(synth.resources[synth.logical_id(synth.stack.restore.state_machine)])


def _function_arn(synth: Synthesized, module: str) -> str:
    return f"<{synth.logical_id(synth.stack.functions[module])}.Arn>"


def _tasks(states: dict[str, Any]) -> dict[str, Any]:
    """Every Task state, nested branches and item processors included."""
    found = {}
    for name, state in states.items():
        if state["Type"] == "Task":
            found[name] = state
        for branch in state.get("Branches", []):
            found.update(_tasks(branch["States"]))
        if "ItemProcessor" in state:
            found.update(_tasks(state["ItemProcessor"]["States"]))
    return found


def test_backup_runs_the_documented_steps_in_order(backup: dict[str, Any]) -> None:
    assert "QueryLanguage" not in backup, "JSONPath (moto cannot run JSONata)"
    assert path_from(backup["States"], backup["StartAt"]) == ["Prepare", "Dump", "AllDumpsSucceeded"]
    after_dumps = backup["States"]["AllDumpsSucceeded"]["Default"]
    assert path_from(backup["States"], after_dumps) == [
        "Seal",
        "Verify",
        "Promote",
        "Publish",
        "Release",
        "BackupSucceeded",
    ]
    assert backup["States"]["BackupSucceeded"]["Type"] == "Succeed"
    assert backup["TimeoutSeconds"] == 2 * 3600


def test_backup_dumps_every_component_in_parallel(synth: Synthesized, backup: dict[str, Any]) -> None:
    dump = backup["States"]["Dump"]
    assert dump["Type"] == "Parallel"
    assert dump["ResultPath"] == "$.components"
    payloads = []
    for branch in dump["Branches"]:
        (state,) = [
            s
            for s in branch["States"].values()
            if s.get("Resource") == _function_arn(synth, names.BACKUP_DUMP)
        ]
        assert state["Retry"] == [RETRY]
        payloads.append(state["Parameters"])
        # A failed dump ends its own branch, so no dump still runs when the failure path cleans up.
        (catch,) = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and catch["ResultPath"] == "$.error"
        assert branch["States"][catch["Next"]]["Type"] == "Pass"
    assert payloads == [
        {"component": c, "backup.$": "$.backup"}
        for c in ("postgres", "redis", "files", "config", "s3uploads", "ssmconfig")
    ]


def test_any_failed_dump_goes_to_the_failure_path_with_its_error(backup: dict[str, Any]) -> None:
    choice = backup["States"]["AllDumpsSucceeded"]
    assert choice["Type"] == "Choice"
    failure_start = backup["States"]["Prepare"]["Catch"][-1]["Next"]
    for index, rule in enumerate(choice["Choices"]):
        assert rule == {"Variable": f"$.components[{index}].error", "IsPresent": True, "Next": rule["Next"]}
        handler = backup["States"][rule["Next"]]
        assert handler["Parameters"] == {
            "Error.$": f"$.components[{index}].error.Error",
            "Cause.$": f"$.components[{index}].error.Cause",
        }
        assert handler["ResultPath"] == "$.error" and handler["Next"] == failure_start
    assert len(choice["Choices"]) == len(names.COMPONENTS) == 6


def test_backup_steps_keep_backup_and_components_in_the_state(
    synth: Synthesized, backup: dict[str, Any]
) -> None:
    states = backup["States"]
    assert "Parameters" not in states["Prepare"]  # the whole input: type, and backup_id when scheduled
    assert states["Prepare"]["ResultSelector"] == {"backup.$": "$.backup", "runtime.$": "$.runtime"}
    assert states["Prepare"]["ResultPath"] == "$"
    both = {"backup.$": "$.backup", "components.$": "$.components"}
    assert states["Seal"]["Parameters"] == both
    assert states["Publish"]["Parameters"] == both
    for name in ("Verify", "Promote", "Release"):
        assert states[name]["Parameters"] == {"backup.$": "$.backup"}, name
    for name, module in {
        "Prepare": names.BACKUP_PREPARE,
        "Seal": names.BACKUP_SEAL,
        "Verify": names.BACKUP_VERIFY,
        "Promote": names.BACKUP_PROMOTE,
        "Publish": names.BACKUP_PUBLISH,
        "Release": names.BACKUP_RELEASE,
    }.items():
        assert states[name]["Resource"] == _function_arn(synth, module), "payload_response_only"
        assert states[name]["ResultPath"] not in ("$.backup", "$.components"), name


def test_every_retried_error_is_an_engine_error_class_or_a_lambda_service_error() -> None:
    engine_errors = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.BackupError)
    }
    for name in names.TRANSIENT_ERRORS:
        assert name.startswith("Lambda.") or name in engine_errors, name


def test_every_transient_engine_error_is_retried() -> None:
    transient = {name for name in vars(errors) if name.startswith("Transient") and name.endswith("Error")}
    assert "TransientKeyServiceError" in transient and "TransientAlertError" in transient
    assert transient <= set(names.TRANSIENT_ERRORS)


@pytest.mark.parametrize("machine", ["backup", "restore"])
def test_every_task_retries_the_transient_errors_with_backoff(
    machine: str, request: pytest.FixtureRequest
) -> None:
    tasks = _tasks(request.getfixturevalue(machine)["States"])
    for name, task in tasks.items():
        if name != "HandleFailure":
            expected = FARGATE_RETRY if name.endswith("OnFargate") else RETRY
            assert task["Retry"] == [expected], name
    for name in ("LockedError", "BackupDisabledError"):
        assert all(name not in str(task.get("Retry")) for task in tasks.values())


@pytest.mark.parametrize(("machine", "what"), [("backup", "Backup"), ("restore", "Restore")])
def test_every_step_fails_through_the_one_failure_path(
    machine: str, what: str, synth: Synthesized, request: pytest.FixtureRequest
) -> None:
    asl = request.getfixturevalue(machine)
    states = asl["States"]
    steps = [
        n for n, s in states.items() if s["Type"] in ("Task", "Parallel", "Map") and n != "HandleFailure"
    ]
    assert len(steps) >= 5
    for name in steps:
        assert states[name]["Catch"][-1] == CATCH_ALL, name
    handle = states["HandleFailure"]
    module = names.BACKUP_FAILURE if machine == "backup" else names.RESTORE_FAILURE
    assert handle["Resource"] == _function_arn(synth, module)
    assert "Parameters" not in handle, "the failure function gets the whole state, error included"
    assert handle["ResultPath"] is None
    assert handle["Next"] == f"{what}Failed"
    assert handle["Catch"][0]["Next"] == f"{what}Failed"
    assert states[f"{what}Failed"] == {
        "Type": "Fail",
        "Comment": f"The {what.lower()} failed; Error and Cause are those of the failed step",
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }


def test_disabled_backups_end_in_success_not_failure(backup: dict[str, Any]) -> None:
    first_catch = backup["States"]["Prepare"]["Catch"][0]
    assert first_catch["ErrorEquals"] == ["BackupDisabledError"]
    assert backup["States"][first_catch["Next"]]["Type"] == "Succeed"


def test_restore_runs_the_documented_steps_in_order(restore: dict[str, Any]) -> None:
    assert "QueryLanguage" not in restore
    assert path_from(restore["States"], restore["StartAt"]) == [
        "ReadRequest",
        "Resolve",
        "Validate",
        "StageComponents",
        "Swap",
        "Verify",
        "Report",
        "RestoreSucceeded",
    ]
    assert restore["TimeoutSeconds"] == 4 * 3600


def test_restore_passes_the_resolved_restore_to_every_step(
    synth: Synthesized, restore: dict[str, Any]
) -> None:
    states = restore["States"]
    assert states["ReadRequest"]["Parameters"] == {"request.$": "$"}
    assert states["Resolve"]["InputPath"] == "$.request"
    assert states["Resolve"]["ResultSelector"] == {"restore.$": "$.restore"}
    assert states["Resolve"]["ResultPath"] == "$"
    for name in ("Validate", "Verify"):
        assert states[name]["Parameters"] == {"restore.$": "$.restore"}, name
    assert states["Validate"]["ResultPath"] == "$.validated"


def test_restore_stages_components_one_at_a_time_in_order_then_swaps_them_all_at_once(
    synth: Synthesized, restore: dict[str, Any]
) -> None:
    swap = restore["States"]["Swap"]
    assert swap["Resource"] == _function_arn(synth, names.RESTORE_SWAP)
    assert swap["Parameters"] == {"restore.$": "$.restore", "components.$": "$.validated.components"}
    assert restore["States"]["StageComponents"]["Next"] == "Swap"
    step = restore["States"]["StageComponents"]
    assert step["Type"] == "Map"
    assert step["MaxConcurrency"] == 1
    assert step["ItemsPath"] == "$.validated.components"
    assert step["ItemSelector"] == {
        "component.$": "$$.Map.Item.Value",
        "runtime.$": "$.validated.runtime",
        "restore.$": "$.restore",
    }
    processor = step["ItemProcessor"]
    where = processor["States"][processor["StartAt"]]
    assert where["Type"] == "Choice"
    assert processor["States"][where["Default"]]["Resource"] == _function_arn(synth, names.RESTORE_COMPONENT)


@pytest.mark.parametrize("machine", ["backup", "restore"])
def test_state_machines_are_traced_and_log_every_event(machine: str, synth: Synthesized) -> None:
    state_machine = getattr(synth.stack, machine).state_machine
    properties = synth.resources[synth.logical_id(state_machine)]["Properties"]
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["LoggingConfiguration"]["Level"] == "ALL"
    (destination,) = properties["LoggingConfiguration"]["Destinations"]
    group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert synth.resources[group_id]["Properties"]["RetentionInDays"] == 90


ASL_VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "asl-validator"


@pytest.mark.parametrize("machine", ["backup", "restore"])
def test_definitions_pass_asl_validator(machine: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Schema and transitions (moto accepts a missing Next target; AWS and asl-validator do not)."""
    assert ASL_VALIDATOR.exists(), "asl-validator is not installed: run `npm ci`"
    text = json.dumps(request.getfixturevalue(machine))
    text = re.sub(r'"<(\w+)\.Arn>"', r'"arn:aws:lambda:ap-northeast-1:123456789012:function:\1"', text)
    path = tmp_path / f"{machine}.asl.json"
    path.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
