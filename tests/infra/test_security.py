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


def test_the_three_keys_are_customer_managed_rotated_and_retained(synth: Synthesized) -> None:
    keys = synth.of_type("AWS::KMS::Key")
    assert set(keys) == {
        synth.logical_id(synth.stack.security.backup_key),
        synth.logical_id(synth.stack.security.bucket_key),
        synth.logical_id(synth.stack.security.alerts_key),
    }
    for key in keys.values():
        assert key["Properties"]["EnableKeyRotation"] is True
        assert key["DeletionPolicy"] == "Retain"


def _key_policy(synth: Synthesized, key: Any) -> list[dict[str, Any]]:
    return list(synth.resources[synth.logical_id(key)]["Properties"]["KeyPolicy"]["Statement"])


def test_backup_keys_allow_no_principal_but_the_account(synth: Synthesized) -> None:
    for key in (synth.stack.security.backup_key, synth.stack.security.bucket_key):
        allows = [s for s in _key_policy(synth, key) if s["Effect"] == "Allow"]
        assert [set(statement["Principal"]) for statement in allows] == [{"AWS"}]
        assert ":root" in json.dumps(allows[0]["Principal"])


_CRYPTO = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]


def test_the_wrapping_key_refuses_everyone_without_a_backup_id_context(synth: Synthesized) -> None:
    (deny,) = [s for s in _key_policy(synth, synth.stack.security.backup_key) if s["Effect"] == "Deny"]
    assert deny["Principal"] == {"AWS": "*"} and deny["Action"] == _CRYPTO
    assert deny["Condition"] == {"Null": {"kms:EncryptionContext:backup_id": "true"}}


def test_the_bucket_key_refuses_everyone_outside_s3(synth: Synthesized) -> None:
    (deny,) = [s for s in _key_policy(synth, synth.stack.security.bucket_key) if s["Effect"] == "Deny"]
    assert deny["Principal"] == {"AWS": "*"} and deny["Action"] == _CRYPTO
    via = json.dumps(deny["Condition"]["StringNotEquals"]["kms:ViaService"])
    assert '"s3."' in via and "AWS::Region" in via


def test_the_bucket_is_not_encrypted_with_the_wrapping_key(synth: Synthesized) -> None:
    bucket = synth.resources[synth.logical_id(synth.stack.storage.bucket)]["Properties"]
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    sse_key = rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]
    assert sse_key == {"Fn::GetAtt": [synth.logical_id(synth.stack.security.bucket_key), "Arn"]}
    assert synth.logical_id(synth.stack.security.backup_key) not in json.dumps(sse_key)


def test_only_cloudwatch_may_use_the_alerts_key_from_outside_iam(synth: Synthesized) -> None:
    key = synth.resources[synth.logical_id(synth.stack.security.alerts_key)]
    services = [
        statement
        for statement in key["Properties"]["KeyPolicy"]["Statement"]
        if "Service" in statement["Principal"]
    ]
    assert [statement["Principal"]["Service"] for statement in services] == ["cloudwatch.amazonaws.com"]
    assert services[0]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]


def test_only_the_functions_that_connect_to_sources_read_the_secrets(synth: Synthesized) -> None:
    # Restore: Validate checks every target, Stage/Swap/Verify work on them, the failure path undoes;
    # Report runs a drill's SQL checks and cleans the drill targets.
    # Prepare reads the database's size to choose where the dump runs (Lambda or Fargate).
    readers = {
        names.BACKUP_PREPARE,
        names.BACKUP_DUMP,
        names.RESTORE_VALIDATE,
        names.RESTORE_COMPONENT,
        names.RESTORE_SWAP,
        names.RESTORE_VERIFY,
        names.RESTORE_REPORT,
        names.RESTORE_FAILURE,
    }
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
