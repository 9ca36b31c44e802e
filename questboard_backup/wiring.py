"""The one composition root: from settings to components, storages and key wrappers, for the CLI and
the Lambdas alike, so the two cannot disagree on which components exist or how a storage is built.
AWS clients are made here (or supplied by the caller, as tests do) and injected into the adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from questboard_backup.crypto.keys import KeyRing, PassphraseKeyWrapper
from questboard_backup.retention import TIER_RETENTION_DAYS
from questboard_backup.settings import Settings
from questboard_backup.sources import registry
from questboard_backup.sources.base import Component
from questboard_backup.sources.registry import Endpoints
from questboard_backup.storage.base import Storage
from questboard_backup.storage.local import LocalStorage

if TYPE_CHECKING:
    from questboard_backup.storage.s3 import S3Storage


def _default_client(name: str) -> Any:
    if name == "s3":
        from questboard_backup.storage.s3 import make_client

        return make_client()
    import boto3

    return boto3.client(name)


class Wiring:
    """Builds the adapters of one run (CLI command) or one container (Lambda), each once."""

    def __init__(self, settings: Settings, clients: Callable[[str], Any] | None = None) -> None:
        self.settings = settings
        self._make_client = clients or _default_client
        self._clients: dict[str, Any] = {}

    def client(self, name: str) -> Any:
        if name not in self._clients:
            self._clients[name] = self._make_client(name)
        return self._clients[name]

    # Storages

    def local_storage(self) -> LocalStorage:
        return LocalStorage(self.settings.backup_dir)

    def s3_storage(
        self,
        bucket: str | None = None,
        hostname: str | None = None,
        *,
        stage_in_temp: bool = False,
    ) -> S3Storage:
        from questboard_backup.storage.s3 import S3Storage

        # The bucket's own SSE key when configured (else the bucket's default encryption): the data-key
        # wrapping key never encrypts objects.
        sse_key = self.settings.s3_kms_key_id
        extra: dict[str, Any] = {"sse": "aws:kms", "kms_key_id": sse_key} if sse_key else {}
        return S3Storage(
            bucket or self.settings.s3_bucket,
            self.settings.hostname if hostname is None else hostname,
            self.client("s3"),
            stage_in_temp=stage_in_temp,
            object_lock=self.settings.s3_object_lock,
            retention_days=TIER_RETENTION_DAYS,
            **extra,
        )

    def storages(self, local: bool = True) -> list[Storage]:
        """The CLI's storages: ``BACKUP_DIR`` (unless ``local`` is False) and the bucket, if any."""
        storages: list[Storage] = [self.local_storage()] if local else []
        if self.settings.s3_bucket:
            storages.append(self.s3_storage())
        return storages

    def s3_factory(self) -> Callable[[str, str], Storage]:
        """Builds the storage an ``s3://bucket/host/...`` reference names."""
        return lambda bucket, hostname: self.s3_storage(bucket, hostname)

    # Keys

    def passphrase_wrapper(self) -> PassphraseKeyWrapper:
        return PassphraseKeyWrapper(self.settings.require_encryption_key())

    def kms_wrapper(self, key_id: str, allowed_keys: Iterable[str] = ()) -> Any:
        from questboard_backup.aws.kms import KmsKeyWrapper

        return KmsKeyWrapper(key_id, self.client("kms"), allowed_keys)

    def key_ring(self) -> KeyRing:
        """What verify and restore unwrap with: the scheme each set's manifest names, the passphrase
        (BACKUP_ENCRYPTION_KEY) or AWS KMS (BACKUP_KMS_KEY_ID, BACKUP_KMS_ALLOWED_KEYS), so the CLI
        restores the serverless deployment's sets too."""
        from questboard_backup.aws.kms import KmsKeyWrapper

        return KeyRing(
            {
                PassphraseKeyWrapper.scheme: self.passphrase_wrapper,
                KmsKeyWrapper.scheme: lambda: self.kms_wrapper(
                    self.settings.kms_key_id, self.settings.kms_allowed_keys
                ),
            }
        )

    # Components

    def endpoints(self) -> Endpoints:
        """The configured sources, as the settings name them."""
        return Endpoints(
            database_url=self.settings.database_url,
            redis_url=self.settings.redis_url,
            files_paths=self.settings.files_paths,
            config_paths=self.settings.config_paths,
            **self.aws_sources(),
        )

    def aws_sources(self) -> dict[str, Any]:
        """The AWS-native sources' endpoint fields (uploads in S3, config in SSM and Secrets Manager),
        with this run's clients."""
        return {
            "uploads_s3_uri": self.settings.uploads_s3_uri,
            "config_ssm_paths": self.settings.config_ssm_paths,
            "config_secret_ids": self.settings.config_secret_ids,
            "aws_client": self.client,
        }

    def source(self, name: str, endpoints: Endpoints) -> Component | None:
        """The component ``name`` bound to its source; None when this deployment does not back it up."""
        return registry.spec(name).source(endpoints, self.settings)

    def sources(self, endpoints: Endpoints) -> list[Component]:
        """Every configured source, in registry order."""
        return [c for name in registry.names() if (c := self.source(name, endpoints)) is not None]

    def restore_targets(
        self, endpoints: Endpoints, names: Iterable[str] | None = None
    ) -> dict[str, Component]:
        """The restore target of each component that has one here."""
        targets = {}
        for name in registry.names() if names is None else names:
            target = registry.spec(name).target(endpoints, self.settings)
            if target is not None:
                targets[name] = target
        return targets
