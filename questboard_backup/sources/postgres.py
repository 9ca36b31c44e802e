"""PostgreSQL: one consistent pg_dump custom-format archive streamed out; restored into a staging database,
verified, then swapped in. Custom format on a pipe rather than ``-Fd``: the directory format can only be
written to disk as plaintext, and plaintext backup data never rests on disk.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor
from psycopg2.extensions import make_dsn, parse_dsn

from questboard_backup.errors import (
    ConfigurationError,
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.redaction import redact_url
from questboard_backup.sources.base import Facts, RestoreOptions, StreamOpener
from questboard_backup.sources.postgres_facts import (
    CONNECT_TIMEOUT,
    RowCounter,
    begin_snapshot,
    database_facts,
    failing_as,
    list_tables,
    one,
)
from questboard_backup.sources.postgres_restore import parallel_restore
from questboard_backup.sources.postgres_tools import ClientTools, first_line, stream_out

logger = logging.getLogger(__name__)

MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer database names
_REQUIRED_FACTS = ("encoding", "collate", "ctype", "pg_dump", "tables", "large_objects")


class PostgresComponent:
    """Dump and restore the database a ``postgresql://`` URL names, with pg_dump and pg_restore.

    Ownership and privileges are restored as dumped (no ``--no-owner``): every role the dump names must
    exist on the target server, and the restoring user must be able to create databases and to rename the
    target and end its sessions (its owner or a superuser). Settings made with ``ALTER DATABASE ... SET``
    and grants on the database itself are not part of a dump without ``--create`` and are not restored.
    ``jobs`` connections count rows in parallel; pg_restore cannot run parallel jobs from a pipe.
    """

    name = "postgres"

    def __init__(self, url: str, bin_dir: Path | None = None, jobs: int = 2) -> None:
        self.url = url
        self._shown = redact_url(url)
        try:
            self._params: dict[str, str] = parse_dsn(url)
        except psycopg2.ProgrammingError:
            raise ConfigurationError(f"not a valid PostgreSQL URL: {self._shown}") from None
        password = self._params.get("password")
        if password and password in self._shown:  # a ?password= parameter survives redact_url
            self._shown = self._shown.split("?", 1)[0]
        if not url.startswith(("postgresql://", "postgres://")) or not self._params.get("dbname"):
            raise ConfigurationError(f"a postgresql:// URL naming a database is needed, not {self._shown}")
        if jobs < 1:
            raise ConfigurationError(f"jobs must be at least 1, not {jobs}")
        self._params.setdefault("application_name", "questboard-backup")
        self.database = self._params["dbname"]
        self.jobs = jobs
        self.tools = ClientTools(bin_dir, password)

    def check(self) -> None:
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version_num')::int / 10000")
            server = int(one(cur)[0])
        self.tools.path("pg_restore")
        client = self.tools.major("pg_dump")
        if client < server:
            raise SourceError(
                f"pg_dump {self.tools.version('pg_dump')} cannot dump a PostgreSQL {server} server: "
                f"client tools {server} or newer are needed (BACKUP_PG_BIN_DIR)"
            )

    def dump(self, out: BinaryIO) -> Facts:
        failed = failing_as(f"postgres dump of {self.database} failed")
        with contextlib.closing(self._connect()) as conn, failed, conn.cursor() as cur:
            snapshot = begin_snapshot(conn, cur)
            facts = database_facts(cur)
            tables = list_tables(cur)
            facts["pg_dump"] = self.tools.version("pg_dump")
            logger.info("postgres dump started database=%s tables=%d", self.database, len(tables))
            # -b (--blobs up to 15, --large-objects from 16) is understood by every version.
            args = ["--format=custom", "--compress=0", "-b", f"--snapshot={snapshot}", "--no-password"]
            # The exporting transaction only has to outlive pg_dump's import of the snapshot. It holds no
            # table locks (the counters take their own and commit), so it cannot deadlock with queued DDL.
            with RowCounter(self._params, self.jobs, snapshot) as counter:
                counter.start(tables)
                written = stream_out(
                    self.tools, "pg_dump", [*args, f"--dbname={self._conninfo()}"], out.write
                )
                facts["tables"] = counter.result()
            cur.execute("COMMIT")
        logger.info(
            "postgres dumped database=%s tables=%d rows=%d large_objects=%d bytes=%d",
            self.database,
            len(facts["tables"]),
            sum(facts["tables"].values()),
            facts["large_objects"],
            written,
        )
        return facts

    def restore(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        missing = [key for key in _REQUIRED_FACTS if key not in facts]
        if missing:
            raise IntegrityError(f"postgres: the manifest facts lack {', '.join(missing)}")
        if not re.fullmatch(r"\d{8}_\d{6}", options.timestamp):
            raise ConfigurationError(f"restore timestamp {options.timestamp!r} is not YYYYMMDD_HHMMSS")
        archive = str(facts["pg_dump"])
        archive_major = re.match(r"\d+", archive)
        if archive_major is None:
            raise IntegrityError(f"postgres: unreadable pg_dump version {archive!r} in the manifest facts")
        if self.tools.major("pg_restore") < int(archive_major.group()):
            raise SourceError(
                f"pg_restore {self.tools.version('pg_restore')} cannot read an archive written by "
                f"pg_dump {archive}: newer client tools are needed (BACKUP_PG_BIN_DIR)"
            )
        target = self.database
        staging = _derived_name(target, f"_restore_{options.timestamp}")
        previous = _derived_name(target, f"_pre_restore_{options.timestamp}")
        # A session cannot rename its own database, so a target named postgres is handled from template1.
        with contextlib.closing(self._connect("template1" if target == "postgres" else "postgres")) as admin:
            admin.autocommit = True
            self._create_staging(admin, staging, facts)
            try:
                # Several pg_restore processes, each on its own authenticated stream (see postgres_restore).
                parallel_restore(
                    self.tools, f"--dbname={self._conninfo(staging)}", open_stream, facts["tables"], self.jobs
                )
                rows = self._verify(staging, facts)
                moved = _swap(admin, staging, target, previous)
            except BaseException:
                _drop_quietly(admin, staging)
                raise
        if moved:
            logger.info("postgres previous database kept database=%s previous=%s", target, moved)
        logger.info("postgres restored database=%s tables=%d rows=%d", target, len(facts["tables"]), rows)
        return {
            "database": target,
            "staging": staging,
            "previous": moved,
            "tables_checked": len(facts["tables"]),
            "rows": rows,
            "large_objects": facts["large_objects"],
        }

    def row_counts(self) -> dict[str, int]:
        """Exact rows per user table (``schema.table``, quoted where needed), all in one snapshot."""
        failed = failing_as(f"cannot count rows in {self.database}")
        with contextlib.closing(self._connect()) as conn, failed, conn.cursor() as cur:
            snapshot = begin_snapshot(conn, cur)
            with RowCounter(self._params, self.jobs, snapshot) as counter:
                counter.start(list_tables(cur))
                return counter.result()

    def _connect(self, database: str | None = None) -> Connection:
        params = {**self._params, "dbname": database or self.database}
        try:
            return psycopg2.connect(**params, connect_timeout=CONNECT_TIMEOUT)
        except psycopg2.Error as error:
            reason = self.tools.scrub(first_line(error))
            raise SourceUnreachableError(f"cannot connect to PostgreSQL at {self._shown}: {reason}") from None

    def _conninfo(self, database: str | None = None) -> str:
        params = {key: value for key, value in self._params.items() if key != "password"}
        params["dbname"] = database or self.database
        params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        return str(make_dsn(**params))

    def _create_staging(self, admin: Connection, staging: str, facts: Mapping[str, Any]) -> None:
        statement = sql.SQL(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}"
        ).format(
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

    def _verify(self, staging: str, facts: Mapping[str, Any]) -> int:
        """Compare the staging database with the facts; raises before anything is swapped."""
        params = {**self._params, "dbname": staging}
        failed = failing_as(f"cannot check restored database {staging}")
        with contextlib.closing(self._connect(staging)) as conn, failed, conn.cursor() as cur:
            snapshot = begin_snapshot(conn, cur)
            cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
            large_objects = int(one(cur)[0])
            with RowCounter(params, self.jobs, snapshot) as counter:
                counter.start(list_tables(cur))
                counts = counter.result()
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
            # pg_restore leaves no planner statistics, and without them the first queries after the swap crawl.
            cur.execute("ANALYZE")
        rows = sum(expected.values())
        logger.info("postgres staging verified staging=%s tables=%d rows=%d", staging, len(expected), rows)
        return rows


def row_counts(url: str, jobs: int = 1) -> dict[str, int]:
    """Exact rows per user table of the database ``url`` names, all in one snapshot (tests, demo)."""
    return PostgresComponent(url, jobs=jobs).row_counts()


def _derived_name(target: str, suffix: str) -> str:
    room = MAX_NAME_BYTES - len(suffix.encode())
    return target.encode()[:room].decode("utf-8", "ignore") + suffix


def _swap(admin: Connection, staging: str, target: str, previous: str) -> str | None:
    """Move the target aside (if it exists) and rename staging into its place; returns the aside name."""
    with admin.cursor() as cur, failing_as(f"cannot swap {staging} in for {target}"):
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,))
        exists = cur.fetchone() is not None
        if exists:
            # Door closed first: a client connecting between the terminate and the rename would make it fail.
            _alter(cur, target, "WITH ALLOW_CONNECTIONS false")
            try:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (target,),
                )
                _alter(cur, target, "RENAME TO {}", previous)
            except psycopg2.Error as error:
                with contextlib.suppress(psycopg2.Error):
                    _alter(cur, target, "WITH ALLOW_CONNECTIONS true")
                raise SourceError(f"cannot move database {target} aside: {first_line(error)}") from None
        try:
            _alter(cur, staging, "RENAME TO {}", target)
        except psycopg2.Error as error:
            if exists:
                _undo_move(cur, previous, target)
            raise SourceError(f"cannot rename {staging} to {target}: {first_line(error)}") from None
        if exists:
            # Operators inspect the previous copy before they drop it.
            try:
                _alter(cur, previous, "WITH ALLOW_CONNECTIONS true")
            except psycopg2.Error as error:
                reason = first_line(error)
                logger.warning(
                    "postgres previous database left closed previous=%s error=%s", previous, reason
                )
    return previous if exists else None


def _alter(cur: Cursor, database: str, change: str, *names: str) -> None:
    """``ALTER DATABASE database <change>``, the ``{}`` in ``change`` filled with quoted ``names``."""
    identifiers = [sql.Identifier(name) for name in (database, *names)]
    cur.execute(sql.SQL("ALTER DATABASE {} " + change).format(*identifiers))


def _undo_move(cur: Cursor, previous: str, target: str) -> None:
    try:
        _alter(cur, previous, "RENAME TO {}", target)
        _alter(cur, target, "WITH ALLOW_CONNECTIONS true")
    except psycopg2.Error as error:
        logger.error(
            "postgres previous database not renamed back previous=%s error=%s", previous, first_line(error)
        )


def _drop_quietly(admin: Connection, staging: str) -> None:
    """Drop the staging database after a failure, without hiding that failure."""
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))
        logger.info("postgres staging database dropped staging=%s", staging)
    except psycopg2.Error as error:
        logger.warning("postgres staging drop failed staging=%s error=%s", staging, first_line(error))
