"""Envelope keys: the passphrase wrapper refuses every tampered or foreign wrapped key, without leaking."""

from __future__ import annotations

import base64

import pytest

from questboard_backup.crypto import keys
from questboard_backup.crypto.keys import PassphraseKeyWrapper, WrappedKey, derive_subkey
from questboard_backup.errors import IntegrityError

PASSPHRASE = "correct horse battery staple"
BACKUP_ID = "questboard_full_20240101_020000"
WRAPPER = PassphraseKeyWrapper(PASSPHRASE)
DATA_KEY, WRAPPED = WRAPPER.generate(BACKUP_ID)


def assert_refused(
    wrapped: WrappedKey, context: str = BACKUP_ID, wrapper: PassphraseKeyWrapper = WRAPPER
) -> str:
    with pytest.raises(IntegrityError) as refused:
        wrapper.unwrap(wrapped, context)
    message = str(refused.value)
    assert message
    assert "\n" not in message
    assert PASSPHRASE not in message
    return message


def with_field(field: str, value: object) -> WrappedKey:
    return {**WRAPPED, field: value}  # type: ignore[dict-item]


def flipped(field: str) -> WrappedKey:
    raw = bytearray(base64.b64decode(str(WRAPPED[field])))
    raw[0] ^= 0x01
    return with_field(field, base64.b64encode(raw).decode("ascii"))


def test_generated_data_keys_are_distinct_32_byte_keys() -> None:
    first, first_wrapped = WRAPPER.generate(BACKUP_ID)
    second, second_wrapped = WRAPPER.generate(BACKUP_ID)
    assert len(first) == len(second) == 32
    assert first != second
    assert first_wrapped["salt"] != second_wrapped["salt"]
    assert first_wrapped["nonce"] != second_wrapped["nonce"]


def test_the_wrapped_form_is_json_safe_and_names_its_scheme() -> None:
    assert WRAPPED["scheme"] == PassphraseKeyWrapper.scheme
    assert all(isinstance(value, str | int) for value in WRAPPED.values())
    assert base64.b64encode(DATA_KEY).decode("ascii") not in WRAPPED.values()


def test_the_right_passphrase_and_context_unwrap_the_data_key() -> None:
    assert WRAPPER.unwrap(WRAPPED, BACKUP_ID) == DATA_KEY
    assert PassphraseKeyWrapper(PASSPHRASE).unwrap(dict(WRAPPED), BACKUP_ID) == DATA_KEY


def test_a_wrong_passphrase_is_refused() -> None:
    assert_refused(WRAPPED, wrapper=PassphraseKeyWrapper(PASSPHRASE + "!"))


@pytest.mark.parametrize("context", ["questboard_full_20240102_020000", "", BACKUP_ID + "/postgres"])
def test_a_wrapped_key_moved_to_another_backup_is_refused(context: str) -> None:
    assert_refused(WRAPPED, context=context)


@pytest.mark.parametrize("field", ["salt", "nonce", "wrapped_key"])
def test_a_tampered_field_is_refused(field: str) -> None:
    assert_refused(flipped(field))


@pytest.mark.parametrize("field", ["salt", "nonce", "wrapped_key"])
def test_a_shortened_field_is_refused(field: str) -> None:
    raw = base64.b64decode(str(WRAPPED[field]))
    assert_refused(with_field(field, base64.b64encode(raw[:4]).decode("ascii")))


@pytest.mark.parametrize("field", ["salt", "nonce", "wrapped_key"])
@pytest.mark.parametrize("value", ["not base64!", "YWJj\n", "é"])
def test_a_field_that_is_not_base64_is_refused(field: str, value: str) -> None:
    assert_refused(with_field(field, value))


@pytest.mark.parametrize("field", ["salt", "nonce", "wrapped_key"])
@pytest.mark.parametrize("value", [None, 1234, ["YWJj"]])
def test_a_field_that_is_not_a_string_is_refused(field: str, value: object) -> None:
    assert_refused(with_field(field, value))


@pytest.mark.parametrize(
    "field", ["scheme", "salt", "nonce", "wrapped_key", "scrypt_n", "scrypt_r", "scrypt_p"]
)
def test_a_missing_field_is_refused(field: str) -> None:
    assert_refused({name: value for name, value in WRAPPED.items() if name != field})


@pytest.mark.parametrize("scheme", ["kms-aes256gcm", "", None])
def test_a_key_wrapped_under_another_scheme_is_refused(scheme: object) -> None:
    assert_refused(with_field("scheme", scheme))


OUT_OF_RANGE = {
    "n too small": ("scrypt_n", 2**9),
    "n too large": ("scrypt_n", 2**21),
    "n not a power of two": ("scrypt_n", 3 * 2**13),
    "n zero": ("scrypt_n", 0),
    "n negative": ("scrypt_n", -(2**15)),
    "r zero": ("scrypt_r", 0),
    "r too large": ("scrypt_r", 33),
    "p zero": ("scrypt_p", 0),
    "p too large": ("scrypt_p", 17),
    "n not a number": ("scrypt_n", "lots"),
    "r null": ("scrypt_r", None),
    "p a list": ("scrypt_p", [1]),
}


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_scrypt_parameters_out_of_range_are_refused_before_any_derivation(
    field: str, value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_scrypt(**_: object) -> None:
        raise AssertionError("scrypt ran with out-of-range parameters")

    monkeypatch.setattr(keys, "Scrypt", no_scrypt)
    assert_refused(with_field(field, value))


def test_the_passphrase_is_not_shown_by_repr_or_str() -> None:
    assert PASSPHRASE not in repr(WRAPPER)
    assert PASSPHRASE not in str(WRAPPER)
    assert "redacted" in repr(WRAPPER)


def test_a_short_passphrase_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        PassphraseKeyWrapper("x" * 15)
    assert "x" * 15 not in str(refused.value)
    PassphraseKeyWrapper("x" * 16)


def test_subkeys_differ_per_purpose_and_per_data_key() -> None:
    manifest_key = derive_subkey(DATA_KEY, "manifest-mac")
    assert len(manifest_key) == 32
    assert manifest_key == derive_subkey(DATA_KEY, "manifest-mac")
    assert manifest_key != derive_subkey(DATA_KEY, "catalog-mac")
    assert manifest_key != derive_subkey(bytes(32), "manifest-mac")
    assert manifest_key != DATA_KEY


def test_a_kept_derived_key_opens_only_the_parameters_it_was_derived_with() -> None:
    """Unwrapping keeps derived keys by salt and scrypt parameters: after a genuine unwrap, the same
    salt with other parameters derives afresh (and fails), and a tampered key is still refused."""
    wrapper = PassphraseKeyWrapper(PASSPHRASE)
    data_key, wrapped = wrapper.generate("questboard_full_20240101_020000")
    assert wrapper.unwrap(wrapped, "questboard_full_20240101_020000") == data_key
    assert wrapper.unwrap(dict(wrapped), "questboard_full_20240101_020000") == data_key
    with pytest.raises(IntegrityError, match="cannot be unwrapped"):
        wrapper.unwrap({**wrapped, "scrypt_n": wrapped["scrypt_n"] // 2}, "questboard_full_20240101_020000")
    with pytest.raises(IntegrityError, match="cannot be unwrapped"):
        wrapper.unwrap(wrapped, "questboard_full_20240102_020000")


def test_the_derived_keys_kept_are_bounded_and_a_dropped_one_is_derived_again() -> None:
    class CheapToDerive(PassphraseKeyWrapper):  # old sets' cost or less: 65 derivations in no time
        SCRYPT_N = 2**10

    wrapper = CheapToDerive(PASSPHRASE)
    contexts = [
        f"questboard_full_2024{month:02d}{day:02d}_020000" for month in (1, 2, 3) for day in range(1, 23)
    ]
    sets = [wrapper.generate(context) for context in contexts]
    assert len(sets) > keys.DERIVED_KEYS_KEPT
    for (data_key, wrapped), context in zip(sets, contexts, strict=True):
        assert wrapper.unwrap(wrapped, context) == data_key
    assert len(wrapper._derived) == keys.DERIVED_KEYS_KEPT
    first_key, first_wrapped = sets[0]
    assert wrapper.unwrap(first_wrapped, contexts[0]) == first_key
