"""Which key unwraps a data key: KMS Decrypt names the configured key (or an allow-listed one the
manifest names), never a key the not-yet-authenticated manifest merely claims; the CLI's key ring
picks the wrapper by scheme; new passphrase wraps use scrypt N >= 2**17 and older ones still open."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from moto import mock_aws

from questboard_backup.aws.kms import KmsKeyWrapper
from questboard_backup.crypto.keys import KeyRing, PassphraseKeyWrapper, WrappedKey
from questboard_backup.errors import ConfigurationError, IntegrityError, KeyServiceError
from questboard_backup.settings import Settings
from questboard_backup.wiring import Wiring

BACKUP_ID = "questboard_full_20261201_020000"
PASSPHRASE = "a passphrase of some length"


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("kms")


def _key(kms: Any) -> str:
    return str(kms.create_key(Description="backups")["KeyMetadata"]["Arn"])


def _decrypts(kms: Any) -> list[str]:
    """The KeyId of every Decrypt the client sends, as KMS would see it."""
    seen: list[str] = []
    kms.meta.events.register(
        "provide-client-params.kms.Decrypt", lambda params, **_: seen.append(params["KeyId"])
    )
    return seen


def test_unwrap_names_the_configured_key_to_kms(kms: Any) -> None:
    configured = _key(kms)
    data_key, wrapped = KmsKeyWrapper(configured, kms).generate(BACKUP_ID)
    sent = _decrypts(kms)
    assert KmsKeyWrapper(configured, kms).unwrap(wrapped, BACKUP_ID) == data_key
    assert sent == [configured]


def test_a_manifest_naming_a_key_neither_configured_nor_allowed_is_refused_before_kms(kms: Any) -> None:
    configured, other = _key(kms), _key(kms)
    _, wrapped = KmsKeyWrapper(other, kms).generate(BACKUP_ID)
    sent = _decrypts(kms)
    with pytest.raises(ConfigurationError) as refused:
        KmsKeyWrapper(configured, kms).unwrap(wrapped, BACKUP_ID)
    message = str(refused.value)
    assert "\n" not in message and other in message
    assert "neither BACKUP_KMS_KEY_ID nor in BACKUP_KMS_ALLOWED_KEYS" in message
    assert sent == [], "KMS was asked with a key only the manifest named"


def test_a_manifest_claiming_the_configured_key_still_decrypts_only_with_it(kms: Any) -> None:
    configured, other = _key(kms), _key(kms)
    _, wrapped = KmsKeyWrapper(other, kms).generate(BACKUP_ID)
    sent = _decrypts(kms)
    with pytest.raises(KeyServiceError, match="KMS Decrypt with key"):
        KmsKeyWrapper(configured, kms).unwrap({**wrapped, "key_id": configured}, BACKUP_ID)
    assert sent == [configured]


def test_an_allow_listed_key_named_by_the_manifest_unwraps_by_its_key_id(kms: Any) -> None:
    other = _key(kms)
    data_key, wrapped = KmsKeyWrapper(other, kms).generate(BACKUP_ID)
    other_id = other.rsplit("/", 1)[1]
    sent = _decrypts(kms)
    assert KmsKeyWrapper("", kms, allowed_keys=[other_id]).unwrap(wrapped, BACKUP_ID) == data_key
    assert sent == [other_id]


def test_a_configured_alias_is_resolved_by_kms_to_compare_with_the_manifest(kms: Any) -> None:
    configured = _key(kms)
    kms.create_alias(AliasName="alias/questboard-backup", TargetKeyId=configured)
    data_key, wrapped = KmsKeyWrapper(configured, kms).generate(BACKUP_ID)
    assert KmsKeyWrapper("alias/questboard-backup", kms).unwrap(wrapped, BACKUP_ID) == data_key
    _, foreign = KmsKeyWrapper(_key(kms), kms).generate(BACKUP_ID)
    with pytest.raises(ConfigurationError, match="neither BACKUP_KMS_KEY_ID"):
        KmsKeyWrapper("alias/questboard-backup", kms).unwrap(foreign, BACKUP_ID)


def test_new_data_keys_need_the_configured_key_not_an_allow_list(kms: Any) -> None:
    with pytest.raises(ConfigurationError, match="BACKUP_KMS_KEY_ID is not set"):
        KmsKeyWrapper("", kms, allowed_keys=[_key(kms)]).generate(BACKUP_ID)


def test_allowed_keys_must_be_key_arns_or_ids_not_aliases() -> None:
    with pytest.raises(ConfigurationError, match="BACKUP_KMS_ALLOWED_KEYS lists 'alias/x'"):
        Settings.from_env({"BACKUP_KMS_ALLOWED_KEYS": "alias/x", "BACKUP_HOSTNAME": "h"})


def test_the_key_ring_opens_passphrase_and_kms_sets_each_with_its_own_settings(kms: Any) -> None:
    key = _key(kms)
    _, kms_wrapped = KmsKeyWrapper(key, kms).generate(BACKUP_ID)
    pass_key, pass_wrapped = PassphraseKeyWrapper(PASSPHRASE).generate(BACKUP_ID)

    only_passphrase = Wiring(Settings(encryption_key=PASSPHRASE), clients=lambda name: kms).key_ring()
    assert only_passphrase.unwrap(pass_wrapped, BACKUP_ID) == pass_key
    with pytest.raises(ConfigurationError, match=r"^BACKUP_KMS_KEY_ID is not set$"):
        only_passphrase.unwrap(kms_wrapped, BACKUP_ID)

    only_kms = Wiring(Settings(kms_key_id=key), clients=lambda name: kms).key_ring()
    assert len(only_kms.unwrap(kms_wrapped, BACKUP_ID)) == 32
    with pytest.raises(ConfigurationError, match=r"^BACKUP_ENCRYPTION_KEY is not set$"):
        only_kms.unwrap(pass_wrapped, BACKUP_ID)


def test_the_key_ring_refuses_unknown_schemes_and_new_keys() -> None:
    ring = KeyRing({PassphraseKeyWrapper.scheme: lambda: PassphraseKeyWrapper(PASSPHRASE)})
    with pytest.raises(IntegrityError, match="wrapped with 'rot13'"):
        ring.unwrap({"scheme": "rot13"}, BACKUP_ID)
    with pytest.raises(ConfigurationError, match="only unwraps"):
        ring.generate(BACKUP_ID)


def test_new_passphrase_wraps_use_scrypt_n_of_at_least_2_to_the_17() -> None:
    _, wrapped = PassphraseKeyWrapper(PASSPHRASE).generate(BACKUP_ID)
    assert int(wrapped["scrypt_n"]) >= 2**17
    assert (wrapped["scrypt_r"], wrapped["scrypt_p"]) == (8, 1)


def test_a_key_wrapped_with_the_old_scrypt_n_still_unwraps() -> None:
    """Built as the previous release wrote it (N = 2**15), without the wrapper's help."""
    data_key, salt, nonce = os.urandom(32), os.urandom(16), os.urandom(12)
    kek = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(PASSPHRASE.encode())
    wrapped = AESGCM(kek).encrypt(nonce, data_key, BACKUP_ID.encode())
    old: WrappedKey = {
        "scheme": "passphrase-scrypt-aes256gcm",
        "scrypt_n": 2**15,
        "scrypt_r": 8,
        "scrypt_p": 1,
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "wrapped_key": base64.b64encode(wrapped).decode(),
    }
    assert PassphraseKeyWrapper(PASSPHRASE).unwrap(old, BACKUP_ID) == data_key


def test_a_manifest_cannot_ask_unwrap_for_more_than_256_mib_of_scrypt_memory() -> None:
    _, wrapped = PassphraseKeyWrapper(PASSPHRASE).generate(BACKUP_ID)
    with pytest.raises(IntegrityError, match="out of range"):
        PassphraseKeyWrapper(PASSPHRASE).unwrap({**wrapped, "scrypt_n": 2**19}, BACKUP_ID)
