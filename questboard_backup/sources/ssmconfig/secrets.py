"""Secrets Manager for the ssmconfig component: reading a secret's current value, swapping one in.

Each secret is swapped on its own, in one PutSecretValue. Before it the secret gets the tag
``qb-restore-{ts}`` = ``qb-previous-{VersionId}`` (the version that was AWSCURRENT, which PutSecretValue
then labels AWSPREVIOUS); a secret the restore creates is created with ``qb-restore-{ts}`` =
``qb-created``. No value is kept anywhere else: putting back reads the tagged version
(``get_secret_value(VersionId=...)``) and puts it as the current value again (a new version holding the
old value); a created secret is deleted without a recovery window. Settling removes the tag.

A tagged secret whose current version is no longer the tagged one went in: a later restore settles it.
Not restored: the secret's description, resource policy, rotation and replication settings.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from questboard_backup.address import TIMESTAMP_PATTERN
from questboard_backup.errors import BackupError, SourceUnreachableError
from questboard_backup.sources.ssmconfig.archive import Secret
from questboard_backup.sources.ssmconfig.calls import AWS_ERRORS, error_code, failure

logger = logging.getLogger(__name__)

CREATED, PREVIOUS = "qb-created", "qb-previous-"
#: The previous "version" of a secret that existed without a value.
NONE = "none"
_TAG = re.compile(f"qb-restore-({TIMESTAMP_PATTERN})", re.ASCII)


def tag_key(timestamp: str) -> str:
    return f"qb-restore-{timestamp}"


class SecretStore:
    def __init__(self, label: str, client: Any) -> None:
        self.label, self.client = label, client

    def read(self, secret_id: str) -> Secret:
        """The secret's current value (and its KMS key, to create it again with the same one)."""
        try:
            found = self.client.get_secret_value(SecretId=secret_id)
            kms = str(self.client.describe_secret(SecretId=secret_id).get("KmsKeyId") or "")
        except AWS_ERRORS as error:
            raise failure(self.label, "read the secret", secret_id, error) from None
        if found.get("SecretString") is not None:
            return Secret(secret_id, string=str(found["SecretString"]), kms_key_id=kms)
        return Secret(secret_id, binary=bytes(found.get("SecretBinary") or b""), kms_key_id=kms)

    def check(self, secret_id: str, must_exist: bool) -> None:
        if self._describe(secret_id) is None and must_exist:
            raise SourceUnreachableError(f"{self.label}: the secret {secret_id} does not exist")

    def _describe(self, secret_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.describe_secret(SecretId=secret_id))
        except AWS_ERRORS as error:
            if error_code(error) == "ResourceNotFoundException":
                return None
            raise failure(self.label, "describe the secret", secret_id, error) from None

    def _current_version(self, described: dict[str, Any]) -> str | None:
        stages = described.get("VersionIdsToStages") or {}
        return next((str(version) for version, labels in stages.items() if "AWSCURRENT" in labels), None)

    def _value(self, secret_id: str, **version: str) -> Secret:
        try:
            found = self.client.get_secret_value(SecretId=secret_id, **version)
        except AWS_ERRORS as error:
            raise failure(self.label, "read the secret", secret_id, error) from None
        if found.get("SecretString") is not None:
            return Secret(secret_id, string=str(found["SecretString"]))
        return Secret(secret_id, binary=bytes(found.get("SecretBinary") or b""))

    def _put(self, secret: Secret) -> None:
        try:
            self.client.put_secret_value(SecretId=secret.secret_id, **secret.value_args())
        except AWS_ERRORS as error:
            raise failure(self.label, "write the secret", secret.secret_id, error) from None

    def _tag(self, secret_id: str, timestamp: str, value: str) -> None:
        try:
            self.client.tag_resource(SecretId=secret_id, Tags=[{"Key": tag_key(timestamp), "Value": value}])
        except AWS_ERRORS as error:
            raise failure(self.label, "tag the secret", secret_id, error) from None

    def _untag(self, secret_id: str, timestamp: str) -> None:
        try:
            self.client.untag_resource(SecretId=secret_id, TagKeys=[tag_key(timestamp)])
        except AWS_ERRORS as error:
            raise failure(self.label, "untag the secret", secret_id, error) from None

    def swap_in(self, secret: Secret, timestamp: str) -> tuple[str | None, bool]:
        """Make ``secret`` the current value; returns the previous VersionId (None: created) and whether
        anything was written (an equal current value is left alone)."""
        described = self._describe(secret.secret_id)
        if described is None:
            args: dict[str, Any] = {"Name": secret.secret_id, **secret.value_args()}
            if secret.kms_key_id:
                args["KmsKeyId"] = secret.kms_key_id
            args["Tags"] = [{"Key": tag_key(timestamp), "Value": CREATED}]
            try:
                self.client.create_secret(**args)
            except AWS_ERRORS as error:
                raise failure(self.label, "create the secret", secret.secret_id, error) from None
            return None, True
        version = self._current_version(described)
        if version is not None:
            current = self._value(secret.secret_id, VersionId=version)
            if (current.string, current.binary) == (secret.string, secret.binary):
                return version, False
        self._tag(secret.secret_id, timestamp, f"{PREVIOUS}{version or NONE}")
        self._put(secret)
        return version, True

    def _tagged(self, secret_id: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
        described = self._describe(secret_id)
        if described is None:
            return None, {}
        tags = {str(tag["Key"]): str(tag["Value"]) for tag in described.get("Tags") or []}
        return described, tags

    def put_back(self, secret_id: str, timestamp: str) -> list[str]:
        """Undo this restore's swap of the secret (a created one is deleted); nothing when untagged."""
        described, tags = self._tagged(secret_id)
        value = tags.get(tag_key(timestamp))
        if described is None or value is None:
            return []
        if value == CREATED:
            try:
                self.client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
            except AWS_ERRORS as error:
                raise failure(self.label, "delete the secret", secret_id, error) from None
            return [f"secret {secret_id}, created by the restore, deleted"]
        line = f"swap of the secret {secret_id} undone (it had not been written)"
        previous = value[len(PREVIOUS) :] if value.startswith(PREVIOUS) else ""
        if previous == NONE:
            line = f"secret {secret_id} had no value before the restore; the restored one stays"
        elif previous and self._current_version(described) != previous:
            old = self._value(secret_id, VersionId=previous)
            self._put(Secret(secret_id, string=old.string, binary=old.binary))
            line = f"swap of the secret {secret_id} undone: the value of version {previous} put back"
        self._untag(secret_id, timestamp)
        return [line]

    def settle(self, secret_id: str, timestamp: str) -> None:
        """Make the swap final: the tag goes (the previous version stays in the secret's history)."""
        _, tags = self._tagged(secret_id)
        if tag_key(timestamp) in tags:
            self._untag(secret_id, timestamp)

    def clear_leftovers(self, secret_id: str, timestamp: str) -> list[str]:
        """Other restores' tags on the secret: a swap that went in is settled, any other put back."""
        described, tags = self._tagged(secret_id)
        lines: list[str] = []
        for key, value in sorted(tags.items()):
            found = _TAG.fullmatch(key)
            if described is None or found is None or found.group(1) == timestamp:
                continue
            earlier = found.group(1)
            went_in = value == CREATED or self._current_version(described) != value[len(PREVIOUS) :]
            if went_in:
                self._untag(secret_id, earlier)
                lines.append(
                    f"settled the swap of an earlier restore ({earlier}) into the secret {secret_id}"
                )
            else:
                lines.extend(self.put_back(secret_id, earlier))
        return lines


def settle_quietly(store: SecretStore, secret_id: str, timestamp: str) -> None:
    try:
        store.settle(secret_id, timestamp)
    except BackupError as error:
        logger.error("swap not settled component=%s secret=%s error=%s", store.label, secret_id, error)
