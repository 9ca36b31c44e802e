"""Key wrapping with AWS KMS: GenerateDataKey per backup, Decrypt on restore.

The backup id is the KMS encryption context, so a wrapped key only opens for its own backup (and
CloudTrail shows which backup a Decrypt was for). The manifest records the key id.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from questboard_backup.crypto.keys import WrappedKey
from questboard_backup.crypto.stream import DATA_KEY_SIZE
from questboard_backup.errors import ConfigurationError, IntegrityError, TransientStorageError

_TRANSIENT = {
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "RequestLimitExceeded",
}


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

    def _error(self, error: Exception, action: str) -> Exception:
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "Unknown")
            if code == "InvalidCiphertextException":
                return IntegrityError(
                    "the data key cannot be unwrapped by KMS: tampered manifest or another key"
                )
            if code in _TRANSIENT:
                return TransientStorageError(f"KMS {action} failed: {code}")
            return ConfigurationError(f"KMS {action} with key {self.key_id} failed: {code}")
        if isinstance(error, BotoCoreError):
            return TransientStorageError(f"KMS {action} failed: {type(error).__name__}")
        return error

    def prepare(self) -> None:
        """Nothing to do ahead: a data key from KMS is one request, made by ``generate``."""

    def generate(self, context: str) -> tuple[bytes, WrappedKey]:
        try:
            response = self._kms.generate_data_key(
                KeyId=self.key_id, KeySpec="AES_256", EncryptionContext={"backup_id": context}
            )
        except Exception as error:  # noqa: BLE001 - mapped to our classes by _error
            raise self._error(error, "GenerateDataKey") from None
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
        try:
            response = self._kms.decrypt(
                CiphertextBlob=blob,
                KeyId=str(wrapped.get("key_id", self.key_id)),
                EncryptionContext={"backup_id": context},
            )
        except Exception as error:  # noqa: BLE001 - mapped to our classes by _error
            raise self._error(error, "Decrypt") from None
        return bytes(response["Plaintext"])
