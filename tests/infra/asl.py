"""Turn a synthesized state machine definition (an Fn::Join of strings and tokens) into ASL JSON."""

from __future__ import annotations

import json
from typing import Any


def _token(part: Any) -> str:
    """A stand-in for a token, naming what it points to (``<LogicalId.Arn>``, ``<AWS::Region>``)."""
    if isinstance(part, str):
        return part
    if "Fn::GetAtt" in part:
        logical_id, attribute = part["Fn::GetAtt"]
        return f"<{logical_id}.{attribute}>"
    if "Ref" in part:
        return f"<{part['Ref']}>"
    raise AssertionError(f"unexpected token in a definition: {part!r}")


def definition(state_machine: dict[str, Any]) -> dict[str, Any]:
    """The ASL of an AWS::StepFunctions::StateMachine resource, tokens replaced by stand-ins."""
    body = state_machine["Properties"]["DefinitionString"]
    if isinstance(body, dict):
        separator, parts = body["Fn::Join"]
        body = separator.join(_token(part) for part in parts)
    return dict(json.loads(body))


def path_from(states: dict[str, Any], start: str) -> list[str]:
    """State names from ``start`` following ``Next`` until a state without one."""
    names = [start]
    while "Next" in states[names[-1]]:
        names.append(states[names[-1]]["Next"])
        assert len(names) < 100, "Next cycle"
    return names
