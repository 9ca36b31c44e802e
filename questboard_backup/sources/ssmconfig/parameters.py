"""SSM Parameter Store for the ssmconfig component: reading a path, and swapping values in under it.

A swap into the path ``/app/prod`` for the restore ``ts`` first writes the mark ``/app/prod.restore-{ts}``
(a String parameter beside the path, never under it: ``{"state": "swapping"}``, then ``"swapped"`` once
every value is in). Before a parameter is overwritten it gets the tag ``qb-restore-{ts}`` =
``qb-previous-{version}``, the version that was current; one the restore creates is created with the tag
``qb-restore-{ts}`` = ``qb-created``. No value is kept anywhere else: putting back reads the tagged
version from the parameter's own history (``get_parameter_history``, ``name:version``) and writes it as a
new version; a created parameter is deleted. Settling removes the tags, then the mark.

Parameters under the path that the backup does not hold are left as they are: deleting a parameter
deletes its history, so no undo could bring it back. Parameter policies and tags are not restored.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from questboard_backup.address import TIMESTAMP_PATTERN
from questboard_backup.errors import BackupError, SourceError
from questboard_backup.sources.ssmconfig.archive import Parameter
from questboard_backup.sources.ssmconfig.calls import AWS_ERRORS, error_code, failure

logger = logging.getLogger(__name__)

SWAPPING, SWAPPED = "swapping", "swapped"
CREATED, PREVIOUS = "qb-created", "qb-previous-"
_MISSING = {"ParameterNotFound", "ParameterVersionNotFound", "ParameterVersionLabelNotFound"}


def mark_name(path: str, timestamp: str) -> str:
    return f"{path}.restore-{timestamp}"


def tag_key(timestamp: str) -> str:
    return f"qb-restore-{timestamp}"


class ParameterStore:
    def __init__(self, label: str, client: Any) -> None:
        self.label, self.client = label, client

    # Reading

    def parameters(self, path: str) -> Iterator[Parameter]:
        """Every parameter under ``path`` (recursively), decrypted, with the metadata a restore needs."""
        described = {item["Name"]: item for item in self._described(path)}
        pages = self.client.get_paginator("get_parameters_by_path").paginate(
            Path=path, Recursive=True, WithDecryption=True
        )
        try:
            for page in pages:
                for item in page.get("Parameters", []):
                    name = str(item["Name"])
                    if not name.startswith(path + "/"):
                        continue
                    meta = described.get(name, {})
                    yield Parameter(
                        name,
                        str(item["Type"]),
                        str(item["Value"]),
                        key_id=str(meta.get("KeyId", "")) if item["Type"] == "SecureString" else "",
                        description=str(meta.get("Description", "")),
                        allowed_pattern=str(meta.get("AllowedPattern", "")),
                        data_type=str(item.get("DataType") or meta.get("DataType") or ""),
                        tier=str(meta.get("Tier", "")),
                    )
        except AWS_ERRORS as error:
            raise failure(self.label, "read the parameters under", path, error) from None

    def _described(self, path: str, *more: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """DescribeParameters under ``path`` (metadata only, never values), with further filters."""
        filters = [{"Key": "Path", "Option": "Recursive", "Values": [path]}, *more]
        pages = self.client.get_paginator("describe_parameters").paginate(ParameterFilters=filters)
        try:
            for page in pages:
                yield from page.get("Parameters", [])
        except AWS_ERRORS as error:
            raise failure(self.label, "list the parameters under", path, error) from None

    def check(self, path: str) -> None:
        try:
            self.client.describe_parameters(
                ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [path]}], MaxResults=1
            )
        except AWS_ERRORS as error:
            raise failure(self.label, "list the parameters under", path, error) from None

    def _current(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.get_parameter(Name=name, WithDecryption=True)["Parameter"])
        except AWS_ERRORS as error:
            if error_code(error) in _MISSING:
                return None
            raise failure(self.label, "read", name, error) from None

    # Swapping

    def mark(self, path: str, timestamp: str) -> dict[str, Any] | None:
        name = mark_name(path, timestamp)
        found = self._current(name)
        if found is None:
            return None
        try:
            mark = json.loads(found["Value"])
        except ValueError:
            mark = None
        if not isinstance(mark, dict) or mark.get("target") != path:
            raise SourceError(f"{self.label}: {name} is not a restore mark of this engine")
        return mark

    def _write_mark(self, path: str, timestamp: str, state: str, overwrite: bool) -> None:
        name = mark_name(path, timestamp)
        value = json.dumps({"target": path, "state": state})
        try:
            self.client.put_parameter(Name=name, Value=value, Type="String", Overwrite=overwrite)
        except AWS_ERRORS as error:
            if error_code(error) == "ParameterAlreadyExists":
                raise SourceError(f"{self.label}: {path} is already swapped in and not settled") from None
            raise failure(self.label, "write the restore mark", name, error) from None

    def swap_in(
        self, path: str, timestamp: str, staged: list[Parameter]
    ) -> tuple[dict[str, int | None], int]:
        """Write every staged parameter (full names) under ``path``; returns the previous version of each one
        written (None: created) and how many already held the staged value (left alone)."""
        self._write_mark(path, timestamp, SWAPPING, overwrite=False)
        previous: dict[str, int | None] = {}
        unchanged = 0
        for parameter in staged:
            current = self._current(parameter.name)
            if current is None:
                self._put(parameter, tags=[{"Key": tag_key(timestamp), "Value": CREATED}])
                previous[parameter.name] = None
            elif current.get("Type") == parameter.type and current.get("Value") == parameter.value:
                unchanged += 1
            else:
                version = int(current["Version"])
                self._tag(parameter.name, timestamp, f"{PREVIOUS}{version}")
                self._put(parameter)
                previous[parameter.name] = version
        self._write_mark(path, timestamp, SWAPPED, overwrite=True)
        logger.info(
            "parameters swapped in component=%s path=%s written=%d unchanged=%d",
            self.label,
            path,
            len(previous),
            unchanged,
        )
        return previous, unchanged

    def _put(self, parameter: Parameter, tags: list[dict[str, str]] | None = None) -> None:
        args: dict[str, Any] = dict(parameter.put_args())
        if tags is None:
            args["Overwrite"] = True
        else:
            args["Tags"] = tags  # only a creation may carry tags
        try:
            self.client.put_parameter(**args)
        except AWS_ERRORS as error:
            raise failure(self.label, "write", parameter.name, error) from None

    def _tag(self, name: str, timestamp: str, value: str) -> None:
        try:
            self.client.add_tags_to_resource(
                ResourceType="Parameter", ResourceId=name, Tags=[{"Key": tag_key(timestamp), "Value": value}]
            )
        except AWS_ERRORS as error:
            raise failure(self.label, "tag", name, error) from None

    def _touched(self, path: str, timestamp: str) -> Iterator[tuple[str, int, str]]:
        """(name, current version, tag value) of every parameter under ``path`` this restore tagged."""
        tagged = {"Key": f"tag:{tag_key(timestamp)}", "Option": "BeginsWith", "Values": ["qb-"]}
        for item in list(self._described(path, tagged)):
            name = str(item["Name"])
            try:
                tags = self.client.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)[
                    "TagList"
                ]
            except AWS_ERRORS as error:
                raise failure(self.label, "read the tags of", name, error) from None
            value = next((str(tag["Value"]) for tag in tags if tag["Key"] == tag_key(timestamp)), None)
            if value is not None:
                yield name, int(item.get("Version", 0)), value

    def _untag(self, name: str, timestamp: str) -> None:
        try:
            self.client.remove_tags_from_resource(
                ResourceType="Parameter", ResourceId=name, TagKeys=[tag_key(timestamp)]
            )
        except AWS_ERRORS as error:
            raise failure(self.label, "untag", name, error) from None

    def _delete(self, name: str) -> None:
        try:
            self.client.delete_parameter(Name=name)
        except AWS_ERRORS as error:
            if error_code(error) not in _MISSING:
                raise failure(self.label, "delete", name, error) from None

    def _version(self, name: str, version: int) -> Parameter:
        """Version ``version`` of ``name`` as it was, from the parameter's history."""
        pages = self.client.get_paginator("get_parameter_history").paginate(Name=name, WithDecryption=False)
        try:
            found = next(
                (
                    item
                    for page in pages
                    for item in page.get("Parameters", [])
                    if item.get("Version") == version
                ),
                None,
            )
            if found is None:
                raise SourceError(
                    f"{self.label}: version {version} of {name} is no longer in its history; put it back by hand"
                )
            value = self.client.get_parameter(Name=f"{name}:{version}", WithDecryption=True)["Parameter"][
                "Value"
            ]
        except AWS_ERRORS as error:
            raise failure(self.label, f"read version {version} of", name, error) from None
        return Parameter(
            name,
            str(found["Type"]),
            str(value),
            key_id=str(found.get("KeyId", "")),
            description=str(found.get("Description", "")),
            allowed_pattern=str(found.get("AllowedPattern", "")),
            data_type=str(found.get("DataType", "")),
            tier=str(found.get("Tier", "")),
        )

    def put_back(self, path: str, timestamp: str) -> list[str]:
        """Undo this restore's unsettled swap under ``path``: each overwritten parameter gets its tagged
        version back (as a new version), each created one is deleted, then the mark goes."""
        if self.mark(path, timestamp) is None:
            return []
        restored = removed = 0
        for name, current, value in self._touched(path, timestamp):
            if value == CREATED:
                self._delete(name)
                removed += 1
                continue
            if value.startswith(PREVIOUS) and value[len(PREVIOUS) :].isdigit():
                version = int(value[len(PREVIOUS) :])
                if current != version:
                    self._put(self._version(name, version))
                    restored += 1
            self._untag(name, timestamp)
        self._delete(mark_name(path, timestamp))
        return [
            f"swap of the parameters under {path} undone: {restored} put back, {removed} created ones deleted"
        ]

    def settle(self, path: str, timestamp: str) -> bool:
        """Make this restore's swap under ``path`` final: tags, then the mark, removed. False: no mark."""
        if self.mark(path, timestamp) is None:
            return False
        for name, _current, _value in self._touched(path, timestamp):
            self._untag(name, timestamp)
        self._delete(mark_name(path, timestamp))
        return True

    def clear_leftovers(self, path: str, timestamp: str) -> list[str]:
        """Restores of other timestamps that left a mark beside ``path``: a swap that went all the way in is
        settled (the parameters may have changed since), any other is put back."""
        named = {"Key": "Name", "Option": "BeginsWith", "Values": [f"{path}.restore-"]}
        pattern = re.escape(f"{path}.restore-") + f"({TIMESTAMP_PATTERN})"
        try:
            pages = self.client.get_paginator("describe_parameters").paginate(ParameterFilters=[named])
            marks = [str(item["Name"]) for page in pages for item in page.get("Parameters", [])]
        except AWS_ERRORS as error:
            raise failure(self.label, "look for restore marks beside", path, error) from None
        lines: list[str] = []
        for name in sorted(marks):
            found = re.fullmatch(pattern, name, re.ASCII)
            if found is None or found.group(1) == timestamp:
                continue
            earlier = found.group(1)
            mark = self.mark(path, earlier)
            if mark is not None and mark.get("state") == SWAPPED:
                self.settle(path, earlier)
                lines.append(
                    f"settled the swap of an earlier restore ({earlier}) into the parameters under {path}"
                )
            else:
                lines.extend(self.put_back(path, earlier))
        return lines


def settle_quietly(store: ParameterStore, path: str, timestamp: str) -> None:
    try:
        store.settle(path, timestamp)
    except BackupError as error:
        logger.error("swap not settled component=%s path=%s error=%s", store.label, path, error)
