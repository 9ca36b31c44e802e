"""Key wrapping with AWS KMS: GenerateDataKey per backup, Decrypt on restore.

The backup id is the KMS encryption context (``backup_id``), so a wrapped key only opens for its own
backup, CloudTrail shows which backup a Decrypt was for, and IAM can require it
(``kms:EncryptionContext:backup_id``). The manifest records the key id, but a manifest is not yet
authenticated when its key is unwrapped: Decrypt always names the configured key, or the manifest's
key only when the operator allow-listed it (the CLI's ``BACKUP_KMS_ALLOWED_KEYS``, for a DR restore).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from questboard_backup.aws.failures import classify
from questboard_backup.crypto.keys import WrappedKey
from questboard_backup.crypto.stream import DATA_KEY_SIZE
from questboard_backup.errors import (
    ConfigurationError,
    IntegrityError,
    KeyServiceError,
    TransientKeyServiceError,
)

#: Decrypt refusing the wrapped key itself: tampered, or wrapped under another key or backup id.
_WRONG_WRAPPED_KEY = {"InvalidCiphertextException", "IncorrectKeyException"}
#: GenerateDataKey refusing the configured key id: no such key, or not a symmetric encryption key.
_WRONG_KEY_ID = {"NotFoundException", "InvalidKeyUsageException"}
#: The encryption context key: its value is the backup id (IAM conditions name it).
CONTEXT_KEY = "backup_id"


def key_id_of(reference: str) -> str | None:
    """The key id in a key ARN or a bare key id; None for an alias (only KMS knows its key)."""
    if reference.startswith("alias/") or ":alias/" in reference:
        return None
    return reference.split(":key/", 1)[1] if ":key/" in reference else reference


class KmsKeyWrapper:
    """Data keys from KMS: ``key_id`` wraps new ones and unwraps; ``allowed_keys`` (key ARNs or ids)
    may also unwrap, when a manifest names one of them (a set written by another deployment)."""

    scheme = "aws-kms"

    def __init__(self, key_id: str, client: Any | None = None, allowed_keys: Iterable[str] = ()) -> None:
        self.allowed_keys = tuple(key for key in allowed_keys if key)
        if not key_id and not self.allowed_keys:
            raise ConfigurationError("BACKUP_KMS_KEY_ID is not set")
        self.key_id = key_id
        self._configured_id: str | None = key_id_of(key_id) if key_id else None
        if client is None:
            import boto3

            client = boto3.client("kms")
        self._kms = client

    def _error(self, error: BotoCoreError | ClientError, action: str, key_id: str) -> Exception:
        """The one place KMS failures become ours: one line naming the call, the key and the AWS code."""
        failure = classify(error)
        if action == "Decrypt" and failure.code in _WRONG_WRAPPED_KEY:
            return IntegrityError(
                f"the data key cannot be unwrapped by KMS ({failure.code}): tampered manifest or another key"
            )
        if action == "GenerateDataKey" and failure.code in _WRONG_KEY_ID:
            return ConfigurationError(
                f"KMS {action}: BACKUP_KMS_KEY_ID {key_id} is not a usable key: {failure.code}"
            )
        error_class = TransientKeyServiceError if failure.transient else KeyServiceError
        return error_class(f"KMS {action} with key {key_id} failed: {failure}")

    def prepare(self) -> None:
        """Nothing to do ahead: a data key from KMS is one request, made by ``generate``."""

    def generate(self, context: str) -> tuple[bytes, WrappedKey]:
        if not self.key_id:
            raise ConfigurationError("BACKUP_KMS_KEY_ID is not set: new data keys need it")
        try:
            response = self._kms.generate_data_key(
                KeyId=self.key_id, KeySpec="AES_256", EncryptionContext={CONTEXT_KEY: context}
            )
        except (BotoCoreError, ClientError) as error:
            raise self._error(error, "GenerateDataKey", self.key_id) from None
        plaintext = response["Plaintext"]
        if len(plaintext) != DATA_KEY_SIZE:
            raise IntegrityError(f"KMS returned a {len(plaintext)}-byte data key, expected {DATA_KEY_SIZE}")
        return plaintext, {
            "scheme": self.scheme,
            "key_id": response["KeyId"],
            "ciphertext": base64.b64encode(response["CiphertextBlob"]).decode("ascii"),
        }

    def unwrap(self, wrapped: WrappedKey, context: str) -> bytes:
        if wrapped.get("scheme") != self.scheme:
            raise IntegrityError(
                f"the data key was wrapped with {wrapped.get('scheme')!r}, not {self.scheme!r}"
            )
        try:
            blob = base64.b64decode(str(wrapped.get("ciphertext", "")), validate=True)
        except (binascii.Error, ValueError):
            raise IntegrityError("wrapped data key: field 'ciphertext' is not base64") from None
        key_id = self._unwrapping_key(wrapped.get("key_id"))
        try:
            response = self._kms.decrypt(
                CiphertextBlob=blob, KeyId=key_id, EncryptionContext={CONTEXT_KEY: context}
            )
        except (BotoCoreError, ClientError) as error:
            raise self._error(error, "Decrypt", key_id) from None
        return bytes(response["Plaintext"])

    def _unwrapping_key(self, named: object) -> str:
        """The key Decrypt names: the configured one, or the manifest's when it is allow-listed.
        Anything else is refused here, before KMS is asked (the manifest is not authenticated yet)."""
        if not isinstance(named, str) or not named:
            if self.key_id:
                return self.key_id
            raise ConfigurationError("the wrapped data key names no KMS key and BACKUP_KMS_KEY_ID is not set")
        named_id = key_id_of(named)
        if self.key_id and named_id is not None and named_id == self._configured_key_id():
            return self.key_id
        for allowed in self.allowed_keys:
            if named_id is not None and named_id == key_id_of(allowed):
                return allowed
        raise ConfigurationError(
            f"the backup's data key is wrapped by KMS key {named[:200]!r}, which is neither "
            "BACKUP_KMS_KEY_ID nor in BACKUP_KMS_ALLOWED_KEYS"
        )

    def _configured_key_id(self) -> str | None:
        """The configured key's id; for an alias, KMS tells it (DescribeKey, once)."""
        if self._configured_id is None and self.key_id:
            try:
                metadata = self._kms.describe_key(KeyId=self.key_id)["KeyMetadata"]
            except (BotoCoreError, ClientError) as error:
                raise self._error(error, "DescribeKey", self.key_id) from None
            self._configured_id = str(metadata["KeyId"])
        return self._configured_id
