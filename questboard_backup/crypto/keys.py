"""Envelope encryption: a fresh data key per backup, wrapped by a key-encryption key.

``KeyWrapper`` is the pluggable part. ``PassphraseKeyWrapper`` derives the key-encryption key from
``BACKUP_ENCRYPTION_KEY`` with scrypt; a KMS wrapper (GenerateDataKey / Decrypt) implements the same
protocol. Wrapped keys are JSON-safe dicts stored in the manifest.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from questboard_backup.crypto.stream import DATA_KEY_SIZE
from questboard_backup.errors import ConfigurationError, IntegrityError

WrappedKey = dict[str, str | int]


class KeyWrapper(Protocol):
    """Creates and recovers per-backup data keys.

    ``generate`` returns a fresh 32-byte data key and its wrapped form; ``unwrap`` returns the key
    only if the wrapped form is authentic for ``context`` (the backup id), else raises IntegrityError.
    ``prepare`` may start, in the background, work the next ``generate`` needs (it changes nothing
    else): a backup calls it as it starts, so that work overlaps its checks.
    """

    scheme: str

    def prepare(self) -> None: ...

    def generate(self, context: str) -> tuple[bytes, WrappedKey]: ...

    def unwrap(self, wrapped: WrappedKey, context: str) -> bytes: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, field: str) -> bytes:
    if not isinstance(value, str):  # str(None) == "None" would decode as base64
        raise IntegrityError(f"wrapped data key: field {field!r} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise IntegrityError(f"wrapped data key: field {field!r} is not base64") from None


#: Derived unwrapping keys one wrapper keeps (the oldest go first): a listing's worth of sets.
DERIVED_KEYS_KEPT = 64


class PassphraseKeyWrapper:
    """Wraps data keys with AES-256-GCM under scrypt(passphrase, per-backup salt)."""

    scheme = "passphrase-scrypt-aes256gcm"
    #: New wraps: 2**17 (128 MiB, about 0.35 s on one core), so a guessed passphrase costs an attacker
    #: four times what 2**15 (earlier backups, still read) did. See docs/performance.md.
    SCRYPT_N = 2**17
    SCRYPT_R = 8
    SCRYPT_P = 1
    #: The most a manifest may ask of unwrap (scrypt uses 128 * n * r bytes): a tampered manifest
    #: cannot make a restore allocate more than 256 MiB.
    MAX_SCRYPT_MEMORY = 2**28

    def __init__(self, passphrase: str) -> None:
        if len(passphrase) < 16:
            raise ValueError("passphrase must be at least 16 characters")
        self._passphrase = passphrase.encode("utf-8")
        self._next: tuple[bytes, Future[AESGCM]] | None = None
        #: Key-encryption keys derived for unwrapping, by (salt, n, r, p): a restore authenticates the
        #: same manifest when it lists, resolves and opens the set, and each derivation costs 0.35 s.
        self._derived: dict[tuple[bytes, int, int, int], AESGCM] = {}

    def prepare(self) -> None:
        """Derive the next backup's key-encryption key, with its own fresh salt, on a thread of its
        own: scrypt takes about 0.35 s of CPU, which then overlaps the checks before the backup."""
        if self._next is None:
            salt = os.urandom(16)
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qb-scrypt")
            self._next = salt, pool.submit(self._kek, salt, self.SCRYPT_N, self.SCRYPT_R, self.SCRYPT_P)
            pool.shutdown(wait=False)

    def __repr__(self) -> str:  # never show the passphrase
        return "PassphraseKeyWrapper(<redacted>)"

    def _kek(self, salt: bytes, n: int, r: int, p: int) -> AESGCM:
        return AESGCM(Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(self._passphrase))

    def generate(self, context: str) -> tuple[bytes, WrappedKey]:
        data_key = os.urandom(DATA_KEY_SIZE)
        nonce = os.urandom(12)
        if self._next is not None:  # prepared: used for this one key only
            (salt, prepared), self._next = self._next, None
            kek = prepared.result()
        else:
            salt = os.urandom(16)
            kek = self._kek(salt, self.SCRYPT_N, self.SCRYPT_R, self.SCRYPT_P)
        wrapped = kek.encrypt(nonce, data_key, context.encode("utf-8"))
        return data_key, {
            "scheme": self.scheme,
            "scrypt_n": self.SCRYPT_N,
            "scrypt_r": self.SCRYPT_R,
            "scrypt_p": self.SCRYPT_P,
            "salt": _b64(salt),
            "nonce": _b64(nonce),
            "wrapped_key": _b64(wrapped),
        }

    def unwrap(self, wrapped: WrappedKey, context: str) -> bytes:
        if wrapped.get("scheme") != self.scheme:
            raise IntegrityError(
                f"the data key was wrapped with {wrapped.get('scheme')!r}, not {self.scheme!r}"
            )
        try:
            n, r, p = int(wrapped["scrypt_n"]), int(wrapped["scrypt_r"]), int(wrapped["scrypt_p"])
        except (KeyError, TypeError, ValueError):
            raise IntegrityError("wrapped data key: missing or invalid scrypt parameters") from None
        # Bounded so a tampered manifest cannot make unwrap allocate gigabytes (scrypt uses 128*n*r bytes).
        if not (
            2**10 <= n <= 2**20
            and n & (n - 1) == 0
            and 1 <= r <= 32
            and 1 <= p <= 4
            and 128 * n * r <= self.MAX_SCRYPT_MEMORY
        ):
            raise IntegrityError("wrapped data key: scrypt parameters out of range")
        salt = _unb64(wrapped.get("salt"), "salt")
        nonce = _unb64(wrapped.get("nonce"), "nonce")
        if len(nonce) != 12:  # AESGCM raises ValueError, not InvalidTag, for other lengths
            raise IntegrityError(f"wrapped data key: nonce is {len(nonce)} bytes, expected 12")
        ciphertext = _unb64(wrapped.get("wrapped_key"), "wrapped_key")
        kek = self._derived.get((salt, n, r, p))
        if kek is None:
            kek = self._kek(salt, n, r, p)
            if len(self._derived) >= DERIVED_KEYS_KEPT:
                self._derived.pop(next(iter(self._derived)))
            self._derived[(salt, n, r, p)] = kek
        try:
            return kek.decrypt(nonce, ciphertext, context.encode("utf-8"))
        except InvalidTag:
            raise IntegrityError(
                "the data key cannot be unwrapped: wrong BACKUP_ENCRYPTION_KEY or tampered manifest"
            ) from None


class KeyRing:
    """Unwraps with the wrapper the wrapped key's scheme names, among those this host is set up for.

    Each wrapper is built when a key first needs it, so a restore of a passphrase set never needs AWS
    and one of a KMS set never needs the passphrase; a missing setting is the builder's one-line
    ConfigurationError. It only reads: a new backup chooses its wrapper, and ``generate`` refuses.
    """

    scheme = "key-ring"

    def __init__(self, builders: Mapping[str, Callable[[], KeyWrapper]]) -> None:
        self._builders = dict(builders)
        self._built: dict[str, KeyWrapper] = {}

    def prepare(self) -> None:
        """Nothing to prepare: unwrapping needs no work ahead."""

    def generate(self, context: str) -> tuple[bytes, WrappedKey]:
        raise ConfigurationError("a key ring only unwraps: a new backup names its key wrapper")

    def unwrap(self, wrapped: WrappedKey, context: str) -> bytes:
        scheme = wrapped.get("scheme")
        if not isinstance(scheme, str) or scheme not in self._builders:
            raise IntegrityError(
                f"the data key was wrapped with {scheme!r}, not one of {sorted(self._builders)}"
            )
        if scheme not in self._built:
            self._built[scheme] = self._builders[scheme]()
        return self._built[scheme].unwrap(wrapped, context)


def derive_subkey(data_key: bytes, purpose: str) -> bytes:
    """A key for one purpose (the manifest MAC) derived from the backup's data key."""
    info = b"questboard-backup/" + purpose.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(data_key)
