"""Uploads and configuration on EFS: the access point mounted read-only (ClientMount alone) into the
backup's dump function and read-write into the restore functions, nowhere else; the paths reach the
functions; a stack without a file system mounts nothing and backs up no files."""

from __future__ import annotations

from typing import Any

import pytest

from infra import constants as names
from infra.config import ContextError, StackConfig
from tests.infra.conftest import Synthesized

ACCESS_POINT = "fsap-0123456789abcdef0"
READERS = {names.BACKUP_DUMP}
WRITERS = {
    names.RESTORE_VALIDATE,
    names.RESTORE_COMPONENT,
    names.RESTORE_SWAP,
    names.RESTORE_REPORT,
    names.RESTORE_FAILURE,
}


def _function(synth: Synthesized, module: str) -> dict[str, Any]:
    return dict(synth.resources[synth.logical_id(synth.stack.functions[module])]["Properties"])


def _efs_statements(synth: Synthesized, module: str) -> list[dict[str, Any]]:
    return [s for s in _role_statements(synth, module) if "elasticfilesystem" in str(s["Action"])]


def _role_statements(synth: Synthesized, module: str) -> list[dict[str, Any]]:
    role = synth.stack.functions[module].role
    assert role is not None
    role_id = synth.logical_id(role)
    return [
        statement
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_backups_mount_the_access_point_read_only_and_restores_read_write(
    disabled_synth: Synthesized,
) -> None:
    for module in synth_modules(disabled_synth):
        function = _function(disabled_synth, module)
        statements = _efs_statements(disabled_synth, module)
        if module not in READERS | WRITERS:
            assert "FileSystemConfigs" not in function and statements == [], module
            continue
        (mount,) = function["FileSystemConfigs"]
        assert mount["LocalMountPath"] == "/mnt/questboard", module
        assert ACCESS_POINT in str(mount["Arn"]), module
        (statement,) = statements
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        expected = ["elasticfilesystem:ClientMount"]
        if module in WRITERS:
            expected.append("elasticfilesystem:ClientWrite")
        assert sorted(actions) == expected, module
        assert ACCESS_POINT in str(statement["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"])
        assert "fs-0123456789abcdef0" in str(statement["Resource"])


def test_the_functions_back_up_the_paths_beneath_the_mount(disabled_synth: Synthesized) -> None:
    variables = _function(disabled_synth, names.BACKUP_DUMP)["Environment"]["Variables"]
    assert variables["BACKUP_FILES_PATHS"] == "/mnt/questboard/uploads"
    assert variables["BACKUP_CONFIG_PATHS"] == "/mnt/questboard/config/app.env"


def test_without_a_file_system_nothing_is_mounted_and_no_files_are_backed_up(synth: Synthesized) -> None:
    for module in synth_modules(synth):
        assert "FileSystemConfigs" not in _function(synth, module), module
        assert _efs_statements(synth, module) == [], module
    variables = _function(synth, names.BACKUP_DUMP)["Environment"]["Variables"]
    assert variables["BACKUP_FILES_PATHS"] == "" and variables["BACKUP_CONFIG_PATHS"] == ""


def synth_modules(synth: Synthesized) -> list[str]:
    return list(synth.stack.functions.functions)


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({"uploadsFileSystemId": "fs-0123456789abcdef0"}, "go together"),
        ({"filesPaths": ["/mnt/questboard/uploads"]}, "needs uploadsFileSystemId"),
        (
            {
                "uploadsFileSystemId": "fs-0123456789abcdef0",
                "uploadsAccessPointId": "fsap-0123456789abcdef0",
                "filesPaths": ["/srv/uploads"],
            },
            "beneath filesMountPath",
        ),
        ({"filesMountPath": "/data"}, "filesMountPath"),
    ],
)
def test_bad_file_system_settings_are_refused_by_name(context: dict[str, Any], problem: str) -> None:
    from tests.infra.test_config import _context

    with pytest.raises(ContextError, match=problem):
        StackConfig.from_context(_context(**context))


def _statements_on(synth: Synthesized, module: str, needle: str) -> list[dict[str, Any]]:
    return [s for s in _role_statements(synth, module) if needle in str(s["Resource"])]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        action = statement["Action"]
        found |= set(action) if isinstance(action, list) else {action}
    return found


def test_uploads_in_s3_are_read_by_the_dump_and_written_only_by_the_restore_steps(
    disabled_synth: Synthesized,
) -> None:
    restore_writers = WRITERS - {names.RESTORE_REPORT}
    for module in synth_modules(disabled_synth):
        statements = _statements_on(disabled_synth, module, "questboard-uploads")
        if module in READERS:
            assert _actions(statements) == {"s3:ListBucket", "s3:GetObject"}, module
            (listing,) = [s for s in statements if s["Action"] == "s3:ListBucket"]
            assert listing["Condition"] == {"StringLike": {"s3:prefix": ["prod/uploads/*", "prod/uploads"]}}
            (reading,) = [s for s in statements if s["Action"] == "s3:GetObject"]
            assert "questboard-uploads/prod/uploads/*" in str(reading["Resource"])
        elif module in restore_writers:
            assert _actions(statements) == {
                "s3:ListBucket",
                "s3:ListBucketMultipartUploads",
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
            }, module
            objects = [s for s in statements if "s3:PutObject" in s["Action"]]
            assert "questboard-uploads/prod/uploads*" in str(objects[0]["Resource"])
        else:
            assert statements == [], module


def test_only_the_dump_reads_the_configuration_and_nothing_writes_it(disabled_synth: Synthesized) -> None:
    for module in synth_modules(disabled_synth):
        ssm = _actions(_statements_on(disabled_synth, module, "parameter/questboard/prod"))
        secrets = _actions(_statements_on(disabled_synth, module, "secret:questboard/prod/app-"))
        if module in READERS:
            assert ssm == {"ssm:GetParametersByPath", "ssm:GetParameter"}
            assert secrets == {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}
        else:
            assert ssm == set() and secrets == set(), module
    variables = _function(disabled_synth, names.BACKUP_DUMP)["Environment"]["Variables"]
    assert variables["BACKUP_UPLOADS_S3_URI"] == "s3://questboard-uploads/prod/uploads"
    assert variables["BACKUP_CONFIG_SSM_PATHS"] == "/questboard/prod"
    assert variables["BACKUP_CONFIG_SECRET_IDS"] == "questboard/prod/app"
