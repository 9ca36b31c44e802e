"""Copy parts: the rows of large tables as PostgreSQL binary ``COPY``, one part stream per group.

``pg_dump`` writes and ``pg_restore`` reads table rows as text, one message per row; binary ``COPY``
skips formatting and parsing every timestamp and number, which halves both the dump and the load of a
large table (measured on the bench's largest table: loaded in 1.8 s instead of 3.6 s). Binary values
are only portable where their type is the same in both databases, so a table goes to a copy part only
when each of its columns (and array element) has a built-in base, range or multirange type (``oid`` <
10000, the same in every PostgreSQL version) with binary input and output, and is neither an object id
(the ``reg*`` types) nor ``xml`` (whose binary output depends on the session's encoding): no enums,
domains, composites or extension types, whose ids differ from one database to the next. Other tables
stay in ``pg_dump``'s archives. Text travels in the database's encoding (both sides set
``client_encoding`` to it, whatever a role, URL or ``PGCLIENTENCODING`` asks for).

A part's plaintext::

    QBCOPY1\\n
    then per table:  frame(header JSON: key, schema, name, columns)  frame(data)...  frame(empty)

where a frame is a 4-byte big-endian length and that many bytes. The data is ``psql``'s
``COPY ... TO STDOUT (FORMAT binary)`` output as it came, in the backup's exported snapshot. After its
last table the session reports how many rows each ``COPY`` wrote, as the server counted them while it
scanned (``pg_stat_get_xact_tuples_returned``: the rows a scan of the table returned in this
transaction, which is only the ``COPY``): the backup's row counts for these tables cost no second scan.
That count exists only while ``track_counts`` is on (the default); when it is off, the backup counts
these tables with ``count(*)`` like the others. The
restore feeds it to ``COPY ... FROM STDIN (FORMAT binary, FREEZE)`` on a connection of its own,
in the transaction that emptied the new table (so its rows are written frozen: no hint bits to set
and no freezing vacuum later), and takes the server's count of the rows loaded.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from questboard_backup.errors import IntegrityError, SourceError
from questboard_backup.sources.postgres.facts import lock_statement
from questboard_backup.sources.postgres.tools import Cancel, first_line

MAGIC = b"QBCOPY1\n"
_LENGTH = struct.Struct(">I")
#: psycopg2 sends what each read returns as one CopyData message.
LOAD_READ_SIZE = 64 * 1024
#: FirstGenbkiObjectId: the types below it are built into PostgreSQL with the same id in every version
#: (those from 10000 up, such as information_schema's, are numbered when a cluster is created).
FIRST_USER_OID = 10000
#: A rows report is one JSON line with a number per table: far below this.
MAX_REPORT_BYTES = 64 * 1024


@dataclass(frozen=True)
class CopyTable:
    key: str  # schema.table as format('%I.%I') writes it (the facts' key)
    schema: str
    name: str
    columns: tuple[str, ...]

    def header(self) -> bytes:
        fields = {"key": self.key, "schema": self.schema, "name": self.name, "columns": list(self.columns)}
        return json.dumps(fields, ensure_ascii=False).encode()


def binary_columns(cur: Cursor, keys: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The tables among ``keys`` whose rows can travel as binary COPY, each with its columns in order
    (generated columns left out: COPY computes them again). Needs PostgreSQL 12 or newer."""
    cur.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname), array_agg(a.attname::text ORDER BY a.attnum), "
        "bool_and(t.oid < %(first)s AND t.typtype IN ('b', 'r', 'm') AND t.typsend <> 0 AND t.typreceive <> 0 "
        " AND t.typname !~ '^_?(reg|xml$)' AND (t.typelem = 0 OR e.oid < %(first)s "
        " AND e.typtype IN ('b', 'r', 'm') AND e.typsend <> 0 AND e.typreceive <> 0 AND e.typname !~ '^(reg|xml$)')) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        " AND a.attgenerated = '' "
        "JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type e ON e.oid = t.typelem "
        "WHERE c.oid = ANY(%(keys)s::regclass[]) AND c.relkind = 'r' GROUP BY 1",
        {"first": FIRST_USER_OID, "keys": list(keys)},
    )
    return {str(key): tuple(columns) for key, columns, binary in cur.fetchall() if binary}


def server_counts(cur: Cursor) -> bool:
    """Whether the server counts the rows its scans return, which the copy sessions' rows reports read."""
    cur.execute("SELECT current_setting('track_counts')::bool")
    row = cur.fetchone()
    return row is not None and row[0] is True


def copy_out_args(
    cur: Cursor,
    conninfo: str,
    snapshot: str,
    lock_wait: str,
    encoding: str,
    tables: Sequence[CopyTable],
    separator: str,
) -> list[str]:
    """psql's arguments to write the rows of ``tables`` to its standard output, in ``snapshot``, one
    table after another with the line ``separator`` between them (a random string: no data can hold
    it), and after a last separator the line ``rows_report`` parses. The session locks every table
    first, as pg_dump does, so DDL arriving during the copies waits for the backup instead of making a
    later table's lock wait behind it. Settings as pg_dump makes them: no timeouts but the lock wait,
    and an error rather than rows a row security policy would hide."""
    statements = [
        "SET statement_timeout = 0",
        "SET idle_in_transaction_session_timeout = 0",
        sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_wait)).as_string(cur),
        "SET row_security = off",
        sql.SQL("SET client_encoding = {}").format(sql.Literal(encoding)).as_string(cur),
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)).as_string(cur),
        lock_statement(tables).as_string(cur),
    ]
    for table in tables:
        copy = sql.SQL("COPY {}.{} ({}) TO STDOUT (FORMAT binary)").format(
            sql.Identifier(table.schema),
            sql.Identifier(table.name),
            sql.SQL(", ").join(sql.Identifier(column) for column in table.columns),
        )
        statements += [copy.as_string(cur), f"\\echo {separator}"]
    # A table's rows count only if its one scan was counted: track_counts is read as a scan starts,
    # and may have been off then though it is on now.
    report = sql.SQL(
        "SELECT json_build_object('track_counts', current_setting('track_counts')::bool, 'rows', "
        "(SELECT json_agg(CASE WHEN pg_stat_get_xact_numscans(r) = 1 THEN pg_stat_get_xact_tuples_returned(r) END "
        "ORDER BY n) FROM unnest({}::regclass[]) WITH ORDINALITY AS u(r, n)))"
    ).format(sql.Literal([table.key for table in tables]))
    statements.append(report.as_string(cur))
    statements.append("COMMIT")
    args = [
        "--no-psqlrc",
        "--quiet",
        "--no-password",
        "--tuples-only",
        "--no-align",
        "--set=ON_ERROR_STOP=1",
        f"--dbname={conninfo}",
    ]
    for statement in statements:
        args += ["--command", statement]
    return args


class PartWriter:
    """Frames the tables of one copy part onto ``write`` from the sections of ``copy_out_args``'s
    output: one per table (``ended`` counts those written whole), then the rows report, kept apart."""

    def __init__(self, write: Callable[[memoryview], object], tables: Sequence[CopyTable]) -> None:
        self._write = write
        self._tables = tables
        self._report: bytearray | None = None
        self.ended = 0
        write(memoryview(MAGIC))

    def _frame(self, data: memoryview | bytes) -> None:
        self._write(memoryview(_LENGTH.pack(len(data))))
        if data:
            self._write(memoryview(data))

    def begin(self, section: int) -> None:
        if section < len(self._tables):
            self._frame(self._tables[section].header())
        elif section == len(self._tables):
            self._report = bytearray()
        else:
            raise SourceError(f"psql wrote more sections than the {len(self._tables)} tables and their rows")

    def write(self, data: memoryview) -> None:
        if self._report is None:
            if data:
                self._frame(data)
        elif len(self._report) + len(data) > MAX_REPORT_BYTES:
            raise SourceError("psql wrote more than a rows report after the last table")
        else:
            self._report += data

    def end(self, section: int) -> None:
        if section < len(self._tables):
            self._frame(b"")
            self.ended += 1

    def rows(self) -> dict[str, int] | None:
        """The rows each table's COPY wrote, by key; None where the server did not count them
        (``track_counts`` off). Call once psql ended well."""
        if self.ended != len(self._tables):
            raise SourceError(f"psql wrote {self.ended} of {len(self._tables)} tables")
        if self._report is None:
            raise SourceError("psql ended without its rows report")
        return rows_report(bytes(self._report), [table.key for table in self._tables])


def rows_report(raw: bytes, keys: Sequence[str]) -> dict[str, int] | None:
    try:
        report = json.loads(raw)
        counted, rows = report["track_counts"], report["rows"]
    except (ValueError, KeyError, TypeError):
        raise SourceError(f"psql wrote no rows report after the last table: {raw[:80]!r}") from None
    if counted is not True:
        return None
    if (
        not isinstance(rows, list)
        or len(rows) != len(keys)
        or not all(isinstance(n, int | None) for n in rows)
    ):
        raise SourceError(f"psql reported rows for other tables than it copied: {raw[:80]!r}")
    uncounted = [key for key, n in zip(keys, rows, strict=True) if n is None]
    if uncounted:
        raise SourceError(
            f"the server did not count the rows of {uncounted[0]} (track_counts changed during the backup)"
        )
    return dict(zip(keys, rows, strict=True))


class _TableReader:
    """File-like over one table's data frames: ``read`` returns b"" at the table's empty frame."""

    def __init__(self, reader: BinaryIO, cancel: Cancel | None = None) -> None:
        self._reader = reader
        self._cancel = cancel
        self._left = 0
        self._ended = False
        self.error: BaseException | None = None

    def read(self, size: int = LOAD_READ_SIZE) -> bytes:
        try:
            return self._read(size)
        except BaseException as error:
            # psycopg2 ends the COPY and raises an error of its own: the caller raises this one instead.
            self.error = error
            raise

    def _read(self, size: int) -> bytes:
        if self._cancel is not None:
            self._cancel.check()
        if self._ended:
            return b""
        if not self._left:
            self._left = _read_length(self._reader)
            if not self._left:
                self._ended = True
                return b""
        data = _read_exact(self._reader, min(size, self._left))
        self._left -= len(data)
        return data


def _read_exact(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    if len(data) == size:
        return data
    chunks = [data]
    got = len(data)
    while got < size:
        more = reader.read(size - got)
        if not more:
            raise IntegrityError("postgres: a copy part ends in the middle of a frame")
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def _read_length(reader: BinaryIO) -> int:
    return int(_LENGTH.unpack(_read_exact(reader, _LENGTH.size))[0])


def _read_header(reader: BinaryIO, expected: Sequence[str]) -> dict[str, Any]:
    raw = _read_exact(reader, _read_length(reader))
    try:
        header = json.loads(raw)
        key, schema, name, columns = header["key"], header["schema"], header["name"], header["columns"]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("postgres: a copy part has an unreadable table header") from None
    if [key, schema, name] != list(expected) or not columns or not all(isinstance(c, str) for c in columns):
        raise IntegrityError(f"postgres: a copy part holds {key!r} where the facts list {expected[0]!r}")
    return dict(header)


def load_part(
    connect: Callable[[], Connection],
    reader: BinaryIO,
    tables: Sequence[Sequence[str]],
    encoding: str,
    cancel: Cancel | None = None,
) -> dict[str, int]:
    """Load each table of a copy part (``tables``: its ``[key, schema, name]`` from the facts, in order)
    from ``reader``, each in one transaction; returns the rows the server loaded per key. The caller's
    stream checks the part's seal when the with-block ends; this checks that nothing follows the last
    table."""
    if _read_exact(reader, len(MAGIC)) != MAGIC:
        raise IntegrityError("postgres: a copy part does not start as one")
    loaded: dict[str, int] = {}
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = 0")
            cur.execute("SET lock_timeout = 0")
            cur.execute("SET row_security = off")
            cur.execute("SET client_encoding = %s", (encoding,))
            conn.commit()
            for expected in tables:
                header = _read_header(reader, expected)
                loaded[header["key"]] = _load_table(conn, cur, _TableReader(reader, cancel), header)
        if reader.read(1):
            raise IntegrityError("postgres: a copy part holds more than its facts list")
    finally:
        conn.close()
    return loaded


def _load_table(conn: Connection, cur: Cursor, data: _TableReader, header: Mapping[str, Any]) -> int:
    table = sql.SQL("{}.{}").format(sql.Identifier(header["schema"]), sql.Identifier(header["name"]))
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in header["columns"])
    try:
        # Emptying the table in the loading transaction is what lets COPY write its rows frozen.
        cur.execute(sql.SQL("TRUNCATE ONLY {}").format(table))
        copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(table, columns)
        cur.copy_expert(copy, data, size=LOAD_READ_SIZE)
        rows = int(cur.rowcount)
        conn.commit()
    except psycopg2.Error as error:
        conn.rollback()
        if data.error is not None:  # the stream failed (damaged, cancelled...), not the server
            raise data.error from None
        raise SourceError(f"cannot load table {header['key']}: {first_line(error)}") from None
    except BaseException:
        conn.rollback()
        raise
    return rows
