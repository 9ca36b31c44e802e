"""cdk-nag (AwsSolutions) has no unsuppressed finding, every suppression says why, cfn-lint passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aws_cdk.assertions import Annotations, Match

from tests.infra.conftest import Synthesized

#: cfn-lint warnings accepted on CDK output: W3005 (DependsOn also implied by a GetAtt), which CDK
#: emits for every function's role policy.
ACCEPTED_CFN_LINT_WARNINGS = {"W3005"}


def _findings(synth: Synthesized) -> list[str]:
    annotations = Annotations.from_stack(synth.stack)
    messages = annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    messages += annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    return [f"{message.id}: {str(message.entry.data)[:160]}" for message in messages]


def test_cdk_nag_finds_nothing_unsuppressed(synth: Synthesized) -> None:
    assert _findings(synth) == []


def test_cdk_nag_finds_nothing_unsuppressed_with_everything_switched(disabled_synth: Synthesized) -> None:
    assert _findings(disabled_synth) == []


def test_every_suppression_gives_a_reason(synth: Synthesized) -> None:
    suppressions = [
        rule
        for resource in synth.resources.values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    assert suppressions, "the reviewed findings are suppressed where they arise"
    for rule in suppressions:
        assert len(rule["reason"]) >= 40, rule


def _cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", str(template)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cfn_lint_reports_no_errors_and_only_known_warnings(synth: Synthesized) -> None:
    result = _cfn_lint(synth.template_path)
    assert result.returncode in (0, 4), result.stdout + result.stderr  # 2 = errors, 4 = warnings only
    rules = {line.split(":")[-2] for line in result.stdout.splitlines() if line.strip()}
    assert rules <= ACCEPTED_CFN_LINT_WARNINGS, result.stdout
