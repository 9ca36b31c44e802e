"""Admin API tokens: random, named, scoped, stored only as salted hashes, every entry compared."""

from __future__ import annotations

import hmac
import json

import pytest

from questboard_backup.admin import tokens as tokens_module
from questboard_backup.admin.tokens import Caller, TokenDocument, TokenError, bearer_token
from questboard_backup.errors import ConfigurationError, NotFoundError


def test_a_created_token_is_random_and_only_its_salted_hash_is_stored() -> None:
    document, first = TokenDocument().add("ci", "admin")
    document, second = document.add("grafana", "read")
    assert first != second and first.startswith("qbb_") and len(first) >= 40
    stored = document.dumps()
    assert first not in stored and second not in stored
    entries = json.loads(stored)["tokens"]
    assert {entry["name"] for entry in entries} == {"ci", "grafana"}
    assert entries[0]["salt"] != entries[1]["salt"]
    # The same token under two names still hashes differently (salted).
    again, _ = TokenDocument().add("a", "read", token=first)
    again, _ = again.add("b", "read", token=first)
    assert len({entry["sha256"] for entry in json.loads(again.dumps())["tokens"]}) == 2


def test_identify_finds_the_caller_with_its_scope_and_refuses_others() -> None:
    document, admin = TokenDocument().add("ci", "admin")
    document, reader = document.add("grafana", "read")
    document = TokenDocument.parse(document.dumps())  # through the stored form
    assert document.identify(admin) == Caller("ci", "admin")
    assert document.identify(reader) == Caller("grafana", "read")
    assert document.identify(admin[:-1] + ("A" if admin[-1] != "A" else "B")) is None
    assert document.identify("") is None
    assert document.revoke("ci").identify(admin) is None


def test_every_entry_is_compared_in_constant_time_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    document = TokenDocument()
    issued = []
    for number in range(5):
        document, token = document.add(f"t{number}", "read")
        issued.append(token)
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", counting)
    for token in (issued[0], issued[4], "qbb_" + "z" * 43):
        calls.clear()
        document.identify(token)
        assert len(calls) == 5


def test_scopes_read_may_read_admin_may_do_everything() -> None:
    assert Caller("a", "admin").may("admin") and Caller("a", "admin").may("read")
    assert Caller("r", "read").may("read") and not Caller("r", "read").may("admin")


@pytest.mark.parametrize(
    ("name", "scope", "problem"),
    [
        ("", "read", "token name"),
        ("a b", "read", "token name"),
        ("x" * 65, "read", "token name"),
        ("ok", "root", "scope"),
    ],
)
def test_bad_names_and_scopes_are_refused_by_name(name: str, scope: str, problem: str) -> None:
    with pytest.raises(TokenError, match=problem):
        TokenDocument().add(name, scope)


def test_a_duplicate_name_and_an_unknown_revoke_are_refused() -> None:
    document, _ = TokenDocument().add("ci", "read")
    with pytest.raises(TokenError, match="exists"):
        document.add("ci", "admin")
    with pytest.raises(NotFoundError, match="no token named 'nobody'"):
        document.revoke("nobody")


@pytest.mark.parametrize(
    "text",
    [
        "{",
        '{"tokens": 3}',
        '{"tokens": [{"name": "a"}]}',
        '{"tokens": [{"name": "a", "scope": "god", "salt": "00", "sha256": ""}]}',
    ],
)
def test_a_damaged_document_is_a_one_line_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError, match="token document is not valid"):
        TokenDocument.parse(text)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer qbb_abcdefghijklmnopqrstuvwxyz", "qbb_abcdefghijklmnopqrstuvwxyz"),
        ("bearer qbb_abcdefghijklmnopqrstuvwxyz", "qbb_abcdefghijklmnopqrstuvwxyz"),
        ("Basic qbb_abcdefghijklmnopqrstuvwxyz", None),
        ("Bearer short", None),
        ("Bearer qbb_abc def ghi jkl mno pqr stu", None),
        ("", None),
        (None, None),
    ],
)
def test_only_a_bearer_header_carries_a_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected
