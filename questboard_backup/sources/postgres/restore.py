"""A parallel pg_restore from streams: pg_restore -j needs a seekable archive, and this project never
writes a decrypted dump to disk, so this module schedules the archive's entries itself.

A backup holds a main archive (part 0: the whole database but the rows of its largest tables) and
possibly further data-only archives (parts 1..n, one per group of large tables, dumped in the same
snapshot). The main archive's table of contents (``pg_restore -l``, in its serial restore order) is cut
where the data starts and where it ends. What comes before the data runs first, on one process. Then
the data: each further part on a process of its own, which decodes only that part, and the main
archive's data split by row count over the processes left of ``jobs``. As each table's rows are in,
its indexes, keys, row count and foreign keys start (``_Schedule``), up to ``jobs`` at once and never
two that would wait for each other's table locks. Everything else (the remaining foreign keys, index
attachments, triggers, ACLs...) runs last, in order. Each process reads its own authenticated stream;
every part is read to its sealed end by one of them, so the whole backup has been authenticated
before the caller swaps anything in. The plan is read off the listings in ``restore_plan``; the
pg_restore processes are run by ``pg_restore``.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from questboard_backup.errors import IntegrityError
from questboard_backup.sources.base import StreamOpener
from questboard_backup.sources.postgres.pg_restore import read_tocs, restore_entries
from questboard_backup.sources.postgres.restore_plan import (
    PARALLEL_AFTER_DATA,
    RestorePlan,
    Run,
    entry_kind,
    fk_key,
    loaded_tables,
    names_of,
    plan_restore,
    post_table,
    table_of,
)
from questboard_backup.sources.postgres.tools import Cancel, Cancelled, ClientTools

# Run, entry_kind, plan_restore and read_tocs are still imported from here, where they were before the
# plan and the pg_restore processes had modules of their own.
__all__ = ["Run", "_Schedule", "entry_kind", "first_cause", "parallel_restore", "plan_restore", "read_tocs"]

logger = logging.getLogger(__name__)
#: Counts the rows of (schema, table) pairs: ``count_rows(pairs, cancel)``.
CountRows = Callable[[Sequence[tuple[str, str]], Cancel], Mapping[str, int]]
#: Loads a copy part and returns the rows loaded per table: ``load_copy(part, tables, cancel)``.
LoadCopy = Callable[[int, Sequence[Sequence[str]], Cancel], Mapping[str, int]]


# PostgreSQL's table lock modes the steps take, and which of them conflict.
ACCESS_SHARE, SHARE = "AccessShare", "Share"
SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE = "ShareRowExclusive", "AccessExclusive"
_CONFLICTS = {
    ACCESS_SHARE: {ACCESS_EXCLUSIVE},
    SHARE: {SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE},
    SHARE_ROW_EXCLUSIVE: {SHARE, SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE},
    ACCESS_EXCLUSIVE: {ACCESS_SHARE, SHARE, SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE},
}


Step = tuple[str, str]  # ("post", TOC line) or ("count", table)


class _Schedule:
    """Which step may start next, like ``pg_restore -j`` decides for a seekable archive.

    Data runs first. Then each step as soon as what it needs is in and no running step holds a lock it
    would wait for: an index (``Share`` on its table) or table constraint (``AccessExclusive``) once its
    table's rows are in; a row count (``AccessShare``) likewise; a foreign key (``ShareRowExclusive`` on
    both tables) once both tables' rows are in and the referenced table's keys are built. Tables are
    named as the listing names them (``schema.table``). Entries whose table is unknown (indexes of
    tables the facts do not map) go together once every table's rows are in: each statement of a
    pg_restore process locks one table at a time, so at worst they wait, never deadlock. The heaviest
    step goes first; small ones of a kind go together, so small tables cost one process, not one each.
    """

    SMALL_ROWS = 50_000

    def __init__(
        self,
        plan: RestorePlan,
        rows: Mapping[str, int],
        index_tables: Mapping[str, str],
        foreign_keys: Mapping[str, Sequence[str]],
    ) -> None:
        self._data = list(plan.data)
        self._data_running = 0
        self._data_line = loaded_tables([line for run in plan.data for line in run.entries])
        self._unloaded = set(self._data_line)
        self._rows = rows
        self._order = {line: index for index, line in enumerate(plan.post)}
        self._pending: dict[Step, dict[str, str]] = {}  # step -> the locks it takes
        self._started: dict[Step, dict[str, str]] = {}
        self._referenced: dict[str, str] = {}
        for line in plan.post:
            kind = entry_kind(line)
            if kind == "FK CONSTRAINT":
                table, referenced = foreign_keys[fk_key(line)][:2]
                self._referenced[line] = referenced
                locks = {table: SHARE_ROW_EXCLUSIVE, referenced: SHARE_ROW_EXCLUSIVE}
            else:
                target = post_table(line, index_tables)
                locks = {target: SHARE if kind == "INDEX" else ACCESS_EXCLUSIVE} if target else {}
            if not set(locks) <= set(self._data_line):
                locks = {}  # a table without rows in the archives: unknown
            self._pending[("post", line)] = locks
        # A copy part's load reports its rows itself.
        copied = {table_of(line) for run in plan.data if run.kind == "copy" for line in run.entries}
        for table in self._data_line:
            if table not in copied:
                self._pending[("count", table)] = {table: ACCESS_SHARE}
        self._held: dict[str, list[str]] = {}

    def _weight(self, step: Step) -> int:
        return max((self._rows.get(table, 0) for table in self._pending[step]), default=0)

    def _keys_pending(self, table: str) -> bool:
        return any(
            kind == "post" and entry_kind(line) in PARALLEL_AFTER_DATA and table in locks
            for steps in (self._pending, self._started)
            for (kind, line), locks in steps.items()
        )

    def _free(self, locks: Mapping[str, str]) -> bool:
        return all(
            held not in _CONFLICTS[mode]
            for table, mode in locks.items()
            for held in self._held.get(table, [])
        )

    def _ready(self, step: Step) -> bool:
        locks = self._pending[step]
        if not locks:
            return not self._data and not self._data_running
        if set(locks) & self._unloaded:
            return False
        kind, line = step
        # A foreign key's referenced table needs its unique index: wait for that table's known keys and
        # indexes, and for every index of unknown table (it may be that one).
        if (
            kind == "post"
            and line in self._referenced
            and (self._keys_pending(self._referenced[line]) or self._unknown_outstanding())
        ):
            return False
        return self._free(locks)

    def _unknown_outstanding(self) -> bool:
        return any(
            kind == "post" and not locks
            for steps in (self._pending, self._started)
            for (kind, _line), locks in steps.items()
        )

    def next(self) -> Run | None:
        """The next step that may start now, or None (wait for a running one to finish)."""
        if self._data:
            self._data_running += 1
            return self._data.pop(0)
        ready = [step for step in self._pending if self._ready(step)]
        if not ready:
            return None
        unknown = [step for step in ready if not self._pending[step]]
        if unknown:
            chosen = unknown
        else:
            heaviest = max(ready, key=self._weight)
            chosen = [heaviest]
            if self._weight(heaviest) < self.SMALL_ROWS:
                chosen += [
                    step
                    for step in ready
                    if step != heaviest and step[0] == heaviest[0] and self._weight(step) < self.SMALL_ROWS
                ]
        taken = []
        for step in chosen:
            if step is chosen[0] or not self._pending[step] or self._free(self._pending[step]):
                taken.append(step)
                locks = self._pending.pop(step)
                self._started[step] = locks
                for table, mode in locks.items():
                    self._held.setdefault(table, []).append(mode)
        if taken[0][0] == "count":
            return Run(0, [self._data_line[table] for _kind, table in taken], False, kind="count")
        lines = sorted((line for _kind, line in taken), key=self._order.__getitem__)
        return Run(0, lines, False, kind="post")

    def done(self, run: Run) -> None:
        if run.kind in ("data", "copy"):
            self._data_running -= 1
            self._unloaded.difference_update(
                table_of(line) for line in run.entries if entry_kind(line) == "TABLE DATA"
            )
            return
        if run.kind == "count":
            steps = [("count", table_of(line)) for line in run.entries]
        else:
            steps = [("post", line) for line in run.entries]
        for step in steps:
            for table, mode in self._started.pop(step).items():
                self._held[table].remove(mode)

    @property
    def finished(self) -> bool:
        return not self._data and not self._pending


def first_cause(errors: Sequence[BaseException]) -> BaseException:
    """The error a failed restore reports: the first that did not come from a step stopped because
    another had failed."""
    return next((error for error in errors if not isinstance(error, Cancelled)), errors[0])


class _Steps:
    """Carries out the steps of one restore, each on a thread of its own: the first to fail cancels the
    others at once (``Cancel``). ``counted`` gathers the rows counted, and those a copy part loaded."""

    def __init__(
        self,
        tools: ClientTools,
        dbname_arg: str,
        open_stream: StreamOpener,
        folder: Path,
        count_rows: CountRows | None,
        load_copy: LoadCopy | None,
    ) -> None:
        self._tools, self._dbname_arg, self._open_stream = tools, dbname_arg, open_stream
        self._folder = folder
        self._numbers = itertools.count()  # next() on it is atomic: steps start from several threads
        self._count_rows, self._load_copy = count_rows, load_copy
        self.cancel = Cancel()
        self.counted: dict[str, int] = {}
        self._lock = threading.Lock()

    def run(self, run: Run) -> None:
        try:
            self._run(run)
        except BaseException:
            self.cancel.cancel()  # at once, not when the scheduling loop gets to it
            raise

    def _run(self, run: Run) -> None:
        if run.kind == "copy":
            assert self._load_copy is not None
            counts = self._load_copy(run.part, run.tables, self.cancel)
        elif run.kind == "count":
            if self._count_rows is None:
                return
            counts = self._count_rows([names_of(line) for line in run.entries], self.cancel)
        else:
            listing = Path(self._folder, f"{next(self._numbers)}.list")
            restore_entries(self._tools, self._dbname_arg, self._open_stream, listing, run, self.cancel)
            return
        with self._lock:
            self.counted.update(counts)


def parallel_restore(
    tools: ClientTools,
    dbname_arg: str,
    open_stream: StreamOpener,
    tocs: Sequence[Sequence[str]],
    rows: Mapping[str, int],
    jobs: int,
    index_tables: Mapping[str, str] | None = None,
    foreign_keys: Mapping[str, Sequence[str]] | None = None,
    count_rows: CountRows | None = None,
    once_loaded: Callable[[Mapping[str, int]], object] | None = None,
    copy_parts: Sequence[Sequence[Sequence[str]]] = (),
    load_copy: LoadCopy | None = None,
) -> None:
    """Restore the main archive and its further parts, listed by ``tocs`` (``read_tocs``), into the
    (empty, staging) database named by ``dbname_arg``, on up to ``jobs`` processes at once.

    ``index_tables`` (index -> table) and ``foreign_keys`` (listing tag -> [table, referenced table]),
    from the dump's facts, let indexes and foreign keys start as soon as their tables are in, while
    other tables still load. ``count_rows(pairs, cancel)`` counts the rows of (schema, table) pairs,
    each as soon as its rows are in; ``once_loaded`` (the caller's checks) gets those counts and runs
    beside the last, single-process step (the remaining foreign keys, triggers, grants). Its error is
    raised like a restore error once that step stopped. ``load_copy(part, tables, cancel)`` loads a
    copy part (the facts' ``copy_parts``) and returns the rows loaded per table, which count as
    counted. The first step that fails stops the others (``Cancel``) and its error is raised.
    """
    plan = plan_restore(tocs, jobs, rows, foreign_keys, copy_parts)
    if copy_parts and load_copy is None:
        raise ValueError("copy parts need load_copy")
    with tempfile.TemporaryDirectory(prefix="qb-toc-") as folder:
        steps = _Steps(tools, dbname_arg, open_stream, Path(folder), count_rows, load_copy)
        started = time.monotonic()
        if plan.before:
            steps.run(Run(0, plan.before, False))
        _run_scheduled(_Schedule(plan, rows, index_tables or {}, foreign_keys or {}), steps, jobs)
        logger.info("postgres rows and indexes restored seconds=%.1f", time.monotonic() - started)
        _run_last(steps, plan.rest, once_loaded)


def _run_scheduled(schedule: _Schedule, steps: _Steps, jobs: int) -> None:
    """Start each step as soon as the schedule lets it, up to ``jobs`` at once, until none is left; the
    first failure is raised once the steps still going have stopped."""
    workers = max(jobs, 1)
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qb-pg-restore") as pool:
        running: dict[Future[None], Run] = {}
        while not errors and not (schedule.finished and not running):
            while len(running) < workers and (run := schedule.next()) is not None:
                running[pool.submit(steps.run, run)] = run
            if not running:
                raise IntegrityError("postgres: the restore plan cannot proceed (entries left unscheduled)")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                run = running.pop(future)
                if (error := future.exception()) is not None:
                    errors.append(error)
                else:
                    schedule.done(run)
        # After a failure, let the runs already going stop (cancelled) before raising. The step that
        # failed first may end after a step it cancelled: the error reported is never a Cancelled
        # while another one is there.
        wait(running)
        errors += [error for future in running if (error := future.exception()) is not None]
    if errors:
        raise first_cause(errors)


def _run_last(
    steps: _Steps, rest: list[str], once_loaded: Callable[[Mapping[str, int]], object] | None
) -> None:
    """The last entries (``rest``) on one process, while ``once_loaded`` checks the counts beside it; its
    error is raised once that step stopped."""
    check_errors: list[BaseException] = []

    def check() -> None:
        try:
            if once_loaded is not None:
                once_loaded(steps.counted)
        except BaseException as error:  # noqa: BLE001 - raised below once the last step stopped
            check_errors.append(error)

    checker = threading.Thread(target=check, name="qb-pg-restore-check")
    checker.start()
    try:
        if rest:
            steps.run(Run(0, rest, False))
    finally:
        checker.join()
    if check_errors:
        raise check_errors[0]
