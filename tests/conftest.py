"""Shared fixtures: one throwaway PostgreSQL and one Redis server for the whole session."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from tests.servers import PostgresServer, RedisServer

_counter = itertools.count()


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
    """The session Redis server with every logical db flushed before and after the test."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    yield redis_server
    client.flushall()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
