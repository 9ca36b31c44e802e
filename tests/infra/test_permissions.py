"""Per function, exactly which S3 and KMS actions it has, on which part of the bucket and which key.

The whole set is compared, so a grant added anywhere fails here until this table says why. Nothing
deletes outside staging and the lock, only Promote sets retention, and only the functions that wrap or
unwrap a data key may use the wrapping key, with a backup id as the encryption context.
"""

from __future__ import annotations

import json
from typing import Any

from infra import constants as names
from tests.infra.conftest import Synthesized

BUCKET, OBJECTS, STAGING, TIERS, LOCKS, POINTER = "bucket", "objects", "staging", "tiers", "locks", "pointer"
#: This deployment's objects ({hostname}/*), and the bucket listed only under that prefix.
OWN_OBJECTS, OWN_LISTING = "own objects", "bucket, own prefix only"
WRAPPING_KEY, BUCKET_KEY = "wrapping key", "bucket key"

_READ = {BUCKET: {"s3:ListBucket"}, OBJECTS: {"s3:GetObject"}}
_SSE_READ = {BUCKET_KEY: {"kms:Decrypt"}}
_SSE_WRITE = {BUCKET_KEY: {"kms:Decrypt", "kms:GenerateDataKey"}}
_LOCK = {LOCKS: {"s3:PutObject", "s3:DeleteObject"}}
_STAGE = {STAGING: {"s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"}}
_UNWRAP = {WRAPPING_KEY: {"kms:Decrypt"}}

EXPECTED: dict[str, dict[str, set[str]]] = {
    names.BACKUP_START: {},
    names.BACKUP_PREPARE: {**_READ, **_LOCK, **_SSE_WRITE, WRAPPING_KEY: {"kms:GenerateDataKey"}},
    names.BACKUP_DUMP: {**_READ, **_STAGE, **_SSE_WRITE, **_UNWRAP},
    names.BACKUP_SEAL: {**_READ, **_STAGE, **_SSE_WRITE, **_UNWRAP},
    names.BACKUP_VERIFY: {**_READ, **_SSE_READ, **_UNWRAP},
    names.BACKUP_PROMOTE: {
        BUCKET: {"s3:ListBucket", "s3:ListBucketMultipartUploads"},
        OBJECTS: {"s3:GetObject"},
        STAGING: {"s3:GetObjectTagging", "s3:DeleteObject", "s3:AbortMultipartUpload"},
        TIERS: {"s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectRetention"},
        LOCKS: {"s3:PutObject"},  # renews the lock: a lost lock refuses the promote
        **_SSE_WRITE,
    },
    names.BACKUP_PUBLISH: {**_READ, POINTER: {"s3:PutObject"}, **_SSE_WRITE},
    names.BACKUP_RELEASE: {**_READ, **_LOCK, **_SSE_WRITE},
    names.BACKUP_FAILURE: {
        BUCKET: {"s3:ListBucket", "s3:ListBucketMultipartUploads"},
        OBJECTS: {"s3:GetObject"},
        STAGING: {"s3:DeleteObject", "s3:AbortMultipartUpload"},
        **_LOCK,
        **_SSE_WRITE,
    },
    names.RESTORE_RESOLVE: {**_READ, **_SSE_READ, **_UNWRAP},
    # Validate takes the lock a restore holds (a backup or another restore waits); Report and the
    # failure path release it.
    names.RESTORE_VALIDATE: {**_READ, **_LOCK, **_SSE_WRITE, **_UNWRAP},
    names.RESTORE_COMPONENT: {**_READ, **_SSE_READ, **_UNWRAP},
    names.RESTORE_SWAP: {},
    names.RESTORE_VERIFY: {},
    # Both authenticate the manifest of a drill before cleaning its targets (which Redis dbs to flush).
    names.RESTORE_REPORT: {**_READ, **_LOCK, **_SSE_WRITE, **_UNWRAP},
    names.RESTORE_FAILURE: {**_READ, **_LOCK, **_SSE_WRITE, **_UNWRAP},
    # The admin API reads its own deployment's sets (status, details, download URLs), nothing else.
    names.API: {OWN_LISTING: {"s3:ListBucket"}, OWN_OBJECTS: {"s3:GetObject"}, **_SSE_READ},
    names.API_AUTHORIZER: {},
    # The hourly staging watch lists its own prefix (and could read what it lists, no more).
    names.STORAGE_WATCH: {OWN_LISTING: {"s3:ListBucket"}, OWN_OBJECTS: {"s3:GetObject"}, **_SSE_READ},
}


def _statements(synth: Synthesized, module: str) -> list[dict[str, Any]]:
    role = synth.stack.functions[module].role
    assert role is not None
    role_ref = {"Ref": synth.logical_id(role)}
    return [
        statement
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if role_ref in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _where(synth: Synthesized, resource: Any, condition: Any = None) -> str | None:
    """The part of the bucket, or the key, a resource names; None for anything else."""
    bucket_arn = {"Fn::GetAtt": [synth.logical_id(synth.stack.storage.bucket), "Arn"]}
    keys = {
        WRAPPING_KEY: synth.stack.security.backup_key,
        BUCKET_KEY: synth.stack.security.bucket_key,
    }
    for name, key in keys.items():
        if resource == {"Fn::GetAtt": [synth.logical_id(key), "Arn"]}:
            return name
    if resource == bucket_arn:
        if condition == {"StringLike": {"s3:prefix": ["questboard/*"]}}:
            return OWN_LISTING
        return BUCKET if condition is None else f"the bucket under {json.dumps(condition)}"
    joined = resource.get("Fn::Join", ["", []])[1] if isinstance(resource, dict) else []
    if len(joined) == 2 and joined[0] == bucket_arn:
        suffix = joined[1]
        prefixes = {
            "/*": OBJECTS,
            "/questboard/temp/*": STAGING,
            "/questboard/locks/*": LOCKS,
            "/questboard/latest.json": POINTER,
            "/questboard/*": OWN_OBJECTS,
            **{f"/questboard/{tier}/*": TIERS for tier in ("daily", "weekly", "monthly", "incremental")},
        }
        return prefixes.get(suffix, f"unexpected part of the bucket {suffix}")
    return None


def _granted(synth: Synthesized, module: str) -> dict[str, set[str]]:
    """Actions by place, for every statement naming the backup bucket or one of the two backup keys;
    any S3 action elsewhere shows up as a place of its own."""
    found: dict[str, set[str]] = {}
    for statement in _statements(synth, module):
        assert statement["Effect"] == "Allow"
        actions = set(_listed(statement["Action"]))
        for resource in _listed(statement["Resource"]):
            place = _where(synth, resource, statement.get("Condition"))
            if place is None and any(action.startswith("s3:") for action in actions):
                place = f"another resource {json.dumps(resource)}"
            if place is not None:
                found.setdefault(place, set()).update(actions)
    return found


def test_the_table_covers_every_function(synth: Synthesized) -> None:
    assert set(EXPECTED) == set(synth.stack.functions.functions)


def test_each_function_has_exactly_its_s3_and_kms_actions(synth: Synthesized) -> None:
    for module, expected in EXPECTED.items():
        assert _granted(synth, module) == expected, module


def test_only_staging_cleanup_and_the_lock_may_delete_and_nothing_erases_a_version(
    synth: Synthesized,
) -> None:
    for module in synth.stack.functions.functions:
        for place, actions in _granted(synth, module).items():
            assert not {"s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"} & actions, module
            assert not any(action.endswith("*") for action in actions), (module, actions)
            if "s3:DeleteObject" in actions:
                assert place in (STAGING, LOCKS), (module, place)


def test_only_promote_sets_retention_and_writes_into_a_tier(synth: Synthesized) -> None:
    writers = {m for m in synth.stack.functions.functions if TIERS in _granted(synth, m)}
    assert writers == {names.BACKUP_PROMOTE}
    retention = {
        m
        for m in synth.stack.functions.functions
        if any("s3:PutObjectRetention" in actions for actions in _granted(synth, m).values())
    }
    assert retention == {names.BACKUP_PROMOTE}


def test_the_wrapping_key_is_usable_only_with_a_backup_id_as_encryption_context(
    synth: Synthesized,
) -> None:
    key_arn = {"Fn::GetAtt": [synth.logical_id(synth.stack.security.backup_key), "Arn"]}
    users = set()
    for module in synth.stack.functions.functions:
        for statement in _statements(synth, module):
            if key_arn in _listed(statement["Resource"]):
                users.add(module)
                assert statement["Condition"] == {
                    "StringLike": {"kms:EncryptionContext:backup_id": "questboard_*_????????_??????"},
                    "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["backup_id"]},
                }, module
    assert users == {m for m, expected in EXPECTED.items() if WRAPPING_KEY in expected}


def test_the_bucket_key_is_usable_only_through_s3(synth: Synthesized) -> None:
    key_arn = {"Fn::GetAtt": [synth.logical_id(synth.stack.security.bucket_key), "Arn"]}
    for module in synth.stack.functions.functions:
        for statement in _statements(synth, module):
            if key_arn in _listed(statement["Resource"]):
                via = statement["Condition"]["StringEquals"]["kms:ViaService"]
                assert "s3." in json.dumps(via) and ".amazonaws.com" in json.dumps(via), module


def test_a_bucket_reader_without_the_wrapping_key_exists_and_cannot_unwrap(synth: Synthesized) -> None:
    readers = {m for m, expected in EXPECTED.items() if OBJECTS in expected}
    unwrappers = {m for m, expected in EXPECTED.items() if WRAPPING_KEY in expected}
    assert readers - unwrappers >= {names.BACKUP_PROMOTE, names.BACKUP_FAILURE}
    for module in readers - unwrappers:
        assert WRAPPING_KEY not in _granted(synth, module), module
