"""The admin API's token document in a Secrets Manager secret (BACKUP_API_TOKENS_SECRET): the CLI's
``token`` commands write it, the authorizer reads it. Only hashes are stored (``admin.tokens``)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from questboard_backup.admin.tokens import TokenDocument
from questboard_backup.aws.failures import classify
from questboard_backup.errors import ConfigurationError, NotFoundError, StorageError, TransientStorageError


class TokenSecret:
    def __init__(self, secret_id: str, client: Any) -> None:
        if not secret_id:
            raise ConfigurationError(
                "BACKUP_API_TOKENS_SECRET is not set (the stack's ApiTokensSecretArn output)"
            )
        self.secret_id, self._client = secret_id, client

    def _fail(self, error: BotoCoreError | ClientError) -> Exception:
        failure = classify(error)
        if failure.code == "ResourceNotFoundException":
            return NotFoundError(f"no secret {self.secret_id} (BACKUP_API_TOKENS_SECRET)")
        kind = TransientStorageError if failure.transient else StorageError
        return kind(f"token secret {self.secret_id}: {failure.code}")

    def load(self) -> TokenDocument:
        try:
            text = self._client.get_secret_value(SecretId=self.secret_id)["SecretString"]
        except (BotoCoreError, ClientError) as error:
            raise self._fail(error) from None
        return TokenDocument.parse(text)

    def save(self, document: TokenDocument) -> None:
        try:
            self._client.put_secret_value(SecretId=self.secret_id, SecretString=document.dumps())
        except (BotoCoreError, ClientError) as error:
            raise self._fail(error) from None
