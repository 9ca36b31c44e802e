"""Build the CDK app the same way for `cdk synth`, `python app.py` and the infrastructure tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Aspects
from cdk_nag import AwsSolutionsChecks

from infra.config import StackConfig, context_of
from infra.constants import STACK_NAME
from infra.functions import REPO_ROOT, LayerPaths
from infra.stack import QuestBoardBackupStack

CDK_JSON = REPO_ROOT / "cdk.json"


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The "context" of cdk.json: settings and feature flags."""
    return dict(json.loads(path.read_text(encoding="utf-8")).get("context", {}))


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    layer_paths: LayerPaths | None = None,
    outdir: str | None = None,
) -> tuple[App, QuestBoardBackupStack]:
    """cdk.json's context, overridden by ``context``, then by the CLI's (`-c key=value`)."""
    app = App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    config = StackConfig.from_context(context_of(app.node))
    stack = QuestBoardBackupStack(
        app,
        STACK_NAME,
        config=config,
        layer_paths=layer_paths,
        description="Quest Board Backup: scheduled, encrypted backups of PostgreSQL, Redis, files and config",
    )
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, stack
