"""A source registered in a test is backed up, verified and restored by the CLI like the shipped ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from questboard_backup.cli import main
from tests.fake_source import registered_fake
from tests.integration.conftest import Deployment


def test_a_registered_source_goes_through_backup_verify_and_restore_at_the_cli(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = tmp_path / "fake-source.bin", tmp_path / "fake-target.bin"
    source.write_bytes(b"fake source bytes \x00\x01" * 1000)
    with registered_fake(source, target):
        assert main(["full", "--json"]) == 0
        backup = json.loads(capsys.readouterr().out)
        assert "fake" in backup["components"]
        assert backup["components"]["fake"]["objects"] == ["fake.tar.zst.enc"]

        assert main(["verify", backup["backup_id"], "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["checked"]["fake"] == len(source.read_bytes())

        assert main(["restore", backup["backup_id"], "--only", "fake", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    assert report["components"]["fake"]["bytes"] == len(source.read_bytes())
    assert target.read_bytes() == source.read_bytes()


def test_without_its_registry_entry_the_cli_refuses_to_restore_the_component_by_name(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = tmp_path / "fake-source.bin", tmp_path / "fake-target.bin"
    source.write_bytes(b"x" * 10)
    with registered_fake(source, target):
        assert main(["full", "--json"]) == 0
        backup_id = json.loads(capsys.readouterr().out)["backup_id"]
    assert main(["restore", backup_id, "--only", "fake"]) == 2
    assert "no restore target configured for fake" in capsys.readouterr().err
    assert not target.exists()
