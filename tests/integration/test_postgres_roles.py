"""Roles come back with the database: a backup carries the cluster's roles, and a restore into a brand-new
PostgreSQL cluster creates them before the database, so that every object's owner and grants match the
source; what the restoring role may not grant is left out with a warning, and existing roles are left
as they are."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from questboard_backup.errors import IntegrityError
from questboard_backup.sources.base import RestoreOptions
from questboard_backup.sources.postgres.component import PostgresComponent
from questboard_backup.sources.postgres.roles import read_roles, split_setting_list
from tests.integration.test_postgres_component import Backup, backup, create_database, flip, opener, session
from tests.servers import PostgresServer

TIMESTAMP = "20240102_030405"
_numbers = itertools.count()


@dataclass
class Source:
    url: str
    roles: dict[str, str]  # what the role is for -> its name
    backup: Backup


@pytest.fixture
def new_cluster() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of its own, fresh from initdb: none of the source's roles exist there."""
    server = PostgresServer.in_new_folder().start()
    yield server
    server.stop()


def make_source(pg: PostgresServer, boss_attributes: str = "") -> Iterator[Source]:
    """A database owned by a role that is no superuser, its objects granted to other roles, and those
    roles' memberships and settings; backed up as the engine does (with its further parts)."""
    suffix = f"{os.getpid()}_{next(_numbers)}"
    roles = {kind: f"qb_{kind}_{suffix}" for kind in ("owner", "reader", "app", "auditor", "boss")}
    owner, reader, app, auditor, boss = roles.values()
    with session(pg.url()) as cur:
        cur.execute(
            f"CREATE ROLE {owner}; CREATE ROLE {reader}; "
            f"CREATE ROLE {app} LOGIN PASSWORD 's3cret-app' CONNECTION LIMIT 7 VALID UNTIL '2100-01-01 00:00:00+00' "
            f"IN ROLE {reader}; "
            f"CREATE ROLE {auditor} NOINHERIT LOGIN; GRANT {reader} TO {auditor} WITH ADMIN OPTION; "
            f"""ALTER ROLE {app} SET search_path = "$user", public, "Guild Hall"; """
            f"ALTER ROLE {app} SET statement_timeout = '5s'; "
            f"CREATE ROLE {boss} {boss_attributes}; GRANT {owner} TO {boss}"
        )
    name = f"qb_roles_source_{suffix}"
    url = create_database(pg, name)
    with session(pg.url()) as cur:
        cur.execute(f'ALTER DATABASE "{name}" OWNER TO {owner}')
    with session(url) as cur:
        cur.execute(
            f"CREATE SCHEMA guild AUTHORIZATION {owner}; GRANT USAGE ON SCHEMA guild TO {reader}; "
            "CREATE TABLE guild.quests (id int PRIMARY KEY, title text, secret text); "
            "INSERT INTO guild.quests VALUES (1, 'slay', 'x'), (2, 'fetch', 'y'); "
            f"ALTER TABLE guild.quests OWNER TO {owner}; GRANT SELECT ON guild.quests TO {reader}; "
            f"GRANT SELECT (id, title) ON guild.quests TO {auditor}; "
            f"GRANT INSERT, UPDATE ON guild.quests TO {app} WITH GRANT OPTION; "
            "CREATE SEQUENCE guild.ids; "
            f"ALTER SEQUENCE guild.ids OWNER TO {owner}; GRANT USAGE ON SEQUENCE guild.ids TO {app}; "
            "CREATE VIEW guild.open_quests AS SELECT id, title FROM guild.quests; "
            f"ALTER VIEW guild.open_quests OWNER TO {owner}; GRANT SELECT ON guild.open_quests TO {app}; "
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA guild GRANT SELECT ON TABLES TO {reader}"
        )
    yield Source(url, roles, backup(PostgresComponent(url), parts=True))
    with session(pg.url()) as cur:
        cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for role in roles.values():
            cur.execute(f"DROP ROLE {role}")


@pytest.fixture
def source(pg_server: PostgresServer) -> Iterator[Source]:
    yield from make_source(pg_server)


@pytest.fixture
def source_with_a_superuser(pg_server: PostgresServer) -> Iterator[Source]:
    yield from make_source(pg_server, "SUPERUSER LOGIN")


def restore(url: str, taken: Backup) -> dict[str, Any]:
    return PostgresComponent(url).restore(
        opener(taken.stored, taken.stats, taken.parts), taken.facts, RestoreOptions(TIMESTAMP)
    )


def owners_and_grants(url: str) -> list[tuple[Any, ...]]:
    """The owner and privileges of the database, every user schema, relation and column, and the
    default privileges, by name (the database's own name left out)."""
    with session(url) as cur:
        cur.execute(
            "SELECT 'database', '', pg_get_userbyid(datdba), datacl::text FROM pg_database "
            "WHERE datname = current_database() "
            "UNION ALL SELECT 'schema', nspname, pg_get_userbyid(nspowner), nspacl::text FROM pg_namespace "
            "WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' "
            "UNION ALL SELECT 'relation', n.nspname || '.' || c.relname, pg_get_userbyid(c.relowner), c.relacl::text "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'guild' "
            "UNION ALL SELECT 'column', c.relname || '.' || a.attname, NULL, a.attacl::text FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'guild' AND a.attacl IS NOT NULL "
            "UNION ALL SELECT 'default', pg_get_userbyid(defaclrole), NULL, defaclacl::text FROM pg_default_acl "
            "ORDER BY 1, 2"
        )
        return [tuple(row) for row in cur.fetchall()]


def roles_of(url: str, names: list[str]) -> dict[str, Any]:
    """Attributes, settings and memberships of the named roles."""
    with session(url) as cur:
        cur.execute(
            "SELECT rolname, rolsuper, rolinherit, rolcanlogin, rolconnlimit, rolvaliduntil, "
            "(SELECT setconfig FROM pg_db_role_setting WHERE setrole = r.oid AND setdatabase = 0) "
            "FROM pg_roles r WHERE rolname = ANY(%s) ORDER BY 1",
            (names,),
        )
        attributes = [tuple(row) for row in cur.fetchall()]
        cur.execute(
            "SELECT r.rolname, u.rolname, m.admin_option FROM pg_auth_members m "
            "JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
            "WHERE r.rolname = ANY(%s) AND u.rolname = ANY(%s) ORDER BY 1, 2",
            (names, names),
        )
        return {"attributes": attributes, "memberships": [tuple(row) for row in cur.fetchall()]}


def test_a_restore_into_a_new_cluster_brings_the_roles_and_every_owner_and_grant_matches(
    pg_server: PostgresServer, source: Source, new_cluster: PostgresServer
) -> None:
    target = new_cluster.url("quest_board")
    names = list(source.roles.values())
    with session(new_cluster.url()) as cur:  # already there: left as it is
        cur.execute(f"CREATE ROLE {source.roles['reader']} LOGIN CONNECTION LIMIT 2")

    restore(target, source.backup)

    assert owners_and_grants(target) == owners_and_grants(source.url)
    created = [name for name in names if name != source.roles["reader"]]
    assert roles_of(target, created) == roles_of(source.url, created)
    assert roles_of(target, names)["memberships"] == roles_of(source.url, names)["memberships"]
    with session(new_cluster.url()) as cur:
        cur.execute(
            "SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = %s", (source.roles["reader"],)
        )
        assert cur.fetchone() == (True, 2)
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (source.roles["app"],))
        assert cur.fetchone() == (None,)  # passwords never travel
    with session(target) as cur:
        cur.execute("SELECT count(*) FROM guild.quests")
        assert cur.fetchone() == (2,)


def test_the_roles_part_holds_no_password(pg_server: PostgresServer, source: Source) -> None:
    with session(source.url) as cur:
        document = read_roles(cur)

    assert source.roles["app"].encode() in document
    assert b"s3cret-app" not in document and b"SCRAM-SHA-256" not in document and b"md5" not in document


def test_a_restoring_role_that_is_no_superuser_leaves_out_superuser_with_a_warning(
    source_with_a_superuser: Source, new_cluster: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    source = source_with_a_superuser
    boss = source.roles["boss"]
    with session(new_cluster.url()) as cur:  # as on RDS: the master user can create roles and databases
        cur.execute("CREATE ROLE qb_master LOGIN CREATEDB CREATEROLE")
    target = f"postgresql://qb_master@127.0.0.1:{new_cluster.port}/quest_board"
    caplog.set_level(logging.WARNING, logger="questboard_backup.sources.postgres.roles")

    restore(target, source.backup)

    skipped = [r.getMessage() for r in caplog.records if "role attributes skipped" in r.getMessage()]
    assert skipped == [
        f"postgres role attributes skipped role={boss} attributes=SUPERUSER reason=not allowed to the restoring role"
    ]
    with session(new_cluster.url()) as cur:
        cur.execute("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = %s", (boss,))
        assert cur.fetchone() == (False, True)
    assert owners_and_grants(target) == owners_and_grants(source.url)


def test_a_backup_without_roles_still_restores(
    pg_server: PostgresServer, source: Source, fresh_database: str
) -> None:
    facts = {key: value for key, value in source.backup.facts.items() if key != "roles_part"}
    parts = (
        source.backup.parts[: facts["roles_part"] - 1] if "roles_part" in facts else source.backup.parts[:-1]
    )
    target = pg_server.url(fresh_database.rsplit("/", 1)[1] + "_old")

    PostgresComponent(target).restore(
        opener(source.backup.stored, source.backup.stats, parts), facts, RestoreOptions(TIMESTAMP)
    )

    assert owners_and_grants(target) == owners_and_grants(source.url)


@pytest.mark.parametrize(
    ("stored", "elements"),
    [
        ('"$user", public, "Guild Hall"', ["$user", "public", "Guild Hall"]),
        ('"say ""hi""",x', ['say "hi"', "x"]),
        ('""', [""]),
        ("", []),
    ],
)
def test_a_list_setting_is_split_as_postgres_splits_it(stored: str, elements: list[str]) -> None:
    assert split_setting_list(stored) == elements


def test_a_damaged_roles_part_fails_the_restore_before_any_role_or_database_is_created(
    source: Source, new_cluster: PostgresServer
) -> None:
    taken = source.backup
    roles_stream, stats = taken.parts[taken.facts["roles_part"] - 1]
    parts = [*taken.parts[:-1], (flip(roles_stream, len(roles_stream) - 20), stats)]

    with pytest.raises(IntegrityError, match="failed authentication"):
        PostgresComponent(new_cluster.url("quest_board")).restore(
            opener(taken.stored, taken.stats, parts), taken.facts, RestoreOptions(TIMESTAMP)
        )

    with session(new_cluster.url()) as cur:
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(source.roles.values()),))
        assert cur.fetchone() == (0,)
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'quest_board%'")
        assert cur.fetchall() == []
