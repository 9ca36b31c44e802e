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
before the caller swaps anything in.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from questboard_backup.errors import IntegrityError, SourceError
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.sources.base import StreamOpener
from questboard_backup.sources.postgres.tools import (
    Cancel,
    Cancelled,
    ClientTools,
    StderrTail,
    feed,
    stop,
    widen_pipe,
)

DATA_KINDS = ("TABLE DATA", "SEQUENCE SET", "BLOBS", "BLOB DATA", "LARGE OBJECTS")
PARALLEL_AFTER_DATA = ("INDEX", "CONSTRAINT")
_KNOWN_KINDS = sorted(
    (*DATA_KINDS, "FK CONSTRAINT", "INDEX ATTACH", "MATERIALIZED VIEW DATA", *PARALLEL_AFTER_DATA),
    key=len,
    reverse=True,
)
#: Opens one part's authenticated stream (a StreamOpener bound to its part).
_Opener = Callable[[], AbstractContextManager[BinaryIO]]
logger = logging.getLogger(__name__)
_ENTRY = re.compile(r"^\d+; \d+ \d+ (?P<rest>.*)$")


class _StoppedReading(Exception):
    """The tool exited before the end of the stream, where that is fine (it needed only the TOC)."""


def entry_kind(line: str) -> str:
    match = _ENTRY.match(line)
    if not match:
        return ""
    rest = match.group("rest")
    return next((kind for kind in _KNOWN_KINDS if rest.startswith(kind + " ")), rest.split(" ", 1)[0])


def _names_of(line: str) -> tuple[str, str]:
    """``("public", "users")`` from ``"3385; 0 16386 TABLE DATA public users owner"``."""
    parts = line.split(" ")
    return (parts[-3], parts[-2]) if len(parts) >= 3 else ("", "")


def _table_of(line: str) -> str:
    schema, name = _names_of(line)
    return f"{schema}.{name}" if schema else ""


#: Words in a listing line whose names have no spaces: "ID; catalog oid KIND schema tag owner", the tag
#: of a table constraint being "table name".
_PLAIN_WORDS = {"TABLE DATA": 8, "INDEX": 7, "CONSTRAINT": 8, "FK CONSTRAINT": 9}


def _plain(line: str) -> bool:
    """True when the line's names can be read off it (no name holds a space)."""
    return len(line.split(" ")) == _PLAIN_WORDS.get(entry_kind(line), -1)


def _loaded_tables(lines: Sequence[str]) -> dict[str, str]:
    """The tables whose rows these TABLE DATA lines load, each by the one line naming it; tables whose
    names cannot be read off unambiguously (a space in a name; a dot making two names read alike) are
    left out, so every step on them waits until all rows are in."""
    named: dict[str, list[str]] = {}
    for line in lines:
        if entry_kind(line) == "TABLE DATA" and _plain(line):
            named.setdefault(_table_of(line), []).append(line)
    return {table: found[0] for table, found in named.items() if len(found) == 1}


def split_by_weight(lines: Sequence[str], jobs: int, weight: Callable[[str], int]) -> list[list[str]]:
    """Greedy: heaviest first onto the lightest list; each list keeps the archive's order."""
    order = {line: index for index, line in enumerate(lines)}
    bins: list[list[str]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for line in sorted(lines, key=weight, reverse=True):
        lightest = loads.index(min(loads))
        bins[lightest].append(line)
        loads[lightest] += max(weight(line), 1)
    return [sorted(group, key=order.__getitem__) for group in bins if group]


@dataclass(frozen=True)
class Run:
    """One step: a pg_restore process restoring ``entries`` from ``part`` (reading that part to its
    sealed end with ``to_end``, which authenticates all of it); for ``kind`` "copy", the loading of a
    copy part's ``tables`` (``entries`` then names them as listing lines would); for ``kind`` "count",
    the row counts of the tables whose TABLE DATA ``entries`` name."""

    part: int
    entries: list[str]
    to_end: bool
    kind: str = "data"  # "data" (rows), "copy" (rows of a copy part), "post" (indexes, keys...) or "count"
    #: A copy part's tables, ``[key, schema, name]`` each, in the part's order.
    tables: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class RestorePlan:
    """``before`` runs first on one process; then the ``data`` runs at once, and each ``post`` entry
    (indexes, table constraints, and foreign keys whose tables the facts name) as soon as what it
    needs is in; ``rest`` last, in archive order on one process (other foreign keys, triggers, grants)."""

    before: list[str]
    data: list[Run]
    post: list[str]
    rest: list[str]


def plan_restore(
    tocs: Sequence[Sequence[str]],
    jobs: int,
    rows: Mapping[str, int],
    foreign_keys: Mapping[str, Sequence[str]] | None = None,
    copy_parts: Sequence[Sequence[Sequence[str]]] = (),
) -> RestorePlan:
    """``tocs[0]`` lists the main archive, ``tocs[k]`` the data-only archive part k, of which only table
    data is restored (its sequence values are the main archive's business); the copy parts follow
    them, numbered on from ``len(tocs)``, each listing its tables as ``[key, schema, name]``."""
    entries = [line for line in tocs[0] if _ENTRY.match(line)]
    further = [[line for line in toc if entry_kind(line) == "TABLE DATA"] for toc in tocs[1:]]
    data_positions = [i for i, line in enumerate(entries) if entry_kind(line) in DATA_KINDS]
    if not data_positions:
        if any(further) or copy_parts:
            raise IntegrityError("postgres: the main archive holds no data but further parts do")
        return RestorePlan(entries, [Run(part, [], True) for part in range(len(tocs))], [], [])
    first, last = data_positions[0], data_positions[-1]
    before, data, after = entries[:first], entries[first : last + 1], entries[last + 1 :]
    main_jobs = max(1, jobs - len(further) - len(copy_parts))
    main_data = split_by_weight(data, main_jobs, lambda line: rows.get(_table_of(line), 0))
    # The first main data run and every part's run read their stream to its sealed end: the whole
    # backup is authenticated once the data is in.
    runs = [Run(0, group, index == 0) for index, group in enumerate(main_data)]
    runs += [Run(part, group, True) for part, group in enumerate(further, start=1)]
    for part, tables in enumerate(copy_parts, start=len(tocs)):
        if not tables or any(len(table) != 3 for table in tables):
            raise IntegrityError("postgres: the manifest facts list a copy part unreadably")
        lines = [f"0; 0 0 TABLE DATA {schema} {name} -" for _key, schema, name in tables]
        runs.append(Run(part, lines, True, kind="copy", tables=tuple(tuple(table) for table in tables)))

    loaded = set(_loaded_tables([line for run in runs for line in run.entries]))

    def early(line: str) -> bool:
        """Indexes and keys; foreign keys only where both tables are known to load here (else one could
        start before the key it references exists)."""
        kind = entry_kind(line)
        if kind == "FK CONSTRAINT":
            tables = (foreign_keys or {}).get(_fk_key(line)) if _plain(line) else None
            return tables is not None and set(tables[:2]) <= loaded
        return kind in PARALLEL_AFTER_DATA

    return RestorePlan(
        before,
        runs,
        [line for line in after if early(line)],
        [line for line in after if not early(line)],
    )


def _fk_key(line: str) -> str:
    # "3413; 2606 16423 FK CONSTRAINT public quests quests_posted_by_fkey owner" -> "public quests quests_posted_by_fkey"
    return " ".join(line.split(" ")[-4:-1])


def post_table(line: str, index_tables: Mapping[str, str]) -> str | None:
    """The table an index or table constraint entry works on, where the listing and the dump's facts
    tell it (None: unknown)."""
    if not _plain(line):
        return None
    parts = line.split(" ")
    kind = entry_kind(line)
    if kind == "CONSTRAINT":
        # "3410; 2606 16420 CONSTRAINT public users users_pkey owner": only a key or unique constraint
        # (its index, named alike, is in the facts) is known to touch no other table; a CHECK added
        # NOT VALID to an inheritance parent would reach children still loading.
        table = f"{parts[-4]}.{parts[-3]}"
        return table if index_tables.get(f"{parts[-4]}.{parts[-2]}") == table else None
    if kind == "INDEX":
        # "3412; 1259 16422 INDEX public submissions_by_quest owner": the facts map the index to its table
        return index_tables.get(_table_of(line))
    return None


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
        self._data_line = _loaded_tables([line for run in plan.data for line in run.entries])
        self._unloaded = set(self._data_line)
        self._rows = rows
        self._order = {line: index for index, line in enumerate(plan.post)}
        self._pending: dict[Step, dict[str, str]] = {}  # step -> the locks it takes
        self._started: dict[Step, dict[str, str]] = {}
        self._referenced: dict[str, str] = {}
        for line in plan.post:
            kind = entry_kind(line)
            if kind == "FK CONSTRAINT":
                table, referenced = foreign_keys[_fk_key(line)][:2]
                self._referenced[line] = referenced
                locks = {table: SHARE_ROW_EXCLUSIVE, referenced: SHARE_ROW_EXCLUSIVE}
            else:
                target = post_table(line, index_tables)
                locks = {target: SHARE if kind == "INDEX" else ACCESS_EXCLUSIVE} if target else {}
            if not set(locks) <= set(self._data_line):
                locks = {}  # a table without rows in the archives: unknown
            self._pending[("post", line)] = locks
        # A copy part's load reports its rows itself.
        copied = {_table_of(line) for run in plan.data if run.kind == "copy" for line in run.entries}
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
                _table_of(line) for line in run.entries if entry_kind(line) == "TABLE DATA"
            )
            return
        if run.kind == "count":
            steps = [("count", _table_of(line)) for line in run.entries]
        else:
            steps = [("post", line) for line in run.entries]
        for step in steps:
            for table, mode in self._started.pop(step).items():
                self._held[table].remove(mode)

    @property
    def finished(self) -> bool:
        return not self._data and not self._pending


def read_tocs(tools: ClientTools, open_stream: StreamOpener, parts: int) -> list[list[str]]:
    """The listings of the main archive and its ``parts`` further parts, read at once (each reads only
    the head of its stream)."""
    with ThreadPoolExecutor(max_workers=parts + 1, thread_name_prefix="qb-pg-toc") as pool:
        return list(
            pool.map(lambda part: read_toc(tools, functools.partial(open_stream, part)), range(parts + 1))
        )


def read_toc(tools: ClientTools, open_stream: _Opener) -> list[str]:
    output = _run(tools, ["--list"], open_stream, capture=True, verify=False)
    return output.splitlines()


def _run(
    tools: ClientTools,
    args: Sequence[str],
    open_stream: _Opener,
    capture: bool = False,
    verify: bool = True,
    cancel: Cancel | None = None,
) -> str:
    """pg_restore fed from a stream. With ``verify`` the stream is read to its sealed end even if the
    tool stops reading early, so the with-block's exit authenticates it all. ``cancel`` may kill the
    tool, and the run then raises Cancelled."""
    process = tools.start(
        "pg_restore",
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        bufsize=0,
    )
    assert process.stdin is not None and process.stderr is not None
    if cancel is not None:
        cancel.track(process)
    widen_pipe(process.stdin)
    tail = StderrTail(process.stderr)
    output: list[bytes] = []
    reader_thread = None
    if capture:
        assert process.stdout is not None
        stdout = process.stdout
        reader_thread = threading.Thread(target=lambda: output.append(stdout.read()), daemon=True)
        reader_thread.start()
    try:
        try:
            with open_stream() as reader:
                if not feed(reader, process.stdin):
                    if cancel is not None:
                        cancel.check()
                    if not verify:
                        raise _StoppedReading
                    _drain(reader)
        except _StoppedReading:
            pass
        with contextlib.suppress(BrokenPipeError, OSError):
            process.stdin.close()
        returncode = process.wait()
    except BaseException:
        stop(process)
        raise
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()
        process.wait()
        if cancel is not None:
            cancel.untrack(process)
        if reader_thread is not None:
            reader_thread.join()
        summary = tail.summary()
    if returncode != 0:
        if cancel is not None:
            cancel.check()
        raise SourceError(f"pg_restore failed (exit {returncode}): {tools.scrub(summary)}")
    return b"".join(output).decode("utf-8", "replace")


def _run_group(
    tools: ClientTools, dbname_arg: str, open_stream: StreamOpener, listing: Path, run: Run, cancel: Cancel
) -> None:
    opener = functools.partial(open_stream, run.part)
    if not run.entries:  # nothing to restore from this part, but it must still be authenticated
        _read_to_end(opener)
        return
    listing.write_text("\n".join(run.entries) + "\n", encoding="utf-8")
    args = ["--exit-on-error", "--no-password", dbname_arg, f"--use-list={listing}"]
    _run(tools, args, opener, verify=run.to_end, cancel=cancel)


def _read_to_end(opener: _Opener) -> None:
    with opener() as reader:
        _drain(reader)


def _drain(reader: BinaryIO) -> None:
    """Read the rest of a stream (to its sealed end, which the opener's exit then checks)."""
    buffer = bytearray(READ_SIZE)
    while reader.readinto(buffer):  # type: ignore[attr-defined]
        pass


def first_cause(errors: Sequence[BaseException]) -> BaseException:
    """The error a failed restore reports: the first that did not come from a step stopped because
    another had failed."""
    return next((error for error in errors if not isinstance(error, Cancelled)), errors[0])


def parallel_restore(
    tools: ClientTools,
    dbname_arg: str,
    open_stream: StreamOpener,
    tocs: Sequence[Sequence[str]],
    rows: Mapping[str, int],
    jobs: int,
    index_tables: Mapping[str, str] | None = None,
    foreign_keys: Mapping[str, Sequence[str]] | None = None,
    count_rows: Callable[[Sequence[tuple[str, str]], Cancel], Mapping[str, int]] | None = None,
    once_loaded: Callable[[Mapping[str, int]], object] | None = None,
    copy_parts: Sequence[Sequence[Sequence[str]]] = (),
    load_copy: Callable[[int, Sequence[Sequence[str]], Cancel], Mapping[str, int]] | None = None,
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
    counted: dict[str, int] = {}
    counted_lock = threading.Lock()
    cancel = Cancel()
    with tempfile.TemporaryDirectory(prefix="qb-toc-") as folder:
        listings = (Path(folder, f"{number}.list") for number in itertools.count())

        def run_one(run: Run) -> None:
            try:
                run_step(run)
            except BaseException:
                cancel.cancel()  # at once, not when the loop below gets to it
                raise

        def run_step(run: Run) -> None:
            if run.kind == "copy":
                assert load_copy is not None
                counts = load_copy(run.part, run.tables, cancel)
            elif run.kind == "count":
                if count_rows is None:
                    return
                counts = count_rows([_names_of(line) for line in run.entries], cancel)
            else:
                _run_group(tools, dbname_arg, open_stream, next(listings), run, cancel)
                return
            with counted_lock:
                counted.update(counts)

        started = time.monotonic()
        if plan.before:
            run_one(Run(0, plan.before, False))
        schedule = _Schedule(plan, rows, index_tables or {}, foreign_keys or {})
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="qb-pg-restore") as pool:
            running: dict[Future[None], Run] = {}
            while not errors and not (schedule.finished and not running):
                while len(running) < max(jobs, 1) and (run := schedule.next()) is not None:
                    running[pool.submit(run_one, run)] = run
                if not running:
                    raise IntegrityError(
                        "postgres: the restore plan cannot proceed (entries left unscheduled)"
                    )
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
        logger.info("postgres rows and indexes restored seconds=%.1f", time.monotonic() - started)
        check_errors: list[BaseException] = []

        def check() -> None:
            try:
                if once_loaded is not None:
                    once_loaded(counted)
            except BaseException as error:  # noqa: BLE001 - raised below once the last step stopped
                check_errors.append(error)

        checker = threading.Thread(target=check, name="qb-pg-restore-check")
        checker.start()
        try:
            if plan.rest:
                run_one(Run(0, plan.rest, False))
        finally:
            checker.join()
        if check_errors:
            raise check_errors[0]
