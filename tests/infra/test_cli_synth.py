"""`npx cdk synth` (the pinned CLI from package-lock.json) works offline with no Docker.

`make test` runs `npm ci` and `make layers` first; a missing CLI or layer fails this test.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from infra.functions import REPO_ROOT, LayerPaths

CDK_BIN = REPO_ROOT / "node_modules" / ".bin" / "cdk"


def test_cli_synth_writes_the_stack_template(tmp_path: Path) -> None:
    assert CDK_BIN.exists(), "the CDK CLI is not installed: run `npm ci`"
    assert LayerPaths().python_deps.is_dir() and LayerPaths().pg_tools.is_dir(), "run `make layers`"
    environment = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
    }
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--quiet", "--output", str(tmp_path)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    template = json.loads((tmp_path / "QuestBoardBackup.template.json").read_text(encoding="utf-8"))
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert {"AWS::S3::Bucket", "AWS::StepFunctions::StateMachine", "AWS::Scheduler::Schedule"} <= types
