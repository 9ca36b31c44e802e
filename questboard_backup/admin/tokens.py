"""The admin API's bearer tokens: random, named, scoped, stored only as salted hashes.

A token is ``qbb_`` and 32 random bytes (base64url): 256 bits, so one salted SHA-256 per stored entry is
enough (a slow KDF protects guessable passwords, not random keys) and the authorizer stays fast. A
presented token is hashed against every entry and compared in constant time (``hmac.compare_digest``),
all entries every time, so the answer's timing says nothing about which entry came close. Several
tokens live side by side: rotate by creating the new one, moving clients, then revoking the old one.

The document is plain JSON (``{"tokens": [{name, scope, salt, sha256, created_at}]}``), kept in a
Secrets Manager secret (``questboard_backup.aws.token_secret``); nothing here touches AWS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from questboard_backup.errors import ConfigurationError, NotFoundError

Scope = Literal["read", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "admin")
PREFIX = "qbb_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: What API Gateway's authorizer accepts before it invokes the function (infra/api.py): the whole
#: Authorization header is ``Bearer `` and this.
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{20,200}$"
_TOKEN = re.compile(TOKEN_PATTERN)


class TokenError(ConfigurationError):
    """A token command's input is wrong (name, scope, duplicate); the message names it."""


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scope: Scope
    salt: str
    sha256: str
    created_at: str

    def public(self) -> dict[str, str]:
        """What ``token list`` shows: never the hash or the salt."""
        return {"name": self.name, "scope": self.scope, "created_at": self.created_at}


@dataclass(frozen=True)
class Caller:
    """Who a valid token belongs to."""

    name: str
    scope: Scope

    def may(self, needed: Scope) -> bool:
        return self.scope == "admin" or needed == "read"


def _digest(salt: str, token: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TokenError(f"token name must be 1-64 letters, digits, '.', '_' or '-', not {name[:80]!r}")
    return name


def check_scope(scope: str) -> Scope:
    if scope not in SCOPES:
        raise TokenError(f"token scope must be read or admin, not {scope[:40]!r}")
    return scope


@dataclass(frozen=True)
class TokenDocument:
    """The stored token entries; each change returns a new document."""

    entries: tuple[TokenEntry, ...] = ()

    @classmethod
    def parse(cls, text: str) -> TokenDocument:
        try:
            body = json.loads(text or "{}")
            rows = body.get("tokens", []) if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise TypeError("tokens is not a list")
            entries = tuple(
                TokenEntry(
                    name=check_name(str(row["name"])),
                    scope=check_scope(str(row["scope"])),
                    salt=str(row["salt"]),
                    sha256=str(row["sha256"]),
                    created_at=str(row.get("created_at", "")),
                )
                for row in rows
            )
            for entry in entries:
                bytes.fromhex(entry.salt)
        except (ValueError, TypeError, KeyError, AttributeError, TokenError) as error:
            raise ConfigurationError(f"the token document is not valid ({type(error).__name__})") from None
        return cls(entries)

    def dumps(self) -> str:
        return json.dumps({"tokens": [asdict(entry) for entry in self.entries]}, indent=1)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def add(self, name: str, scope: str, token: str | None = None) -> tuple[TokenDocument, str]:
        """A document with a new token ``name`` (a fresh random one unless ``token`` is given, as the
        local API's ``ADMIN_TOKEN`` is), and the token itself: the only time it exists in clear."""
        check_name(name)
        checked_scope = check_scope(scope)
        if name in self.names():
            raise TokenError(f"a token named {name!r} exists: revoke it first, or choose another name")
        token = new_token() if token is None else token
        if not _TOKEN.match(token):
            raise TokenError("a token must be 20-200 letters, digits, '_' or '-'")
        salt = secrets.token_hex(16)
        entry = TokenEntry(
            name=name,
            scope=checked_scope,
            salt=salt,
            sha256=_digest(salt, token),
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        return TokenDocument((*self.entries, entry)), token

    def revoke(self, name: str) -> TokenDocument:
        if name not in self.names():
            raise NotFoundError(f"no token named {name[:80]!r} (see `questboard-backup token list`)")
        return TokenDocument(tuple(entry for entry in self.entries if entry.name != name))

    def identify(self, token: str) -> Caller | None:
        """The caller ``token`` belongs to, or None; every entry is compared, in constant time."""
        found: TokenEntry | None = None
        candidate = token if _TOKEN.match(token) else ""
        for entry in self.entries:
            if hmac.compare_digest(_digest(entry.salt, candidate), entry.sha256) and candidate:
                found = entry
        return Caller(found.name, found.scope) if found else None


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for anything else."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not _TOKEN.match(token.strip()):
        return None
    return token.strip()


def listing(document: TokenDocument) -> Sequence[dict[str, str]]:
    return [entry.public() for entry in document.entries]


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2)
