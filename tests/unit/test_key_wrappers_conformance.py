"""Every KeyWrapper keeps the same contract: fresh 32-byte keys, bound to their backup id."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from questboard_backup.aws.kms import KmsKeyWrapper
from questboard_backup.crypto.keys import KeyWrapper, PassphraseKeyWrapper
from questboard_backup.errors import ConfigurationError, IntegrityError


@pytest.fixture(params=["passphrase", "kms"])
def wrapper(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyWrapper]:
    if request.param == "passphrase":
        yield PassphraseKeyWrapper("conformance test passphrase")
        return
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    with mock_aws():
        kms = boto3.client("kms")
        key_id = kms.create_key(Description="backups")["KeyMetadata"]["KeyId"]
        yield KmsKeyWrapper(key_id, kms)


def test_generated_keys_are_fresh_and_unwrap_for_their_backup(wrapper: KeyWrapper) -> None:
    key_a, wrapped_a = wrapper.generate("questboard_full_20240101_020000")
    key_b, _ = wrapper.generate("questboard_full_20240101_020000")
    assert len(key_a) == 32 and key_a != key_b
    assert wrapper.unwrap(wrapped_a, "questboard_full_20240101_020000") == key_a


def test_keys_generated_after_prepare_are_as_fresh_and_unwrap_alike(wrapper: KeyWrapper) -> None:
    wrapper.prepare()
    wrapper.prepare()  # a second call before generate changes nothing
    key_a, wrapped_a = wrapper.generate("questboard_full_20240101_020000")
    key_b, wrapped_b = wrapper.generate("questboard_full_20240101_020000")
    wrapper.prepare()
    key_c, wrapped_c = wrapper.generate("questboard_full_20240101_020000")
    assert len({key_a, key_b, key_c}) == 3
    # Nothing prepared is used twice: every wrapped key differs whole (the passphrase's salt included).
    for field in set(wrapped_a) - {"scheme", "key_id", "scrypt_n", "scrypt_r", "scrypt_p"}:
        assert len({str(wrapped[field]) for wrapped in (wrapped_a, wrapped_b, wrapped_c)}) == 3, field
    for key, wrapped in ((key_a, wrapped_a), (key_b, wrapped_b), (key_c, wrapped_c)):
        assert wrapper.unwrap(wrapped, "questboard_full_20240101_020000") == key


def test_a_wrapped_key_does_not_open_for_another_backup(wrapper: KeyWrapper) -> None:
    _, wrapped = wrapper.generate("questboard_full_20240101_020000")
    with pytest.raises(IntegrityError):
        wrapper.unwrap(wrapped, "questboard_full_20240102_020000")


def test_a_key_wrapped_by_another_scheme_is_refused(wrapper: KeyWrapper) -> None:
    with pytest.raises(IntegrityError, match="wrapped with"):
        wrapper.unwrap({"scheme": "something-else"}, "questboard_full_20240101_020000")


def test_kms_without_a_key_id_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="BACKUP_KMS_KEY_ID"):
        KmsKeyWrapper("", client=object())
