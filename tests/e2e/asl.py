"""Turn a synthesized state machine definition (CloudFormation intrinsics) into concrete ASL.

The template holds `DefinitionString` as `Fn::Join` over strings and `Ref` / `Fn::GetAtt` tokens; the
test supplies what each logical id resolves to in moto.
"""

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


def definition(
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
