"""The dump's streams: the largest tables' rows moved out of the main pg_dump onto further streams (a
data-only pg_dump, or a binary COPY where their types allow), and the facts a restore needs to build
their indexes and keys as soon as their rows are in."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from psycopg2.extensions import cursor as Cursor

from questboard_backup.errors import SourceError
from questboard_backup.sources.base import Facts, PartOpener
from questboard_backup.sources.postgres.copy import CopyTable, PartWriter, binary_columns, copy_out_args
from questboard_backup.sources.postgres.facts import WORKER_LOCK_WAIT, Table, foreign_keys, index_tables
from questboard_backup.sources.postgres.tools import ToolRun, major_version

#: Below this many bytes of tables a database is dumped as one stream (splitting buys nothing there).
SPLIT_MIN_BYTES = 64 * 2**20
#: At most this many of the largest tables move to further streams (each is named on pg_dump's command line).
MAX_SPLIT_TABLES = 64
#: Once its run has ended, the rows a copy wrote per table (None if the server did not count them).
RowsReport = Callable[[], dict[str, int] | None]


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


@dataclass(frozen=True)
class StreamPlan:
    """Where the rows of the grouped tables (``group_tables``) go: the main pg_dump leaves out the rows
    of the ``moved`` tables; each group of ``archives`` goes to a data-only pg_dump of its own, each
    group of ``copies`` to a binary COPY of its own (``postgres_copy``)."""

    moved: list[Table]
    archives: list[list[Table]]
    copies: list[list[CopyTable]]

    @property
    def streams(self) -> int:
        return 1 + len(self.archives) + len(self.copies)


def plan_streams(cur: Cursor, groups: Sequence[Sequence[Table]], version: str) -> StreamPlan:
    """Each group's tables whose rows binary COPY can carry (``binary_columns``) for a copy, the others
    for a data-only archive; groups left empty are dropped. ``version``: the server's."""
    split = [table.key for group in groups for table in group]
    binary = binary_columns(cur, split) if split and (major_version(version) or 0) >= 12 else {}
    archive = [[table for table in group if table.key not in binary] for group in groups]
    copy = [
        [CopyTable(t.key, t.schema, t.name, binary[t.key]) for t in group if t.key in binary]
        for group in groups
    ]
    moved = [table for group in groups for table in group]
    return StreamPlan(moved, [group for group in archive if group], [group for group in copy if group])


def stream_facts(cur: Cursor, tables: Sequence[Table], sizes: Mapping[str, int], plan: StreamPlan) -> Facts:
    """The facts of the streams (``parts``, ``copy_parts``) and of the keys and indexes the restore
    builds early (``foreign_keys``, ``indexes``)."""
    facts: Facts = {
        "parts": [[table.key for table in group] for group in plan.archives],
        "copy_parts": [[[t.key, t.schema, t.name] for t in group] for group in plan.copies],
    }
    # Only the largest tables' foreign keys and the indexes of their tables: the others are built
    # in batches once all rows are in, and the facts stay small (a Step Functions state carries
    # them; its limit is 256 KiB). An early foreign key needs its referenced table's indexes known.
    largest = {f"{table.schema}.{table.name}" for table in largest_tables(tables, sizes)}
    facts["foreign_keys"] = {
        tag: pair for tag, pair in foreign_keys(cur).items() if largest.intersection(pair)
    }
    indexed = largest.union(*facts["foreign_keys"].values())
    facts["indexes"] = {index: table for index, table in index_tables(cur).items() if table in indexed}
    return facts


def dump_runs(
    cur: Cursor,
    conninfo: str,
    snapshot: str,
    encoding: str,
    plan: StreamPlan,
    out: BinaryIO,
    open_part: PartOpener | None,
) -> tuple[list[ToolRun], list[RowsReport]]:
    """The main pg_dump into ``out``, then a data-only pg_dump per archive group and a psql per copy
    group, each into a part ``open_part`` opens (the parts are numbered in that order); and each
    copy's rows report. All read the exported ``snapshot`` of the database ``conninfo`` names."""
    common = [
        "--format=custom",
        "--compress=0",
        f"--snapshot={snapshot}",
        f"--lock-wait-timeout={WORKER_LOCK_WAIT}",
        "--no-password",
    ]
    dbname = f"--dbname={conninfo}"
    # -b (--blobs up to 15, --large-objects from 16) is understood by every version.
    main = [*common, "-b", *[f"--exclude-table-data={table_pattern(t)}" for t in plan.moved], dbname]
    runs = [ToolRun("pg_dump", main, "the main dump", out.write)]
    reports: list[RowsReport] = []
    for archive_group in plan.archives:
        assert open_part is not None
        part = [*common, "--data-only", *[f"--table={table_pattern(t)}" for t in archive_group], dbname]
        runs.append(ToolRun("pg_dump", part, "a data-only dump", open_part().write))
    for copy_group in plan.copies:
        assert open_part is not None
        run, report = copy_run(cur, conninfo, snapshot, encoding, copy_group, open_part())
        runs.append(run)
        reports.append(report)
    return runs, reports


def copy_run(
    cur: Cursor, conninfo: str, snapshot: str, encoding: str, tables: Sequence[CopyTable], out: BinaryIO
) -> tuple[ToolRun, RowsReport]:
    """One psql writing the rows of ``tables`` into the part ``out``; and, once it has run, the rows
    it wrote per table (None if the server did not count them)."""
    writer = PartWriter(out.write, tables)
    separator = secrets.token_hex(16)
    args = copy_out_args(cur, conninfo, snapshot, WORKER_LOCK_WAIT, encoding, tables, separator)
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


def table_pattern(table: Table) -> str:
    """An exact pg_dump table pattern: inside double quotes nothing is a wildcard."""
    return ".".join('"' + name.replace('"', '""') + '"' for name in (table.schema, table.name))
