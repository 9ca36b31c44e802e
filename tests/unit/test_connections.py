"""Connection URLs are parsed and rebuilt, never cut: another database or db replaces only that, every
other parameter survives, secrets in field form become URLs, and what is shown has no password."""

from __future__ import annotations

import json

import pytest
from psycopg2.extensions import parse_dsn
from redis.connection import SSLConnection, parse_url

from questboard_backup.connections import (
    postgres_display,
    postgres_url,
    postgres_url_from_secret,
    postgres_with,
    redis_display,
    redis_url_from_secret,
    redis_with,
)
from questboard_backup.errors import ConfigurationError
from questboard_backup.redaction import redact_text

PASSWORD = "p@ss#w?rd%25/:&="

POSTGRES_URLS = [
    "postgresql://u:Pw9x-secret@db.internal/questboard?sslmode=require&sslrootcert=/etc/ssl/rds-ca.pem",
    "postgresql://u:Pw9x-secret@db.internal:5432/questboard?sslmode=verify-full",
    "postgres://app:p%40ss%23w%3Frd%2525@db:5433/q?application_name=nightly&connect_timeout=7",
    "postgresql://app@db/q?password=p%40ss%23w%3Frd&options=-c%20search_path%3Dquests%2Cpublic",
    "host=db.internal port=5432 user=app password='p@ss w\\'rd' dbname=questboard sslmode=verify-full",
    "postgresql:///questboard?host=/var/run/postgresql",
    "postgresql://primary:5432,replica:5433/questboard?target_session_attrs=read-write",
    "postgresql://app:Pw9x-secret@[2001:db8::1]:5432/questboard",
    "postgresql://app:Pw9x-secret@db",
]


@pytest.mark.parametrize("url", POSTGRES_URLS)
def test_another_database_replaces_only_the_database(url: str) -> None:
    rebuilt = postgres_with(url, database="questboard_drill")
    assert parse_dsn(rebuilt) == {**parse_dsn(url), "dbname": "questboard_drill"}


def test_the_issues_example_keeps_its_root_certificate_and_names_the_drill_database() -> None:
    url = "postgresql://u:p@host/questboard?sslmode=require&sslrootcert=/etc/ssl/rds-ca.pem"
    params = parse_dsn(postgres_with(url, database="questboard_drill"))
    assert params["dbname"] == "questboard_drill"
    assert params["sslrootcert"] == "/etc/ssl/rds-ca.pem"
    assert params["sslmode"] == "require"


@pytest.mark.parametrize("url", POSTGRES_URLS)
def test_another_password_replaces_only_the_password(url: str) -> None:
    rebuilt = postgres_with(url, password=PASSWORD)
    assert parse_dsn(rebuilt) == {**parse_dsn(url), "password": PASSWORD}


def test_a_url_from_fields_reads_back_as_the_same_fields() -> None:
    fields = {
        "user": "a@b",
        "password": PASSWORD,
        "host": "db",
        "port": "5432",
        "dbname": "q/1",
        "sslmode": "require",
    }
    assert parse_dsn(postgres_url(fields)) == fields


@pytest.mark.parametrize("url", POSTGRES_URLS)
def test_a_postgres_url_is_shown_without_its_password_and_keeps_the_rest(url: str) -> None:
    shown = postgres_display(url)
    params = parse_dsn(url)
    assert parse_dsn(shown) == {key: value for key, value in params.items() if key != "password"}
    if "password" in params:
        assert params["password"] not in shown


def test_an_unparseable_url_is_never_echoed() -> None:
    for url in ("postgresql://u:s3cr3t-value@h/db?bogus_option=1", "host=db password='s3cr3t-value"):
        assert "s3cr3t" not in postgres_display(url)
        with pytest.raises(ConfigurationError) as caught:
            postgres_with(url, database="x")
        assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in redis_display("redis://u:s3cr3t-value@h:notaport/0")
    with pytest.raises(ConfigurationError) as caught:
        redis_with("redis://u:s3cr3t#value@h:6379/0", db=1)
    assert "s3cr3t" not in str(caught.value)


REDIS_URLS = [
    "redis://cache:6379/0",
    "redis://:p%40ss%23w%3Frd@cache:6379/2?socket_timeout=3",
    "rediss://app:p%40ss@cache.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca.pem",
    "redis://cache/1?db=5",  # redis-py prefers ?db= to the path
    "redis://[::1]:7000/3",
    "unix:///run/redis.sock?db=4",
]


@pytest.mark.parametrize("url", REDIS_URLS)
def test_another_redis_db_replaces_only_the_db(url: str) -> None:
    expected = {**parse_url(url), "db": 9}
    assert parse_url(redis_with(url, db=9)) == expected


@pytest.mark.parametrize("url", REDIS_URLS)
def test_another_redis_password_replaces_only_the_password(url: str) -> None:
    assert parse_url(redis_with(url, password=PASSWORD)) == {**parse_url(url), "password": PASSWORD}


@pytest.mark.parametrize("url", REDIS_URLS)
def test_a_redis_url_is_shown_with_its_db_and_without_its_password(url: str) -> None:
    shown = redis_display(url)
    params = parse_url(url)
    assert parse_url(shown).get("db", 0) == params.get("db", 0)
    assert "password" not in parse_url(shown)
    assert shown.startswith(url.split(":", 1)[0] + "://")  # rediss stays rediss


def test_an_rds_secret_in_field_form_becomes_a_url_with_its_tls_settings() -> None:
    secret = {
        "engine": "postgres",
        "host": "questboard.cluster-x.eu-west-1.rds.amazonaws.com",
        "port": 5432,
        "username": "questboard",
        "password": PASSWORD,
        "dbname": "questboard",
        "dbInstanceIdentifier": "questboard-db",
        "sslmode": "verify-full",
        "sslrootcert": "/opt/certs/global-bundle.pem",
    }
    url = postgres_url_from_secret(json.dumps(secret))
    assert parse_dsn(url) == {
        "host": secret["host"],
        "port": "5432",
        "user": "questboard",
        "password": PASSWORD,
        "dbname": "questboard",
        "sslmode": "verify-full",
        "sslrootcert": "/opt/certs/global-bundle.pem",
    }
    drill = parse_dsn(postgres_with(url, database="questboard_drill"))
    assert (drill["dbname"], drill["sslrootcert"], drill["password"]) == (
        "questboard_drill",
        "/opt/certs/global-bundle.pem",
        PASSWORD,
    )


def test_a_field_form_secret_with_ssl_true_requires_tls() -> None:
    url = postgres_url_from_secret(json.dumps({"host": "db", "username": "u", "password": "pw", "ssl": True}))
    assert parse_dsn(url)["sslmode"] == "require"


def test_a_secret_holding_a_url_or_conninfo_is_read_by_libpq() -> None:
    uri = "postgresql://u:p%40ss@db/q?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert parse_dsn(postgres_url_from_secret(json.dumps({"url": uri}))) == parse_dsn(uri)
    assert parse_dsn(postgres_url_from_secret(uri)) == parse_dsn(uri)
    conninfo = "host=db user=u password='p@ss #?' dbname=q sslmode=require"
    assert parse_dsn(postgres_url_from_secret(json.dumps({"url": conninfo}))) == parse_dsn(conninfo)


@pytest.mark.parametrize("flag", ["tls", "ssl", "transit_encryption_enabled", "TransitEncryptionEnabled"])
def test_an_elasticache_secret_with_transit_encryption_becomes_rediss(flag: str) -> None:
    secret = {"host": "master.cache.amazonaws.com", "port": 6380, "auth_token": PASSWORD, flag: True}
    url = redis_url_from_secret(json.dumps({**secret, "ssl_ca_certs": "/etc/ssl/ca.pem"}))
    params = parse_url(url)
    assert params["connection_class"] is SSLConnection
    assert (params["host"], params["port"], params["password"], params["db"]) == (
        "master.cache.amazonaws.com",
        6380,
        PASSWORD,
        0,
    )
    assert params["ssl_ca_certs"] == "/etc/ssl/ca.pem"
    assert parse_url(redis_with(url, db=8))["connection_class"] is SSLConnection


def test_a_redis_secret_without_tls_stays_plain() -> None:
    url = redis_url_from_secret(json.dumps({"host": "cache", "port": "6379", "password": PASSWORD, "db": 2}))
    params = parse_url(url)
    assert "connection_class" not in params and params["db"] == 2 and params["password"] == PASSWORD


@pytest.mark.parametrize(
    "secret",
    ['{"host": ', "[1, 2]", '{"username": "u"}', "mysql://u:sEcReT-Value@h/db", "not a url sEcReT-Value"],
)
def test_a_secret_that_fails_to_parse_is_never_echoed(secret: str) -> None:
    for read in (postgres_url_from_secret, redis_url_from_secret):
        with pytest.raises(ConfigurationError) as caught:
            read(secret)
        assert "sEcReT" not in str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_secret_read_is_remembered_and_redacted_in_every_encoding() -> None:
    postgres_url_from_secret(
        json.dumps({"host": "db", "username": "u", "password": "Zq8@#?%x/y", "dbname": "q"})
    )
    text = "failed: Zq8@#?%x/y, Zq8%40%23%3F%25x%2Fy, Zq8%40%23%3F%25x/y, ?password=Zq8%40%23%3F%25x%2Fy"
    assert "Zq8" not in redact_text(text)


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("DATABASE_URL", "postgresql://u:Xpa#ss?w@rd@h/db"),
        ("DATABASE_URL", "postgresql://u:Xpa%ss@h/db?sslmode=bogus-Xpa"),
        ("REDIS_URL", "redis://:Xpa#ss@cache:6379/0"),
        ("REDIS_URL", "rediss://:Xpa%ss@cache:6379/0?db=Xpa"),
    ],
)
def test_a_setting_url_that_does_not_parse_is_named_and_never_echoed(name: str, url: str) -> None:
    from questboard_backup.settings import Settings

    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({name: url})
    assert name in str(caught.value)
    assert "Xpa" not in str(caught.value)
