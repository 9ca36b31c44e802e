"""Keys are customer managed and rotated; each function gets only the key and secret access it needs."""

from __future__ import annotations

import json
from typing import Any

from infra import constants as names
from tests.infra.conftest import Synthesized


def _policy_of(synth: Synthesized, module: str) -> list[dict[str, Any]]:
    role = synth.stack.functions[module].role
    assert role is not None
    role_id = synth.logical_id(role)
    statements: list[dict[str, Any]] = []
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _actions(statements: list[dict[str, Any]], resource_fragment: str) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        if resource_fragment in json.dumps(statement["Resource"]):
            actions = statement["Action"]
            found.update([actions] if isinstance(actions, str) else actions)
    return found


def test_both_keys_are_customer_managed_rotated_and_retained(synth: Synthesized) -> None:
    keys = synth.of_type("AWS::KMS::Key")
    assert set(keys) == {
        synth.logical_id(synth.stack.security.backup_key),
        synth.logical_id(synth.stack.security.alerts_key),
    }
    for key in keys.values():
        assert key["Properties"]["EnableKeyRotation"] is True
        assert key["DeletionPolicy"] == "Retain"


def test_backup_key_policy_names_no_principal_but_the_account(synth: Synthesized) -> None:
    key = synth.resources[synth.logical_id(synth.stack.security.backup_key)]
    principals = [statement["Principal"] for statement in key["Properties"]["KeyPolicy"]["Statement"]]
    assert all(set(principal) == {"AWS"} for principal in principals), principals


def test_only_cloudwatch_may_use_the_alerts_key_from_outside_iam(synth: Synthesized) -> None:
    key = synth.resources[synth.logical_id(synth.stack.security.alerts_key)]
    services = [
        statement
        for statement in key["Properties"]["KeyPolicy"]["Statement"]
        if "Service" in statement["Principal"]
    ]
    assert [statement["Principal"]["Service"] for statement in services] == ["cloudwatch.amazonaws.com"]
    assert services[0]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]


def test_only_prepare_generates_data_keys_directly(synth: Synthesized) -> None:
    key_id = synth.logical_id(synth.stack.security.backup_key)
    assert "kms:GenerateDataKey" in _actions(_policy_of(synth, names.BACKUP_PREPARE), key_id)
    for module in (names.RESTORE_RESOLVE, names.RESTORE_VALIDATE, names.RESTORE_COMPONENT):
        actions = _actions(_policy_of(synth, module), key_id)
        assert "kms:Decrypt" in actions, module
        assert not any(action.startswith("kms:GenerateDataKey") for action in actions), module
        assert "kms:Encrypt" not in actions, module


def test_read_only_functions_cannot_write_or_delete_backups(synth: Synthesized) -> None:
    bucket_id = synth.logical_id(synth.stack.storage.bucket)
    for module in (
        names.BACKUP_VERIFY,
        names.RESTORE_RESOLVE,
        names.RESTORE_COMPONENT,
        names.RESTORE_FAILURE,
    ):
        actions = _actions(_policy_of(synth, module), bucket_id)
        assert "s3:GetObject*" in actions, module
        assert not {"s3:PutObject", "s3:DeleteObject*"} & actions, module


def test_only_the_functions_that_connect_to_sources_read_the_secrets(synth: Synthesized) -> None:
    readers = {names.BACKUP_DUMP, names.RESTORE_COMPONENT, names.RESTORE_VERIFY}
    for module in synth.stack.functions.functions:
        actions = _actions(_policy_of(synth, module), ":secret:questboard/backup/")
        assert ("secretsmanager:GetSecretValue" in actions) == (module in readers), module


def test_only_the_reporting_functions_publish_alerts(synth: Synthesized) -> None:
    topic_id = synth.logical_id(synth.stack.alerts.topic)
    publishers = {names.BACKUP_FAILURE, names.RESTORE_FAILURE, names.RESTORE_REPORT}
    for module in synth.stack.functions.functions:
        assert ("sns:Publish" in _actions(_policy_of(synth, module), topic_id)) == (module in publishers)


def test_secrets_given_by_complete_arn_are_granted_by_that_arn(disabled_synth: Synthesized) -> None:
    statements = _policy_of(disabled_synth, names.BACKUP_DUMP)
    assert _actions(statements, "secret:questboard/db-AbCdEf") >= {"secretsmanager:GetSecretValue"}
