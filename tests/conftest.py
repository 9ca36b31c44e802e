"""Shared fixtures: one throwaway PostgreSQL, Redis and moto (S3) server for the whole session."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from tests.servers import PostgresServer, RedisServer, free_port

_counter = itertools.count()


def _engine_loggers() -> dict[str, logging.Logger]:
    return {
        name: logger
        for name, logger in logging.root.manager.loggerDict.items()
        if name.split(".")[0] == "questboard_backup" and isinstance(logger, logging.Logger)
    }


@pytest.fixture(autouse=True)
def _engine_logging_as_it_was() -> Iterator[None]:
    """Importing the Lambda handlers points the engine's loggers at Powertools (JSON on stdout, no
    propagation): put them back after each test, so that every test, the CLI's included, sees the
    engine log as a plain process does, whichever tests ran before it."""
    before = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name, logger in _engine_loggers().items()
    }
    yield
    for name, logger in _engine_loggers().items():
        handlers, level, propagate = before.get(name, ([], logging.NOTSET, True))
        logger.handlers = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer.in_new_folder().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


#: The password of the password-protected servers: every character a URL gives a meaning to.
AWKWARD_PASSWORD = "pa:ss@w/rd#?%25&x= y+z"


@pytest.fixture(scope="session")
def password_pg_server() -> Iterator[PostgresServer]:
    """A second PostgreSQL server whose TCP connections need AWKWARD_PASSWORD (scram-sha-256)."""
    server = PostgresServer.in_new_folder(password=AWKWARD_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def password_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A second Redis server that wants AWKWARD_PASSWORD (requirepass)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-password"), password=AWKWARD_PASSWORD).start()
    yield server
    server.stop()


#: What managed Redis (ElastiCache, MemoryDB) refuses to run.
MANAGED_REDIS_REFUSES = ("CONFIG", "SYNC", "PSYNC", "SAVE", "BGSAVE", "DEBUG")


@pytest.fixture(scope="session")
def managed_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A second Redis server without the commands managed Redis refuses (renamed to nothing)."""
    disabled = [arg for command in MANAGED_REDIS_REFUSES for arg in ("--rename-command", command, "")]
    server = RedisServer(tmp_path_factory.mktemp("redis-managed"), extra_args=disabled).start()
    yield server
    server.stop()


def _flushed(server: RedisServer) -> Iterator[RedisServer]:
    """The server with every logical db flushed before and after the test."""
    client = redis.Redis(port=server.port)
    client.flushall()
    yield server
    client.flushall()


@pytest.fixture
def fresh_managed_redis(managed_redis_server: RedisServer) -> Iterator[RedisServer]:
    """The managed-like Redis server, flushed before and after the test."""
    yield from _flushed(managed_redis_server)


@pytest.fixture
def fresh_database(pg_server: PostgresServer) -> Iterator[str]:
    """An empty database of its own, dropped afterwards; yields its URL."""
    name = f"t{next(_counter)}_{id(object()) % 100000}"
    conn = psycopg2.connect(pg_server.url())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.url(name)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
            (name, name + "\\_%"),
        )
        for (datname,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{datname}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def fresh_redis_dbs(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session Redis server, flushed before and after the test."""
    yield from _flushed(redis_server)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """An in-process moto server on 127.0.0.1 speaking real HTTP; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # returns once the socket is listening
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class S3Bucket:
    name: str
    client: Any
    endpoint: str


@pytest.fixture
def s3_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on the moto server and a boto3 client pointed at it (fake credentials)."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAQBTESTFAKEKEY000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "qb-fake-secret-access-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for variable in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):  # the tests count the engine's own retries
        monkeypatch.delenv(variable, raising=False)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    name = f"qb-test-{next(_counter)}"
    client.create_bucket(Bucket=name)
    yield S3Bucket(name, client, moto_server)
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)
