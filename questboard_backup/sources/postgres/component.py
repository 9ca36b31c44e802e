"""PostgreSQL: one consistent pg_dump custom-format archive streamed out; restored into a staging database,
verified, then swapped in. Custom format on a pipe rather than ``-Fd``: the directory format can only be
written to disk as plaintext, and plaintext backup data never rests on disk.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StreamOpener
from questboard_backup.sources.postgres.copy import (
    CopyTable,
    PartWriter,
    binary_columns,
    copy_out_args,
    load_part,
    server_counts,
)
from questboard_backup.sources.postgres.facts import (
    CONNECT_TIMEOUT,
    SNAPSHOT_LOCK_WAIT,
    WORKER_LOCK_WAIT,
    RowCounter,
    Table,
    begin_snapshot,
    database_facts,
    failing_as,
    foreign_keys,
    index_tables,
    list_tables,
    one,
    table_sizes,
    unlimited,
)
from questboard_backup.sources.postgres.restore import parallel_restore, read_tocs
from questboard_backup.sources.postgres.tools import Cancel, ClientTools, ToolRun, first_line, stream_out_all

logger = logging.getLogger(__name__)

MAX_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer database names
#: Below this many bytes of tables a database is dumped as one stream (splitting buys nothing there).
SPLIT_MIN_BYTES = 64 * 2**20
#: At most this many of the largest tables move to further streams (each is named on pg_dump's command line).
MAX_SPLIT_TABLES = 64
_REQUIRED_FACTS = ("encoding", "collate", "ctype", "pg_dump", "tables", "large_objects")


class PostgresComponent:
    """Dump and restore the database a ``postgresql://`` URL names, with pg_dump and pg_restore.

    Ownership and privileges are restored as dumped (no ``--no-owner``): every role the dump names must
    exist on the target server, and the restoring user must be able to create databases and to rename the
    target and end its sessions (its owner or a superuser). Settings made with ``ALTER DATABASE ... SET``
    and grants on the database itself are not part of a dump without ``--create`` and are not restored.
    ``jobs`` is how many further dump streams run beside the main pg_dump (which then carries little),
    and how many row-counting connections and restore processes run at once.
    """

    name = "postgres"

    def __init__(
        self, url: str, bin_dir: Path | None = None, jobs: int = 2, split_min_bytes: int = SPLIT_MIN_BYTES
    ) -> None:
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
            archive_groups, copy_groups = _by_kind(cur, groups, facts["version"])
            facts["parts"] = [[table.key for table in group] for group in archive_groups]
            facts["copy_parts"] = [[[t.key, t.schema, t.name] for t in group] for group in copy_groups]
            # Only the largest tables' foreign keys and the indexes of their tables: the others are built
            # in batches once all rows are in, and the facts stay small (a Step Functions state carries
            # them; its limit is 256 KiB). An early foreign key needs its referenced table's indexes known.
            largest = {f"{table.schema}.{table.name}" for table in largest_tables(tables, sizes)}
            facts["foreign_keys"] = {
                tag: pair for tag, pair in foreign_keys(cur).items() if largest.intersection(pair)
            }
            indexed = largest.union(*facts["foreign_keys"].values())
            facts["indexes"] = {
                index: table for index, table in index_tables(cur).items() if table in indexed
            }
            logger.info(
                "postgres dump started database=%s tables=%d streams=%d",
                self.database,
                len(tables),
                1 + len(archive_groups) + len(copy_groups),
            )
            common = [
                "--format=custom",
                "--compress=0",
                f"--snapshot={snapshot}",
                f"--lock-wait-timeout={WORKER_LOCK_WAIT}",
                "--no-password",
            ]
            dbname = f"--dbname={self._conninfo()}"
            # -b (--blobs up to 15, --large-objects from 16) is understood by every version.
            main = [
                *common,
                "-b",
                *[f"--exclude-table-data={_pattern(t)}" for g in groups for t in g],
                dbname,
            ]
            runs = [ToolRun("pg_dump", main, "the main dump", out.write)]
            reports: list[Callable[[], dict[str, int] | None]] = []
            for archive_group in archive_groups:
                assert open_part is not None
                part = [*common, "--data-only", *[f"--table={_pattern(t)}" for t in archive_group], dbname]
                runs.append(ToolRun("pg_dump", part, "a data-only dump", open_part().write))
            for copy_group in copy_groups:
                assert open_part is not None
                run, report = self._copy_run(cur, snapshot, facts["encoding"], copy_group, open_part())
                runs.append(run)
                reports.append(report)
            # A copy session reports the rows it wrote, as the server counted them while it scanned: a
            # count(*) of those tables would read them a second time (see postgres_copy).
            copied = {table.key for group in copy_groups for table in group} if server_counts(cur) else set()
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
                facts["tables"] = dict(sorted(counts.items()))
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

    def _copy_run(
        self, cur: Cursor, snapshot: str, encoding: str, tables: Sequence[CopyTable], out: BinaryIO
    ) -> tuple[ToolRun, Callable[[], dict[str, int] | None]]:
        """One psql writing the rows of ``tables`` into the part ``out``; and, once it has run, the rows
        it wrote per table (None if the server did not count them)."""
        writer = PartWriter(out.write, tables)
        separator = secrets.token_hex(16)
        args = copy_out_args(cur, self._conninfo(), snapshot, WORKER_LOCK_WAIT, encoding, tables, separator)
        what = "the copy of " + ", ".join(table.key for table in tables)

        def report() -> dict[str, int] | None:
            try:
                return writer.rows()
            except SourceError as error:
                raise SourceError(f"{error} in {what}") from None

        run = ToolRun(
            "psql",
            args,
            what,
            writer.write,
            before=writer.begin,
            after=writer.end,
            separator=(separator + "\n").encode(),
        )
        return run, report

    def restore(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        missing = [key for key in _REQUIRED_FACTS if key not in facts]
        if missing:
            raise IntegrityError(f"postgres: the manifest facts lack {', '.join(missing)}")
        if not re.fullmatch(r"\d{8}_\d{6}", options.timestamp):
            raise ConfigurationError(f"restore timestamp {options.timestamp!r} is not YYYYMMDD_HHMMSS")
        archive = str(facts["pg_dump"])
        archive_major = _major(archive)
        if archive_major is None:
            raise IntegrityError(f"postgres: unreadable pg_dump version {archive!r} in the manifest facts")
        if self.tools.major("pg_restore") < archive_major:
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
            # The archives' listings are read while the staging database is being created.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qb-pg-toc") as pool:
                listings = pool.submit(read_tocs, self.tools, open_stream, len(facts.get("parts", [])))
                self._create_staging(admin, staging, facts)
            try:
                # Several pg_restore processes, each on its own authenticated stream (see postgres_restore).
                checked: list[int] = []

                def verify(counted: Mapping[str, int]) -> None:
                    checked.append(self._verify(staging, facts, counted))

                parallel_restore(
                    self.tools,
                    f"--dbname={self._conninfo(staging)}",
                    open_stream,
                    listings.result(),
                    facts["tables"],
                    self.jobs,
                    index_tables=facts.get("indexes"),
                    foreign_keys=facts.get("foreign_keys"),
                    count_rows=functools.partial(self._count_rows, staging),
                    once_loaded=verify,
                    copy_parts=facts.get("copy_parts", []),
                    load_copy=functools.partial(
                        self._load_copy, open_stream, staging, str(facts["encoding"])
                    ),
                )
                rows = checked[0]
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
        """Rows of the (schema, table) pairs in the staging database, keyed like the facts; a pair that
        does not name a table (a listing's names are split on spaces) is left to ``_verify``. A
        cancelled restore cancels the count running (on a large table it takes minutes)."""
        counts: dict[str, int] = {}
        with contextlib.closing(self._connect(staging)) as conn, conn.cursor() as cur:
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

    def _verify(self, staging: str, facts: Mapping[str, Any], counted: Mapping[str, int]) -> int:
        """Compare the staging database with the facts (``counted``: rows already counted as the tables
        came in); raises before anything is swapped."""
        params = {**self._params, "dbname": staging}
        failed = failing_as(f"cannot check restored database {staging}")
        with contextlib.closing(self._connect(staging)) as conn, failed, conn.cursor() as cur:
            snapshot = begin_snapshot(conn, cur)
            cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
            large_objects = int(one(cur)[0])
            with RowCounter(params, self.jobs, snapshot) as counter:
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


def group_tables(
    tables: Sequence[Table], sizes: Mapping[str, int], jobs: int, min_bytes: int = SPLIT_MIN_BYTES
) -> list[list[Table]]:
    """The tables whose rows go to further streams, one list per stream (the main stream keeps the rest).

    The ``MAX_SPLIT_TABLES`` largest tables are spread over ``jobs`` further streams, greedy by size,
    largest first onto the lightest (their rows travel as binary COPY where they can, about half the
    cost of pg_dump's text); the main stream keeps the other tables, and at least one table (its
    listing marks where the restore's data steps go), and is otherwise light: the schema, large
    objects and sequences. Streams that would get nothing are left out.
    """
    total = sum(sizes.get(table.key, 0) for table in tables)
    if jobs < 2 or total < min_bytes or len(tables) < 2:
        return []
    largest = largest_tables(tables, sizes)
    if len(largest) == len(tables):
        largest = largest[:-1]  # the smallest stays in the main stream
    groups: list[list[Table]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for table in largest:
        lightest = loads.index(min(loads))
        groups[lightest].append(table)
        loads[lightest] += sizes.get(table.key, 0)
    return [sorted(group, key=lambda table: table.key) for group in groups if group]


def largest_tables(tables: Sequence[Table], sizes: Mapping[str, int]) -> list[Table]:
    """The ``MAX_SPLIT_TABLES`` largest tables, largest first (ties by name)."""
    return sorted(tables, key=lambda table: (-sizes.get(table.key, 0), table.key))[:MAX_SPLIT_TABLES]


def _by_kind(
    cur: Cursor, groups: Sequence[Sequence[Table]], version: str
) -> tuple[list[list[Table]], list[list[CopyTable]]]:
    """Each group's tables whose rows binary COPY can carry (``binary_columns``) for a copy part, the
    others for a data-only archive part; groups left empty are dropped."""
    split = [table.key for group in groups for table in group]
    binary = binary_columns(cur, split) if split and (_major(version) or 0) >= 12 else {}
    archive = [[table for table in group if table.key not in binary] for group in groups]
    copy = [
        [CopyTable(t.key, t.schema, t.name, binary[t.key]) for t in group if t.key in binary]
        for group in groups
    ]
    return [group for group in archive if group], [group for group in copy if group]


def _major(version: str) -> int | None:
    """``15`` from ``15.18``; None when the text does not start with a number."""
    match = re.match(r"\d+", version)
    return int(match.group()) if match else None


def _pattern(table: Table) -> str:
    """An exact pg_dump table pattern: inside double quotes nothing is a wildcard."""
    return ".".join('"' + name.replace('"', '""') + '"' for name in (table.schema, table.name))


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
