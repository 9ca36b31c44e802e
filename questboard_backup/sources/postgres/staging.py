"""The staging database a restore fills: created like the backed-up database and checked against the
dump's facts before ``swap`` renames it into the target's place."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from questboard_backup.errors import RestoreVerificationError, SourceError
from questboard_backup.sources.postgres.facts import (
    RowCounter,
    begin_snapshot,
    failing_as,
    list_tables,
    one,
    unlimited,
)
from questboard_backup.sources.postgres.tools import Cancel, first_line

logger = logging.getLogger(__name__)

MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer database names


def derived_name(target: str, suffix: str) -> str:
    """``target`` + ``suffix``; where the whole would be too long a name, ``target`` is cut short and
    followed by ``_`` and 8 hex digits of its SHA-256, so targets cut to the same bytes still differ."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    if len(target.encode()) <= room:
        return target + suffix
    tag = "_" + hashlib.sha256(target.encode()).hexdigest()[:8]
    return target.encode()[: room - len(tag)].decode("utf-8", "ignore") + tag + suffix


def create_staging(admin: Connection, staging: str, facts: Mapping[str, Any]) -> None:
    """``CREATE DATABASE staging`` with the encoding, locale and owner of the backed-up database."""
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Identifier(staging),
        sql.Literal(facts["encoding"]),
        sql.Literal(facts["collate"]),
        sql.Literal(facts["ctype"]),
    )
    provider = facts.get("locale_provider")
    if provider in ("icu", "builtin"):
        locale_option = "ICU_LOCALE" if provider == "icu" else "BUILTIN_LOCALE"
        statement += sql.SQL(" LOCALE_PROVIDER {} {} {}").format(
            sql.SQL(provider), sql.SQL(locale_option), sql.Literal(facts["locale"])
        )
    if facts.get("owner"):
        statement += sql.SQL(" OWNER {}").format(sql.Identifier(facts["owner"]))
    try:
        with admin.cursor() as cur:
            cur.execute(statement)
    except psycopg2.Error as error:
        raise SourceError(f"cannot create staging database {staging}: {first_line(error)}") from None
    logger.info("postgres staging database created staging=%s", staging)


def count_rows(
    connect: Callable[[], Connection], staging: str, names: Sequence[tuple[str, str]], cancel: Cancel
) -> dict[str, int]:
    """Rows of the (schema, table) pairs in the staging database, keyed like the facts; a pair that
    does not name a table (a listing's names are split on spaces) is left to ``verify_staging``. A
    cancelled restore cancels the count running (on a large table it takes minutes)."""
    counts: dict[str, int] = {}
    with contextlib.closing(connect()) as conn, conn.cursor() as cur:
        conn.autocommit = True
        unlimited(cur)
        cancel.watch(conn, conn.cancel)
        try:
            for schema, name in names:
                query = sql.SQL("SELECT format('%I.%I', {}, {}), count(*) FROM ONLY {}.{}").format(
                    sql.Literal(schema), sql.Literal(name), sql.Identifier(schema), sql.Identifier(name)
                )
                cancel.check()
                try:
                    cur.execute(query)
                except psycopg2.errors.UndefinedTable:
                    continue
                except psycopg2.Error as error:
                    cancel.check()
                    raise SourceError(f"cannot count rows in {staging}: {first_line(error)}") from None
                key, count = one(cur)
                counts[str(key)] = int(count)
        finally:
            cancel.untrack(conn)
    return counts


def verify_staging(
    connect: Callable[[], Connection],
    params: Mapping[str, str],
    jobs: int,
    facts: Mapping[str, Any],
    counted: Mapping[str, int],
) -> int:
    """Compare the staging database with the facts (``counted``: rows already counted as the tables
    came in); raises before anything is swapped. ``connect`` opens a session on it; the row counters
    connect with ``params`` (its connection parameters), up to ``jobs`` at once."""
    staging = params["dbname"]
    failed = failing_as(f"cannot check restored database {staging}")
    with contextlib.closing(connect()) as conn, failed, conn.cursor() as cur:
        snapshot = begin_snapshot(conn, cur)
        cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
        large_objects = int(one(cur)[0])
        with RowCounter(params, jobs, snapshot) as counter:
            counter.start([table for table in list_tables(cur) if table.key not in counted])
            counts = {**counted, **counter.result()}
        cur.execute("COMMIT")
        expected: Mapping[str, int] = facts["tables"]
        for key in sorted(expected):
            if counts.get(key) != expected[key]:
                got = f"{counts[key]} rows" if key in counts else "no such table"
                raise RestoreVerificationError(
                    f"restored database {staging} does not match the backup: table {key} expected "
                    f"{expected[key]} rows, got {got}; nothing was replaced"
                )
        if large_objects != facts["large_objects"]:
            raise RestoreVerificationError(
                f"restored database {staging} does not match the backup: expected "
                f"{facts['large_objects']} large objects, got {large_objects}; nothing was replaced"
            )
        # pg_restore leaves no planner statistics, and without them the first queries after the swap
        # crawl. A coarse pass (vacuumdb --analyze-in-stages' middle stage: a 10-value sample target,
        # a sixth of the default's time) gives row counts and histograms at once; autovacuum then
        # re-analyzes every restored table at full detail on its own, as all their rows are new.
        cur.execute("SET default_statistics_target = 10")
        cur.execute("ANALYZE")
        cur.execute("RESET default_statistics_target")
    rows = sum(expected.values())
    logger.info("postgres staging verified staging=%s tables=%d rows=%d", staging, len(expected), rows)
    return rows


def drop_database(cur: Cursor, database: str) -> None:
    """Drop ``database`` if it exists: first closed to new sessions, so a loader still running (a
    restore being interrupted) cannot connect again between FORCE ending its sessions and the drop."""
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
    if cur.fetchone() is None:
        return
    cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(database)))
    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def drop_quietly(admin: Connection, staging: str) -> None:
    """Drop the staging database after a failure, without hiding that failure."""
    try:
        with admin.cursor() as cur:
            drop_database(cur, staging)
        logger.info("postgres staging database dropped staging=%s", staging)
    except psycopg2.Error as error:
        logger.warning("postgres staging drop failed staging=%s error=%s", staging, first_line(error))
