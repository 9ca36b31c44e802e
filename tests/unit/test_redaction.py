"""Secrets out of messages: URLs and libpq connection strings lose their passwords, nothing else."""

from __future__ import annotations

import logging

import pytest

from questboard_backup.redaction import RedactingFilter, redact_text, remember_secret


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "could not reach postgresql://app:hunter2@db:5432/q (timeout)",
            "could not reach postgresql://app:***@db:5432/q (timeout)",
        ),
        ("rediss://:hunter2@cache:6380/1 refused", "rediss://:***@cache:6380/1 refused"),
        ("two: redis://a:x1@h/0 and https://b:y2@h/", "two: redis://a:***@h/0 and https://b:***@h/"),
        ("host=db user=app password=hunter2 dbname=q", "host=db user=app password=*** dbname=q"),
        ("password = 'hunter 2\\' x' dbname=q", "password = *** dbname=q"),
        ("PASSWORD=hunter2", "PASSWORD=***"),
        ("env PGPASSWORD=hunter2 psql", "env PGPASSWORD=*** psql"),
        ("postgresql://app:hun@ter2@db/q", "postgresql://app:***@db/q"),
        ("no secret at https://example.com/a:b@c", "no secret at https://example.com/a:b@c"),
        ("plain text", "plain text"),
    ],
)
def test_any_text_loses_the_passwords_it_quotes(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert "hunter" not in redact_text(text)


def test_a_remembered_secret_is_replaced_however_it_is_written() -> None:
    remember_secret("Kx7@#?%/ &=+p")
    for written in (
        "Kx7@#?%/ &=+p",
        "Kx7%40%23%3F%25%2F%20%26%3D%2Bp",
        "Kx7%40%23%3F%25/%20%26%3D%2Bp",
        "Kx7%40%23%3F%25%2F+%26%3D%2Bp",
    ):
        assert redact_text(f"refused {written}!") == "refused ***!"


def test_a_very_short_secret_is_not_remembered_so_ordinary_words_survive() -> None:
    remember_secret("on")
    assert redact_text("connection refused") == "connection refused"


def test_log_records_are_redacted_with_their_arguments_merged_in() -> None:
    remember_secret("Lq4-log-secret")
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "connecting with %s to %s", ("Lq4-log-secret", "db"), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "connecting with *** to db"
