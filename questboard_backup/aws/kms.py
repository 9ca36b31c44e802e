"""Key wrapping with AWS KMS: GenerateDataKey per backup, Decrypt on restore.

The backup id is the KMS encryption context, so a wrapped key only opens for its own backup (and
CloudTrail shows which backup a Decrypt was for). The manifest records the key id.
"""

from __future__ import annotations

import base64
import binascii
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


class KmsKeyWrapper:
    scheme = "aws-kms"

    def __init__(self, key_id: str, client: Any | None = None) -> None:
        if not key_id:
            raise ConfigurationError("BACKUP_KMS_KEY_ID is not set")
        self.key_id = key_id
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
        try:
            response = self._kms.generate_data_key(
                KeyId=self.key_id, KeySpec="AES_256", EncryptionContext={"backup_id": context}
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
        key_id = str(wrapped.get("key_id", self.key_id))
        try:
            response = self._kms.decrypt(
                CiphertextBlob=blob, KeyId=key_id, EncryptionContext={"backup_id": context}
            )
        except (BotoCoreError, ClientError) as error:
            raise self._error(error, "Decrypt", key_id) from None
        return bytes(response["Plaintext"])
