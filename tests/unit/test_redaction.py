"""Secrets out of messages: URLs and libpq connection strings lose their passwords, nothing else."""

from __future__ import annotations

import pytest

from questboard_backup.redaction import redact_text, redact_url


def test_a_url_keeps_everything_but_its_password() -> None:
    assert redact_url("postgresql://app:s3cr%40t@db.internal:5432/quests") == (
        "postgresql://app:***@db.internal:5432/quests"
    )
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


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
