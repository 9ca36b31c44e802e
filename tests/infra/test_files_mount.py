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
    role = synth.stack.functions[module].role
    assert role is not None
    role_id = synth.logical_id(role)
    return [
        statement
        for policy in synth.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "elasticfilesystem" in str(statement["Action"])
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
