"""Passwords with every awkward character, through both front ends against real password-protected
servers: a secret plus a database override reaches that database with its parameters intact; the CLI
restores with passwords kept off its command line; no failure shows a password anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

import psycopg2
import pytest
import redis

from questboard_backup.sources.postgres.component import PostgresComponent, row_counts
from questboard_backup.sources.redis.component import RedisComponent
from tests.conftest import AWKWARD_PASSWORD
from tests.dataset import redis_snapshot
from tests.integration.conftest import Deployment
from tests.servers import PostgresServer, RedisServer, free_port

if TYPE_CHECKING:
    from lambdas.dependencies import Dependencies

#: The wrong password the failure tests give: as awkward as the right one, and different.
WRONG_PASSWORD = "wr@ng#pa?ss%word&password=x/y"
REPO = Path(__file__).resolve().parents[2]


def forms(password: str) -> list[str]:
    """Every way a password may show: as written, percent-encoded, form-encoded."""
    return sorted({password, quote(password, safe=""), quote(password), quote_plus(password)})


def assert_nowhere(password: str, *texts: str) -> None:
    for text in texts:
        for form in forms(password):
            assert form not in text, f"{form!r} shows in: {text[:2000]}"


@pytest.fixture
def drill_database(password_pg_server: PostgresServer) -> Iterator[str]:
    """An empty database on the password-protected server, dropped afterwards; yields its name."""
    name = f"drill_{os.getpid()}_{free_port()}"
    conn = psycopg2.connect(password_pg_server.url())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield name
    with conn.cursor() as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s", (name, name + "\\_%")
        )
        for (datname,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{datname}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def fresh_password_redis(password_redis_server: RedisServer) -> Iterator[RedisServer]:
    client = redis.Redis(port=password_redis_server.port, password=AWKWARD_PASSWORD)
    client.flushall()
    yield password_redis_server
    client.flushall()


def function_dependencies(database_secret: str = "", redis_secret: str = "") -> Dependencies:
    from lambdas.dependencies import Dependencies, FunctionSettings

    secrets = {"arn:db": database_secret, "arn:redis": redis_secret}
    settings = FunctionSettings(
        s3_bucket="unused",
        hostname="secrets-test",
        kms_key_id="unused",
        database_secret_arn="arn:db" if database_secret else "",
        redis_secret_arn="arn:redis" if redis_secret else "",
    )
    return Dependencies(settings, clients=lambda name: None, secrets=secrets.__getitem__)


def session_facts(url: str) -> tuple[str, str, str, str]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT current_database(), current_setting('application_name'), "
            "current_setting('search_path'), current_setting('statement_timeout')"
        )
        row = cur.fetchone()
    conn.close()
    assert row is not None
    return row[0], row[1], row[2], row[3]


@pytest.mark.parametrize("form", ["fields", "uri", "conninfo"])
def test_a_secret_and_a_database_override_reach_that_database_with_every_parameter(
    password_pg_server: PostgresServer, drill_database: str, form: str
) -> None:
    options = "-c search_path=drill,public -c statement_timeout=4321"
    port = password_pg_server.port
    if form == "fields":
        secret = {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "username": "postgres",
            "password": AWKWARD_PASSWORD,
            "dbname": "postgres",
            "dbInstanceIdentifier": "questboard-db",
            "application_name": "qb-secret-test",
            "options": options,
            "sslmode": "disable",
        }
    elif form == "uri":
        secret = {
            "url": f"postgresql://postgres:{quote(AWKWARD_PASSWORD, safe='')}@127.0.0.1:{port}/postgres"
            f"?application_name=qb-secret-test&options={quote(options, safe='')}&sslmode=disable"
        }
    else:
        escaped = AWKWARD_PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
        secret = {
            "url": f"host=127.0.0.1 port={port} user=postgres password='{escaped}' dbname=postgres "
            f"application_name=qb-secret-test options='{options}' sslmode=disable"
        }
    deps = function_dependencies(database_secret=json.dumps(secret))
    url = deps.database_url(drill_database)
    assert session_facts(url) == (drill_database, "qb-secret-test", "drill,public", "4321ms")
    component = PostgresComponent(url)
    component.check()  # the engine connects the same way, password and all
    assert component.database == drill_database


def test_a_redis_secret_and_a_db_override_reach_that_db_with_the_password(
    fresh_password_redis: RedisServer,
) -> None:
    secret = {"host": "127.0.0.1", "port": fresh_password_redis.port, "auth_token": AWKWARD_PASSWORD, "db": 1}
    deps = function_dependencies(redis_secret=json.dumps(secret))
    url = deps.redis_url(6)
    RedisComponent(url).check()
    redis.Redis.from_url(url).set(b"landed", b"here")
    direct = redis.Redis(port=fresh_password_redis.port, password=AWKWARD_PASSWORD, db=6)
    assert direct.get(b"landed") == b"here"
    assert redis.Redis(port=fresh_password_redis.port, password=AWKWARD_PASSWORD, db=1).dbsize() == 0


# -- the CLI, as an operator runs it: a process of its own, its output and run logs searched ---------


def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """The CLI in a fresh process (nothing remembered from other tests); its stdout and stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "questboard_backup.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=env.get("QB_TEST_CWD", str(REPO)),
    )
    return result.returncode, result.stdout + result.stderr


def cli_env(deployment: Deployment, tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {**os.environ, **deployment.env, "QB_TEST_CWD": str(tmp_path)}
    for name in ("PGPASSWORD", "PGPASSFILE", "REDISCLI_AUTH", "BACKUP_ENV_FILE"):
        env.pop(name, None)
    env.update(overrides)
    return env


def run_logs(deployment: Deployment) -> str:
    logs = deployment.backup_dir / "logs"
    return "".join(path.read_text() for path in sorted(logs.glob("*.log"))) if logs.is_dir() else ""


def bad_urls(pg: PostgresServer, cache: RedisServer) -> dict[str, tuple[str, str]]:
    """Wrong passwords to the real servers and passwords to nothing listening, percent-encoded as URLs
    need, and one ``?password=`` parameter."""
    wrong = quote(WRONG_PASSWORD, safe="")
    nowhere = free_port()
    return {
        "wrong database password": (f"postgresql://postgres:{wrong}@127.0.0.1:{pg.port}/postgres", ""),
        "database nowhere": (
            f"postgresql://postgres@127.0.0.1:{nowhere}/q?password={wrong}&sslmode=disable",
            "",
        ),
        "wrong redis password": ("", f"redis://:{wrong}@127.0.0.1:{cache.port}/0"),
        "redis nowhere": ("", f"rediss://app:{wrong}@127.0.0.1:{nowhere}/0?ssl_cert_reqs=none"),
    }


@pytest.mark.parametrize(
    "case", ["wrong database password", "database nowhere", "wrong redis password", "redis nowhere"]
)
def test_no_cli_failure_shows_a_password(
    deployment: Deployment,
    password_pg_server: PostgresServer,
    password_redis_server: RedisServer,
    tmp_path: Path,
    case: str,
) -> None:
    code, out = run_cli(cli_env(deployment, tmp_path), "full")
    assert code == 0, out  # a backup of the (trusted) deployment, for the restore below
    database_url, redis_url = bad_urls(password_pg_server, password_redis_server)[case]
    bad = {name: url for name, url in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)) if url}
    env = cli_env(deployment, tmp_path, **bad)
    outputs = []
    for args, expected in (
        (["-v", "full"], 4),
        (["-v", "health"], 1),
        (["status", "--json"], 0),
        (["-v", "restore", "latest", "--only", "postgres" if database_url else "redis"], 4),
    ):
        code, out = run_cli(env, *args)
        assert code == expected, out
        outputs.append(out)
    failures = [out for out in outputs if "cannot connect" in out or "failed" in out]
    assert len(failures) >= 3, outputs  # the failures were reached, and said what failed
    assert "127.0.0.1" in failures[0]  # ...naming where, from the parsed URL
    assert_nowhere(WRONG_PASSWORD, *outputs, run_logs(deployment))


def test_restore_targets_need_no_password_on_the_command_line(
    deployment: Deployment,
    password_pg_server: PostgresServer,
    fresh_password_redis: RedisServer,
    drill_database: str,
    tmp_path: Path,
) -> None:
    code, out = run_cli(cli_env(deployment, tmp_path), "full")
    assert code == 0, out
    expected_rows = row_counts(deployment.database_url)
    expected_keys = redis_snapshot(deployment.redis_base, range(16))
    pgpass = tmp_path / "pgpass"
    escaped = AWKWARD_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    pgpass.write_text(f"127.0.0.1:{password_pg_server.port}:*:postgres:{escaped}\n")
    pgpass.chmod(0o600)
    target = f"postgresql://postgres@127.0.0.1:{password_pg_server.port}"
    redis_target = f"redis://127.0.0.1:{fresh_password_redis.port}/0"
    runs = [
        # libpq reads PGPASSWORD: psycopg2 and the pg_restore processes alike
        ({"PGPASSWORD": AWKWARD_PASSWORD}, ["--to-database-url", f"{target}/{drill_database}"]),
        # ...or the password file
        ({"PGPASSFILE": str(pgpass)}, ["--to-database-url", f"{target}/{drill_database}_pgpass"]),
        # ...or a variable the operator names
        (
            {"QB_DRILL_PW": AWKWARD_PASSWORD},
            [
                "--to-database-url",
                f"{target}/{drill_database}_named",
                "--to-database-password-env",
                "QB_DRILL_PW",
            ],
        ),
    ]
    outputs = []
    for extra, args in runs:
        code, out = run_cli(
            cli_env(deployment, tmp_path, **extra), "restore", "latest", "--only", "postgres", *args
        )
        assert code == 0, out
        outputs.append(out)
        restored = args[1].rsplit("/", 1)[1]
        assert row_counts(f"{password_pg_server.url(restored)}") == expected_rows
    for extra, args in (
        ({"REDISCLI_AUTH": AWKWARD_PASSWORD}, []),
        ({"QB_CACHE_PW": AWKWARD_PASSWORD}, ["--to-redis-password-env", "QB_CACHE_PW"]),
    ):
        redis.Redis(port=fresh_password_redis.port, password=AWKWARD_PASSWORD).flushall()
        code, out = run_cli(
            cli_env(deployment, tmp_path, **extra),
            "restore",
            "latest",
            "--only",
            "redis",
            "--to-redis-url",
            redis_target,
            *args,
        )
        assert code == 0, out
        outputs.append(out)
        assert redis_snapshot(fresh_password_redis.url(), range(16)) == expected_keys
    assert_nowhere(AWKWARD_PASSWORD, *outputs, run_logs(deployment))


def test_without_a_password_anywhere_the_restore_is_refused_by_the_server_in_one_line(
    deployment: Deployment, password_pg_server: PostgresServer, tmp_path: Path
) -> None:
    code, out = run_cli(cli_env(deployment, tmp_path), "full")
    assert code == 0, out
    target = f"postgresql://postgres@127.0.0.1:{password_pg_server.port}/never_created"
    code, out = run_cli(
        cli_env(deployment, tmp_path), "restore", "latest", "--only", "postgres", "--to-database-url", target
    )
    assert code == 4, out
    assert "cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1" in out
    assert "Traceback" not in out
    code, out = run_cli(
        cli_env(deployment, tmp_path),
        "restore",
        "latest",
        "--to-database-url",
        target,
        "--to-database-password-env",
        "QB_UNSET",
    )
    assert code == 2 and "QB_UNSET" in out, out


def test_backup_sh_restore_help_says_where_target_passwords_come_from() -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "backup.sh"), "restore", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    for name in (
        "--to-database-password-env",
        "--to-redis-password-env",
        "PGPASSWORD",
        ".pgpass",
        "REDISCLI_AUTH",
    ):
        assert name in done.stdout


def test_tls_settings_from_field_form_secrets_reach_the_connections(
    password_pg_server: PostgresServer, drill_database: str, tmp_path: Path
) -> None:
    """The test servers speak no TLS: a connection that insists on it is refused, which shows the
    setting got as far as libpq and redis-py, through the database and db overrides."""
    from questboard_backup.errors import SourceUnreachableError

    missing_ca = tmp_path / "no-such-rds-ca.pem"
    base = {
        "host": "127.0.0.1",
        "port": password_pg_server.port,
        "username": "postgres",
        "dbname": "postgres",
    }
    cases = [
        ({**base, "password": AWKWARD_PASSWORD, "sslmode": "require"}, "SSL"),
        (
            {**base, "password": AWKWARD_PASSWORD, "sslmode": "verify-full", "sslrootcert": str(missing_ca)},
            str(missing_ca),
        ),
        ({**base, "password": AWKWARD_PASSWORD, "ssl": True}, "SSL"),
    ]
    for secret, expected in cases:
        url = function_dependencies(database_secret=json.dumps(secret)).database_url(drill_database)
        with pytest.raises(SourceUnreachableError) as caught:
            PostgresComponent(url).check()
        assert expected in str(caught.value)
        assert_nowhere(AWKWARD_PASSWORD, str(caught.value))
    plain = {**base, "password": AWKWARD_PASSWORD, "sslmode": "disable"}
    PostgresComponent(
        function_dependencies(database_secret=json.dumps(plain)).database_url(drill_database)
    ).check()

    # Redis waits for a whole command, so a TLS hello to a plain Redis would only time out: a server
    # that hangs up at once on anything it cannot read (PostgreSQL's port) shows the TLS attempt.
    cache = {"host": "127.0.0.1", "port": password_pg_server.port, "password": AWKWARD_PASSWORD}
    for fields, tls in (({}, False), ({"transit_encryption_enabled": True, "ssl_cert_reqs": "none"}, True)):
        url = function_dependencies(redis_secret=json.dumps({**cache, **fields})).redis_url(3)
        with pytest.raises(SourceUnreachableError) as refused:
            RedisComponent(url).check()
        message = str(refused.value)
        assert message.startswith(f"cannot connect to Redis at {'rediss' if tls else 'redis'}://127.0.0.1:")
        assert f":{password_pg_server.port}/3:" in message and ("SSL" in message) is tls
        assert_nowhere(AWKWARD_PASSWORD, message)


def test_a_backup_of_a_password_less_database_url_takes_the_password_from_pgpassword(
    deployment: Deployment, password_pg_server: PostgresServer, drill_database: str, tmp_path: Path
) -> None:
    from tests.dataset import load_postgres

    load_postgres(password_pg_server.url(drill_database))
    database_url = f"postgresql://postgres@127.0.0.1:{password_pg_server.port}/{drill_database}"
    env = cli_env(deployment, tmp_path, DATABASE_URL=database_url, PGPASSWORD=AWKWARD_PASSWORD)
    code, out = run_cli(env, "full", "--json")  # pg_dump's processes and psycopg2 alike
    assert code == 0, out
    assert json.loads(out)["components"]["postgres"]["raw_bytes"] > 0
    env.pop("PGPASSWORD")
    code, out = run_cli(env, "full")
    assert code == 4 and "no password supplied" in out, out
    assert_nowhere(AWKWARD_PASSWORD, out, run_logs(deployment))
