"""PostgreSQL: one consistent pg_dump custom-format archive streamed out; restored into a staging database,
verified, then swapped in. Custom format on a pipe rather than ``-Fd``: the directory format can only be
written to disk as plaintext, and plaintext backup data never rests on disk.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor
from psycopg2.extensions import make_dsn

from questboard_backup.connections import parse_postgres, postgres_display
from questboard_backup.errors import (
    BackupError,
    ConfigurationError,
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.interrupts import interrupts_held
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StagedRestore, StreamOpener
from questboard_backup.sources.postgres import roles, swap
from questboard_backup.sources.postgres.copy import load_part, server_counts
from questboard_backup.sources.postgres.dump import (
    MAX_SPLIT_TABLES,
    SPLIT_MIN_BYTES,
    RowsReport,
    dump_runs,
    group_tables,
    plan_streams,
    stream_facts,
)
from questboard_backup.sources.postgres.facts import (
    CONNECT_TIMEOUT,
    SNAPSHOT_LOCK_WAIT,
    RowCounter,
    Table,
    begin_snapshot,
    database_facts,
    failing_as,
    list_tables,
    one,
    table_sizes,
)
from questboard_backup.sources.postgres.privileges import require_restore_privileges
from questboard_backup.sources.postgres.restore import parallel_restore, read_tocs
from questboard_backup.sources.postgres.roles import create_missing_roles
from questboard_backup.sources.postgres.staging import (
    count_rows,
    create_staging,
    drop_database,
    drop_quietly,
    verify_staging,
)
from questboard_backup.sources.postgres.swap import SwapNames
from questboard_backup.sources.postgres.tools import (
    Cancel,
    ClientTools,
    ToolRun,
    first_line,
    major_version,
    stream_out_all,
)

# MAX_SPLIT_TABLES and group_tables are imported from here, where they were before dump.py held them.
__all__ = ["MAX_SPLIT_TABLES", "PostgresComponent", "group_tables", "row_counts"]

logger = logging.getLogger(__name__)

_REQUIRED_FACTS = ("encoding", "collate", "ctype", "pg_dump", "tables", "large_objects")


class PostgresComponent(StagedRestore):
    """Dump and restore the database a ``postgresql://`` URL names, with pg_dump and pg_restore.

    Ownership and privileges are restored as dumped (no ``--no-owner``): every role the dump names (its
    facts' ``roles``) must exist on the target server. A backup carries the cluster's roles (``roles``,
    on the part the facts' ``roles_part`` names) and a restore first creates those the server lacks. The
    restore is staged (``stage``, ``swap_in``, ``settle``, ``undo``: see ``swap``), and the restoring
    user must be able to create
    databases and to rename the target and end its sessions (its owner or a superuser), which
    ``check_restore_privileges`` checks up front. Settings made with ``ALTER DATABASE ... SET`` and
    grants on the database itself are not part of a dump without ``--create`` and are not restored.
    ``jobs`` is how many further dump streams run beside the main pg_dump (which then carries little),
    and how many row-counting connections and restore processes run at once.
    """

    name = "postgres"

    def __init__(
        self, url: str, bin_dir: Path | None = None, jobs: int = 2, split_min_bytes: int = SPLIT_MIN_BYTES
    ) -> None:
        self.url = url
        self._params: dict[str, str] = parse_postgres(url)
        self._shown = postgres_display(url)
        password = self._params.get("password")
        if not url.startswith(("postgresql://", "postgres://")) or not self._params.get("dbname"):
            raise ConfigurationError(f"a postgresql:// URL naming a database is needed, not {self._shown}")
        if jobs < 1:
            raise ConfigurationError(f"jobs must be at least 1, not {jobs}")
        self._params.setdefault("application_name", "questboard-backup")
        self.database = self._params["dbname"]
        self.jobs = jobs
        self.parallel_streams = jobs > 1
        self.split_min_bytes = split_min_bytes
        #: How long a backup waits for a table that a running DDL holds exclusively (then it fails).
        self.lock_wait = SNAPSHOT_LOCK_WAIT
        self.tools = ClientTools(bin_dir, password)

    def check(self) -> None:
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version_num')::int / 10000")
            server = int(one(cur)[0])
        self.tools.path("pg_restore")
        self.tools.path("psql")
        client = self.tools.major("pg_dump")
        if client < server:
            raise SourceError(
                f"pg_dump {self.tools.version('pg_dump')} cannot dump a PostgreSQL {server} server: "
                f"client tools {server} or newer are needed (BACKUP_PG_BIN_DIR)"
            )

    def check_restore_target(self) -> None:
        """The target database may not exist yet: what is checked is the role's privileges on the server."""
        self.check_restore_privileges()

    def check_restore_privileges(self) -> None:
        """Raise SourceUnreachableError, naming the role and what it lacks, unless it can restore into
        this database: create databases (the staging one) and, if the database exists, own it or be a
        superuser (to move it aside and end its sessions). ``restore`` checks this first of all."""
        with contextlib.closing(self._connect(self._admin_database)) as conn, conn.cursor() as cur:
            require_restore_privileges(cur, self.database)

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts:
        """One pg_dump of the whole database to ``out``; with ``open_part`` and ``jobs`` > 1, the rows of
        the largest tables go instead to further parts, running at the same time in the same exported
        snapshot (see ``group_tables``): binary COPY where their types allow (``postgres_copy``), else
        data-only pg_dumps."""
        failed = failing_as(f"postgres dump of {self.database} failed")
        with contextlib.closing(self._connect()) as conn, failed, conn.cursor() as cur:
            conn.autocommit = True
            snapshot = begin_snapshot(conn, cur, lock=list_tables(cur), lock_wait=self.lock_wait)
            facts = database_facts(cur)
            tables = list_tables(cur)
            sizes = table_sizes(cur, tables)
            groups = (
                group_tables(tables, sizes, self.jobs, self.split_min_bytes) if open_part is not None else []
            )
            facts["pg_dump"] = self.tools.version("pg_dump")
            plan = plan_streams(cur, groups, facts["version"])
            facts.update(stream_facts(cur, tables, sizes, plan))
            logger.info(
                "postgres dump started database=%s tables=%d streams=%d",
                self.database,
                len(tables),
                plan.streams,
            )
            runs, reports = dump_runs(
                cur, self._conninfo(), snapshot, facts["encoding"], plan, out, open_part
            )
            if open_part is not None:
                # The cluster's roles, on the part after the dump's own (their numbers are fixed by then).
                facts["roles_part"] = plan.streams
                open_part().write(roles.read_roles(cur))
            # A copy session reports the rows it wrote, as the server counted them while it scanned: a
            # count(*) of those tables would read them a second time (see postgres_copy).
            copied = {table.key for group in plan.copies for table in group} if server_counts(cur) else set()
            facts["tables"], written = self._stream_and_count(snapshot, tables, copied, runs, reports)
            cur.execute("COMMIT")
        logger.info(
            "postgres dumped database=%s tables=%d rows=%d large_objects=%d bytes=%d streams=%d",
            self.database,
            len(facts["tables"]),
            sum(facts["tables"].values()),
            facts["large_objects"],
            sum(written),
            len(written),
        )
        return facts

    def _stream_and_count(
        self,
        snapshot: str,
        tables: Sequence[Table],
        copied: set[str],
        runs: Sequence[ToolRun],
        reports: Sequence[RowsReport],
    ) -> tuple[dict[str, int], list[int]]:
        """Carry out the dump's runs while the rows of the tables not ``copied`` are counted in the same
        snapshot; returns the rows per table (the copied ones as their copies reported them) and the
        bytes each run wrote."""
        # The exporting transaction holds its table locks until every dump, copy and counter is done.
        # DDL arriving meanwhile queues behind them; a session that would then queue behind that DDL
        # (which cannot get through before the dump ends) gives up after WORKER_LOCK_WAIT and fails
        # the backup, instead of waiting forever or reading a table truncated after the snapshot.
        with RowCounter(self._params, self.jobs, snapshot) as counter:
            counter.start([table for table in tables if table.key not in copied])
            written = stream_out_all(self.tools, runs)
            counts = counter.result()
            for report in reports:
                rows = report()
                if copied and rows is None:
                    raise SourceError(
                        "track_counts went off during the backup: its row counts are incomplete"
                    )
                counts.update((key, n) for key, n in (rows or {}).items() if key in copied)
        return dict(sorted(counts.items())), written

    def stage(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        """Create the backup's missing roles on the server, restore into the staging database and check
        it against the facts; the target is not touched. Nothing is created or read before the role's
        privileges are checked (``check_restore_privileges``); on failure the staging database goes."""
        self._check_restorable(facts, options)
        names = SwapNames(self.database, options.timestamp)
        with contextlib.closing(self._connect(self._admin_database)) as admin:
            admin.autocommit = True
            with admin.cursor() as cur:
                require_restore_privileges(cur, self.database)
                if "roles_part" in facts:
                    with failing_as("cannot create the backup's roles"):
                        create_missing_roles(cur, self._read_roles(open_stream, int(facts["roles_part"])))
            # The archives' listings are read while the staging database is being created.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qb-pg-toc") as pool:
                listings = pool.submit(read_tocs, self.tools, open_stream, len(facts.get("parts", [])))
                created = False
                try:
                    # Created and marked as one step: an interrupt between the two would leave a
                    # database no undo may drop (undo drops only what carries this restore's mark).
                    with interrupts_held():
                        create_staging(admin, names.staging, facts)
                        created = True
                        with admin.cursor() as cur, failing_as(f"cannot mark {names.staging} as staged"):
                            swap.mark_staged(cur, names)
                    rows = self._fill(open_stream, names.staging, facts, listings.result())
                except BaseException:
                    if created:  # never a database of the same name this run did not create
                        drop_quietly(admin, names.staging)
                    raise
        logger.info(
            "postgres staged database=%s tables=%d rows=%d", self.database, len(facts["tables"]), rows
        )
        return {
            "database": self.database,
            "staging": names.staging,
            "tables_checked": len(facts["tables"]),
            "rows": rows,
            "large_objects": facts["large_objects"],
        }

    def swap_in(self, options: RestoreOptions) -> Facts:
        """Rename the staging database into the target's place, the target kept aside (closed until
        ``settle``) as ``previous`` (None when there was no target); see ``swap``."""
        with self._admin_cursor() as cur:
            return {"previous": swap.swap_in(cur, SwapNames(self.database, options.timestamp))}

    def settle(self, options: RestoreOptions) -> None:
        try:
            with self._admin_cursor() as cur:
                swap.settle(cur, SwapNames(self.database, options.timestamp))
        except (BackupError, psycopg2.Error) as error:  # settling never raises: the swap is done
            logger.warning("postgres swap not settled database=%s error=%s", self.database, first_line(error))

    def undo(self, options: RestoreOptions) -> list[str]:
        with self._admin_cursor() as cur, failing_as(f"cannot undo the restore of {self.database}"):
            return swap.undo(cur, SwapNames(self.database, options.timestamp))

    def clear_leftovers(self, options: RestoreOptions) -> list[str]:
        with self._admin_cursor() as cur, failing_as(f"cannot clear earlier restores of {self.database}"):
            return swap.clear_leftovers(cur, SwapNames(self.database, options.timestamp))

    def database_bytes(self) -> int:
        """The database's size on disk (``pg_database_size``): what a dump's duration is projected from."""
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            return int(one(cur)[0])

    # Restore drills (questboard_backup/drill.py): this instance is the drill database.

    def drillable(self, options: RestoreOptions) -> bool:
        return True

    def drill_guard(self, production: object, facts: Mapping[str, Any], options: RestoreOptions) -> None:
        """A drill database never has the production database's name, on whatever server: it is
        dropped after every drill, and a name can reach production through an alias or a tunnel."""
        if isinstance(production, PostgresComponent) and production.database == self.database:
            raise ConfigurationError(
                f"the drill database {self.database!r} is the production database: a drill never restores "
                f"into production (name a dedicated one, e.g. {self.database}_drill; it is dropped after "
                "every drill)"
            )

    def discard(self, facts: Mapping[str, Any], options: RestoreOptions) -> list[str]:
        """Drop the drill database, and what the restore of ``options`` kept or staged beside it."""
        names = SwapNames(self.database, options.timestamp)
        dropped: list[str] = []
        with self._admin_cursor() as cur, failing_as(f"cannot drop the drill database {self.database}"):
            for database in (names.staging, names.previous, self.database):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is not None:
                    drop_database(cur, database)
                    dropped.append(f"dropped database {database}")
        return dropped

    def run_sql_checks(self, queries: Sequence[str]) -> list[str]:
        """Each query in a read-only session (60 s at most); the first column of its first row must be
        true (a boolean true or a non-zero number). RestoreVerificationError names the first that fails."""
        passed: list[str] = []
        with contextlib.closing(self._connect()) as conn:
            conn.set_session(readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = '60s'")
                for query in queries:
                    shown = " ".join(query.split())[:120]
                    try:
                        cur.execute(query)
                        row = cur.fetchone() if cur.description else None
                    except psycopg2.Error as error:
                        raise RestoreVerificationError(
                            f"drill check failed in {self.database}: {shown}: {self.tools.scrub(first_line(error))}"
                        ) from None
                    value = row[0] if row else None
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        ok = value is True
                    else:
                        ok = value != 0
                    if not ok:
                        raise RestoreVerificationError(
                            f"drill check failed in {self.database}: {shown}: answered {str(value)[:40]!r}, not true"
                        )
                    passed.append(f"ok: {shown}")
        return passed

    @contextlib.contextmanager
    def _admin_cursor(self) -> Iterator[Cursor]:
        """An autocommit session where the swap works (``_admin_database``)."""
        with contextlib.closing(self._connect(self._admin_database)) as admin:
            admin.autocommit = True
            with admin.cursor() as cur:
                yield cur

    def _read_roles(self, open_stream: StreamOpener, part: int) -> dict[str, Any]:
        """The roles part, authenticated to its end before any of it is used."""
        data = bytearray()
        with open_stream(part) as reader:
            while len(data) <= roles.MAX_BYTES and (chunk := reader.read(roles.MAX_BYTES + 1 - len(data))):
                data += chunk
        if len(data) > roles.MAX_BYTES:
            raise IntegrityError(f"postgres: the roles part holds more than {roles.MAX_BYTES} bytes")
        return roles.parse_roles(bytes(data))

    def _check_restorable(self, facts: Mapping[str, Any], options: RestoreOptions) -> None:
        """The facts a restore needs are there, and the client tools can read the archive."""
        missing = [key for key in _REQUIRED_FACTS if key not in facts]
        if missing:
            raise IntegrityError(f"postgres: the manifest facts lack {', '.join(missing)}")
        if not re.fullmatch(r"\d{8}_\d{6}", options.timestamp):
            raise ConfigurationError(f"restore timestamp {options.timestamp!r} is not YYYYMMDD_HHMMSS")
        archive = str(facts["pg_dump"])
        archive_major = major_version(archive)
        if archive_major is None:
            raise IntegrityError(f"postgres: unreadable pg_dump version {archive!r} in the manifest facts")
        if self.tools.major("pg_restore") < archive_major:
            raise SourceError(
                f"pg_restore {self.tools.version('pg_restore')} cannot read an archive written by "
                f"pg_dump {archive}: newer client tools are needed (BACKUP_PG_BIN_DIR)"
            )

    def _fill(
        self, open_stream: StreamOpener, staging: str, facts: Mapping[str, Any], listings: list[list[str]]
    ) -> int:
        """Restore the backup into the staging database and check it against the facts; returns its rows."""
        # Several pg_restore processes, each on its own authenticated stream (see postgres_restore).
        checked: list[int] = []

        def verify(counted: Mapping[str, int]) -> None:
            params = {**self._params, "dbname": staging}
            connect = functools.partial(self._connect, staging)
            checked.append(verify_staging(connect, params, self.jobs, facts, counted))

        parallel_restore(
            self.tools,
            f"--dbname={self._conninfo(staging)}",
            open_stream,
            listings,
            facts["tables"],
            self.jobs,
            index_tables=facts.get("indexes"),
            foreign_keys=facts.get("foreign_keys"),
            count_rows=functools.partial(self._count_rows, staging),
            once_loaded=verify,
            copy_parts=facts.get("copy_parts", []),
            load_copy=functools.partial(self._load_copy, open_stream, staging, str(facts["encoding"])),
        )
        return checked[0]

    def row_counts(self) -> dict[str, int]:
        """Exact rows per user table (``schema.table``, quoted where needed), all in one snapshot."""
        failed = failing_as(f"cannot count rows in {self.database}")
        with contextlib.closing(self._connect()) as conn, failed, conn.cursor() as cur:
            snapshot = begin_snapshot(conn, cur)
            with RowCounter(self._params, self.jobs, snapshot) as counter:
                counter.start(list_tables(cur))
                return counter.result()

    @property
    def _admin_database(self) -> str:
        """Where a restore works from: a session cannot rename its own database, so a target named
        postgres is handled from template1."""
        return "template1" if self.database == "postgres" else "postgres"

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

    def _load_copy(
        self,
        open_stream: StreamOpener,
        staging: str,
        encoding: str,
        part: int,
        tables: Sequence[Sequence[str]],
        cancel: Cancel,
    ) -> dict[str, int]:
        with open_stream(part) as reader:
            return load_part(functools.partial(self._connect, staging), reader, tables, encoding, cancel)

    def _count_rows(self, staging: str, names: Sequence[tuple[str, str]], cancel: Cancel) -> dict[str, int]:
        """Rows of the (schema, table) pairs in the staging database (``count_rows``)."""
        return count_rows(functools.partial(self._connect, staging), staging, names, cancel)


def row_counts(url: str, jobs: int = 1) -> dict[str, int]:
    """Exact rows per user table of the database ``url`` names, all in one snapshot (tests, demo)."""
    return PostgresComponent(url, jobs=jobs).row_counts()
