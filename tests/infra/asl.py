"""Turn a synthesized state machine definition (CloudFormation intrinsics) into ASL JSON: with stand-ins
for the tokens (template tests) or with what each logical id resolves to in moto (e2e tests)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "QuestBoardBackup",
}


def resolve(value: Any, refs: Mapping[str, str], attrs: Mapping[tuple[str, str], str]) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list):
        return [resolve(item, refs, attrs) for item in value]
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            name = value["Ref"]
            if name in PSEUDO:
                return PSEUDO[name]
            return refs[name]
        if set(value) == {"Fn::GetAtt"}:
            logical_id, attribute = value["Fn::GetAtt"]
            return attrs[(logical_id, attribute)]
        if set(value) == {"Fn::Join"}:
            delimiter, parts = value["Fn::Join"]
            return delimiter.join(str(resolve(part, refs, attrs)) for part in parts)
        if set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"]
            for name, replacement in {**PSEUDO, **refs}.items():
                text = text.replace("${" + name + "}", replacement)
            return text
        return {key: resolve(item, refs, attrs) for key, item in value.items()}
    raise TypeError(f"cannot resolve {value!r}")


def concrete_definition(
    template: Mapping[str, Any],
    logical_id: str,
    refs: Mapping[str, str],
    attrs: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    properties = template["Resources"][logical_id]["Properties"]
    raw = properties.get("DefinitionString")
    text = (
        resolve(raw, refs, attrs)
        if raw is not None
        else json.dumps(resolve(properties["Definition"], refs, attrs))
    )
    substitutions = properties.get("DefinitionSubstitutions") or {}
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", str(resolve(value, refs, attrs)))
    return json.loads(text)


class _StandIns(dict[Any, str]):
    """Names what a token points to: ``<LogicalId.Arn>`` for Fn::GetAtt, ``<LogicalId>`` for Ref."""

    def __missing__(self, key: Any) -> str:
        return f"<{key[0]}.{key[1]}>" if isinstance(key, tuple) else f"<{key}>"


def definition(state_machine: dict[str, Any]) -> dict[str, Any]:
    """The ASL of an AWS::StepFunctions::StateMachine resource, tokens replaced by stand-ins."""
    body = state_machine["Properties"]["DefinitionString"]
    return dict(json.loads(resolve(body, _StandIns(), _StandIns())))


def path_from(states: dict[str, Any], start: str) -> list[str]:
    """State names from ``start`` following ``Next`` until a state without one."""
    names = [start]
    while "Next" in states[names[-1]]:
        names.append(states[names[-1]]["Next"])
        assert len(names) < 100, "Next cycle"
    return names
