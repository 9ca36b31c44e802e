"""Verification facts about a PostgreSQL database, all read in one exported snapshot: exact rows per
table, large objects, encoding, locale, owner and the roles its objects name. The dump records them;
the restore checks them."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from questboard_backup.errors import SourceError
from questboard_backup.sources.base import Facts
from questboard_backup.sources.postgres.tools import first_line

CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class Table:
    key: str
    schema: str
    name: str
    pages: int


@contextlib.contextmanager
def failing_as(what: str) -> Iterator[None]:
    """Turns a database error into a one-line SourceError (a lost connection, a refused statement)."""
    try:
        yield
    except psycopg2.Error as error:
        raise SourceError(f"{what}: {first_line(error)}") from None


#: How long the exporting session waits for a table another session holds exclusively (a running DDL).
SNAPSHOT_LOCK_WAIT = "60s"
#: How long pg_dump and the row counters wait for a table lock: they can only be kept waiting by DDL
#: queued behind the exporting session's own locks, which would never get through before the dump ends.
WORKER_LOCK_WAIT = "10s"


class NamedTable(Protocol):
    @property
    def schema(self) -> str: ...

    @property
    def name(self) -> str: ...


def only(table: NamedTable) -> sql.Composed:
    """``ONLY "schema"."table"``: the table itself, without inheritance children."""
    return sql.SQL("ONLY {}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))


def lock_statement(tables: Sequence[NamedTable]) -> sql.Composed:
    """``LOCK TABLE ONLY ... IN ACCESS SHARE MODE`` on every table, the lock pg_dump takes on what it
    dumps: reading goes on, but no TRUNCATE or table rewrite can commit until the transaction ends."""
    return sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(sql.SQL(", ").join(map(only, tables)))


def begin_snapshot(
    conn: Connection, cur: Cursor, lock: Sequence[Table] = (), lock_wait: str = SNAPSHOT_LOCK_WAIT
) -> str:
    """Open a read-only repeatable-read transaction and export its snapshot.

    ``lock`` tables are locked (``ACCESS SHARE``, as pg_dump does) before the snapshot is taken and
    stay locked until the transaction ends, so no TRUNCATE or table rewrite can commit between the
    snapshot and the dumps that read it (which would show them an empty table).
    """
    conn.autocommit = True
    unlimited(cur)
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if lock:
        cur.execute("SET LOCAL lock_timeout = %s", (lock_wait,))
        # LOCK takes no snapshot: the transaction's snapshot is the export's, after every lock is held.
        cur.execute(lock_statement(lock))
    cur.execute("SELECT pg_export_snapshot()")
    return str(one(cur)[0])


def unlimited(cur: Cursor) -> None:
    # A role's statement or idle timeout would cut a long dump short; pg_dump lifts them for itself too.
    cur.execute("SET statement_timeout = 0")
    cur.execute("SET idle_in_transaction_session_timeout = 0")


def list_tables(cur: Cursor) -> list[Table]:
    """Tables holding rows of their own: partitions but not their parents, no system or extension tables
    (an extension re-creates its tables, and pg_dump does not dump their rows)."""
    cur.execute(
        "SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, c.relpages "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
        "AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1"
    )
    return [Table(key, schema, name, int(pages)) for key, schema, name, pages in cur.fetchall()]


def table_sizes(cur: Cursor, tables: Sequence[Table]) -> dict[str, int]:
    """Bytes per table (keyed like ``Table.key``), to balance dump streams. Run it in the transaction
    that locked the tables (``begin_snapshot``): the sizes then wait for no other session."""
    cur.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname), coalesce(pg_table_size(c.oid), 0) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s::regclass[])",
        ([table.key for table in tables],),
    )
    return {str(key): int(size) for key, size in cur.fetchall()}


def index_tables(cur: Cursor) -> dict[str, str]:
    """Each index of a user table (``schema.index``) and its table (``schema.table``), named as
    ``pg_restore --list`` names them, so a restore can build an index as soon as its table's rows are in."""
    cur.execute(
        "SELECT n.nspname || '.' || i.relname, tn.nspname || '.' || t.relname "
        "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace "
        "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace "
        "WHERE t.relkind = 'r' AND tn.nspname <> 'information_schema' AND tn.nspname NOT LIKE 'pg\\_%' "
        "ORDER BY 1"
    )
    return {str(index): str(table) for index, table in cur.fetchall()}


def foreign_keys(cur: Cursor) -> dict[str, list[str]]:
    """Each foreign key between plain tables, by its listing tag (``schema table name``), with its table
    and the table it references (``schema.table``), so a restore can add it once both are in."""
    cur.execute(
        "SELECT n.nspname || ' ' || t.relname || ' ' || c.conname, n.nspname || '.' || t.relname, "
        "rn.nspname || '.' || r.relname "
        "FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace "
        "WHERE c.contype = 'f' AND t.relkind = 'r' AND r.relkind = 'r' ORDER BY 1"
    )
    return {str(tag): [str(table), str(referenced)] for tag, table, referenced in cur.fetchall()}


def database_facts(cur: Cursor) -> Facts:
    cur.execute("SELECT current_setting('server_version_num')::int")
    version_num = int(one(cur)[0])
    # datlocprovider arrived in 15; its locale column, daticulocale, became datlocale in 17.
    locale = {17: "d.datlocprovider::text, d.datlocale", 15: "d.datlocprovider::text, d.daticulocale"}
    columns = locale[17] if version_num >= 170000 else locale[15] if version_num >= 150000 else "'c', NULL"
    cur.execute(
        "SELECT split_part(current_setting('server_version'), ' ', 1), current_database(), "
        "pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, pg_get_userbyid(d.datdba), "
        f"{columns}, (SELECT count(*) FROM pg_largeobject_metadata) "
        "FROM pg_database d WHERE d.datname = current_database()"
    )
    version, database, encoding, collate, ctype, owner, provider, locale_name, large_objects = one(cur)
    facts: Facts = {
        "version": version,
        "database": database,
        "encoding": encoding,
        "collate": collate,
        "ctype": ctype,
        "owner": owner,
        "large_objects": int(large_objects),
    }
    if provider in ("i", "b"):
        facts.update(locale_provider="icu" if provider == "i" else "builtin", locale=locale_name)
    facts["roles"] = database_roles(cur)
    return facts


def _user_objects(catalog: str, alias: str, schema_column: str) -> str:
    """The condition that a row of ``catalog`` is a user object: in a user schema (``schema_column``)
    and not part of an extension (which CREATE EXTENSION re-creates, owned by whoever runs it)."""
    return (
        f"{schema_column} IN (SELECT oid FROM user_schemas) AND NOT EXISTS (SELECT 1 FROM pg_depend d "
        f"WHERE d.classid = '{catalog}'::regclass AND d.objid = {alias}.oid AND d.deptype = 'e')"
    )


# Owners and privileges of what pg_dump restores as dumped: the database, schemas, relations, columns,
# functions, types (not the array and row types, which follow their element type or table), large
# objects and default privileges; and the roles row security policies apply to.
_ROLES = f"""
WITH user_schemas AS (
    SELECT oid FROM pg_namespace WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'
), objects (owner, acl) AS (
    SELECT datdba, NULL::aclitem[] FROM pg_database WHERE datname = current_database()
    UNION ALL SELECT n.nspowner, n.nspacl FROM pg_namespace n WHERE {_user_objects("pg_namespace", "n", "n.oid")}
    UNION ALL SELECT c.relowner, c.relacl FROM pg_class c
        WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f') AND {_user_objects("pg_class", "c", "c.relnamespace")}
    UNION ALL SELECT NULL, a.attacl FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE a.attacl IS NOT NULL AND {_user_objects("pg_class", "c", "c.relnamespace")}
    UNION ALL SELECT p.proowner, p.proacl FROM pg_proc p WHERE {_user_objects("pg_proc", "p", "p.pronamespace")}
    UNION ALL SELECT t.typowner, t.typacl FROM pg_type t WHERE {_user_objects("pg_type", "t", "t.typnamespace")}
        AND NOT EXISTS (SELECT 1 FROM pg_depend d
            WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'i')
    UNION ALL SELECT lomowner, lomacl FROM pg_largeobject_metadata
    UNION ALL SELECT defaclrole, defaclacl FROM pg_default_acl
), named (role) AS (
    SELECT owner FROM objects
    UNION SELECT (aclexplode(acl)).grantee FROM objects
    UNION SELECT (aclexplode(acl)).grantor FROM objects
    UNION SELECT unnest(polroles) FROM pg_policy
)
SELECT DISTINCT pg_get_userbyid(role)::text FROM named
WHERE role <> 0 AND pg_get_userbyid(role) NOT LIKE 'pg\\_%' ORDER BY 1
"""


def database_roles(cur: Cursor) -> list[str]:
    """The roles a restore of this database expects on its server: the owners of its objects and
    every role their privileges are granted to or by, sorted. PUBLIC (role 0) and the built-in
    ``pg_`` roles, which every server has, are left out."""
    cur.execute(_ROLES)
    return [str(role) for (role,) in cur.fetchall()]


def describe_roles(facts: Mapping[str, Any]) -> str | None:
    """``roles: app_owner, app_reader, questboard``: the roles the backup expects on the target server,
    quoted where SQL would quote them; None when the facts (of an older backup) do not record them."""
    roles = facts.get("roles")
    if roles is None:
        return None
    return "roles: " + (", ".join(_quoted(str(role)) for role in roles) or "none")


def describe_for_verify(facts: Mapping[str, Any]) -> str | None:
    """What ``verify`` tells of a PostgreSQL set before a restore: its roles, or for a backup taken
    before roles were recorded, the database owner."""
    roles = describe_roles(facts)
    if roles is None and facts.get("owner"):
        return f"database owner {_quoted(str(facts['owner']))} (roles not recorded)"
    return roles


def _quoted(role: str) -> str:
    return role if re.fullmatch(r"[a-z_][a-z0-9_$]*", role) else '"' + role.replace('"', '""') + '"'


class RowCounter:
    """Counts rows on up to ``jobs`` connections of its own, in one exported snapshot.

    Each connection locks its tables up front, as pg_dump does, so that a table rewritten by concurrent
    DDL cannot look empty to the older snapshot, and commits as soon as it is done.
    """

    def __init__(self, params: Mapping[str, str], jobs: int, snapshot: str) -> None:
        self._params, self._jobs, self._snapshot = dict(params), jobs, snapshot
        self._futures: list[Future[dict[str, int]]] = []
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="qb-pg-count")

    def __enter__(self) -> RowCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        """Cancel the queries still running (a failed dump) and wait for the threads."""
        with self._lock:
            self._closing = True
            for conn in self._connections:
                with contextlib.suppress(psycopg2.Error):
                    conn.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def start(self, tables: Sequence[Table]) -> None:
        # Largest first onto the least loaded connection: the biggest tables set the pace.
        groups: list[list[Table]] = [[] for _ in range(min(self._jobs, len(tables)))]
        loads = [0] * len(groups)
        for table in sorted(tables, key=lambda t: -t.pages):
            lightest = loads.index(min(loads))
            groups[lightest].append(table)
            loads[lightest] += table.pages + 1
        self._futures = [self._pool.submit(self._count, group) for group in groups]

    def result(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            for future in self._futures:
                counts.update(future.result())
        except psycopg2.Error as error:
            database = self._params["dbname"]
            raise SourceError(f"cannot count rows in {database}: {first_line(error)}") from None
        return dict(sorted(counts.items()))

    def _count(self, tables: Sequence[Table]) -> dict[str, int]:
        conn = psycopg2.connect(**self._params, connect_timeout=CONNECT_TIMEOUT)
        with self._lock:
            self._connections.add(conn)
            closing = self._closing
        try:
            if closing:
                return {}
            with conn.cursor() as cur:
                conn.autocommit = True
                unlimited(cur)
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur.execute("SET TRANSACTION SNAPSHOT %s", (self._snapshot,))
                cur.execute("SET LOCAL lock_timeout = %s", (WORKER_LOCK_WAIT,))
                cur.execute(lock_statement(tables))
                counts = {}
                for table in tables:
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(only(table)))
                    counts[table.key] = int(one(cur)[0])
                cur.execute("COMMIT")
                return counts
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()


def one(cur: Cursor) -> tuple[Any, ...]:
    row = cur.fetchone()
    if row is None:
        raise SourceError("postgres: a query expected to return a row returned none")
    return tuple(row)
