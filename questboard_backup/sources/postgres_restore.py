"""A parallel pg_restore from streams: pg_restore -j needs a seekable archive, and this project never
writes a decrypted dump to disk, so the archive's own order is split into phases instead.

A backup holds a main archive (part 0: the whole database but the rows of its largest tables) and
possibly further data-only archives (parts 1..n, one per group of large tables, dumped in the same
snapshot). The main archive's table of contents (``pg_restore -l``, in its serial restore order) is cut
where the data starts and where it ends. Phase 1 restores everything before the data; phase 2 the
data: each further part on a process of its own, which decodes only that part, and the main
archive's data split by row count over the processes left of ``jobs``; phase 3 the plain indexes and
table constraints, split the same way; phase 4 everything else in order (foreign keys, index
attachments, triggers, ACLs...). Each process reads its own authenticated stream; every part is read
to its sealed end by one of them, so the whole backup has been authenticated before the caller swaps
anything in.
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
from questboard_backup.sources.postgres_tools import ClientTools, StderrTail, feed, stop

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


def _table_of(line: str) -> str:
    parts = line.split(" ")
    # "3385; 0 16386 TABLE DATA public users owner" -> "public.users"
    return f"{parts[-3]}.{parts[-2]}" if len(parts) >= 3 else ""


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
    """One pg_restore process: the TOC entries it restores from ``part``, and whether it reads that
    part to its sealed end (which authenticates all of it)."""

    part: int
    entries: list[str]
    to_end: bool
    post: bool = False  # post-data entries (indexes, table constraints), not rows


@dataclass(frozen=True)
class RestorePlan:
    """``before`` runs first on one process; then the ``data`` runs at once, and each ``post`` entry
    (plain indexes and table constraints) as soon as the rows of its table are in; ``rest`` last, in
    archive order on one process (foreign keys need every key; triggers and grants come after)."""

    before: list[str]
    data: list[Run]
    post: list[str]
    rest: list[str]


def plan_restore(tocs: Sequence[Sequence[str]], jobs: int, rows: Mapping[str, int]) -> RestorePlan:
    """``tocs[0]`` lists the main archive, ``tocs[k]`` the data-only part k, of which only table data is
    restored (its sequence values are the main archive's business)."""
    entries = [line for line in tocs[0] if _ENTRY.match(line)]
    further = [[line for line in toc if entry_kind(line) == "TABLE DATA"] for toc in tocs[1:]]
    data_positions = [i for i, line in enumerate(entries) if entry_kind(line) in DATA_KINDS]
    if not data_positions:
        if any(further):
            raise IntegrityError("postgres: the main archive holds no data but further parts do")
        return RestorePlan(entries, [Run(part, [], True) for part in range(len(tocs))], [], [])
    first, last = data_positions[0], data_positions[-1]
    before, data, after = entries[:first], entries[first : last + 1], entries[last + 1 :]
    main_jobs = max(1, jobs - len(further))
    main_data = split_by_weight(data, main_jobs, lambda line: rows.get(_table_of(line), 0))
    runs = [Run(0, group, index == 0) for index, group in enumerate(main_data)]
    runs += [Run(part, group, True) for part, group in enumerate(further, start=1)]
    return RestorePlan(
        before,
        runs,
        [line for line in after if entry_kind(line) in PARALLEL_AFTER_DATA],
        [line for line in after if entry_kind(line) not in PARALLEL_AFTER_DATA],
    )


def post_table(line: str, index_tables: Mapping[str, str]) -> str | None:
    """The table an index or table constraint entry works on, where the listing and the dump's facts
    tell it (None: unknown, so it waits for every table's rows)."""
    parts = line.split(" ")
    kind = entry_kind(line)
    if kind == "CONSTRAINT" and len(parts) >= 4:
        # "3410; 2606 16420 CONSTRAINT public users users_pkey owner" -> "public.users"
        return f"{parts[-4]}.{parts[-3]}"
    if kind == "INDEX":
        # "3412; 1259 16422 INDEX public submissions_by_quest owner": the facts map the index to its table
        return index_tables.get(_table_of(line))
    return None


class _Schedule:
    """Which run may start next: data runs first; then the heaviest post-data entry whose table is
    loaded and not locked against it (ADD CONSTRAINT locks its table exclusively, CREATE INDEX shares
    it), together with every other startable small entry so small tables cost one process, not many."""

    SMALL_ROWS = 50_000

    def __init__(self, plan: RestorePlan, rows: Mapping[str, int], index_tables: Mapping[str, str]) -> None:
        self._data = list(plan.data)
        self._data_running = 0
        self._order = {line: index for index, line in enumerate(plan.post)}
        self._post = list(plan.post)
        self._table = {line: post_table(line, index_tables) for line in plan.post}
        self._rows = rows
        self._unloaded = {
            _table_of(line) for run in plan.data for line in run.entries if entry_kind(line) == "TABLE DATA"
        }
        self._shared: dict[str, int] = {}
        self._exclusive: set[str] = set()

    def _weight(self, line: str) -> int:
        table = self._table[line]
        return self._rows.get(table, 0) if table else 0

    def _ready(self, line: str) -> bool:
        table = self._table[line]
        if table is None or table not in self._rows:
            return not self._data and not self._data_running  # unknown: after every table's rows
        if table in self._unloaded or table in self._exclusive:
            return False
        return entry_kind(line) != "CONSTRAINT" or not self._shared.get(table)

    def next(self) -> Run | None:
        """The next run that may start now, or None (wait for a running one to finish)."""
        if self._data:
            self._data_running += 1
            return self._data.pop(0)
        ready = [line for line in self._post if self._ready(line)]
        if not ready:
            return None
        heaviest = max(ready, key=self._weight)
        chosen = [heaviest]
        if self._weight(heaviest) < self.SMALL_ROWS:
            chosen = [line for line in ready if self._weight(line) < self.SMALL_ROWS]
        for line in chosen:
            self._post.remove(line)
            table = self._table[line] or ""
            if entry_kind(line) == "CONSTRAINT":
                self._exclusive.add(table)
            else:
                self._shared[table] = self._shared.get(table, 0) + 1
        chosen.sort(key=self._order.__getitem__)
        return Run(0, chosen, False, post=True)

    def done(self, run: Run) -> None:
        if not run.post:
            self._data_running -= 1
            self._unloaded.difference_update(
                _table_of(line) for line in run.entries if entry_kind(line) == "TABLE DATA"
            )
            return
        for line in run.entries:
            table = self._table[line] or ""
            if entry_kind(line) == "CONSTRAINT":
                self._exclusive.discard(table)
            else:
                self._shared[table] -= 1

    @property
    def finished(self) -> bool:
        return not self._data and not self._post


def read_toc(tools: ClientTools, open_stream: _Opener) -> list[str]:
    output = _run(tools, ["--list"], open_stream, capture=True, verify=False)
    return output.splitlines()


def _run(
    tools: ClientTools,
    args: Sequence[str],
    open_stream: _Opener,
    capture: bool = False,
    verify: bool = True,
) -> str:
    """pg_restore fed from a stream. With ``verify`` the stream is read to its sealed end even if the
    tool stops reading early, so the with-block's exit authenticates it all."""
    process = tools.start(
        "pg_restore",
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        bufsize=0,
    )
    assert process.stdin is not None and process.stderr is not None
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
                    if not verify:
                        raise _StoppedReading
                    while reader.read(READ_SIZE):
                        pass
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
        if reader_thread is not None:
            reader_thread.join()
        summary = tail.summary()
    if returncode != 0:
        raise SourceError(f"pg_restore failed (exit {returncode}): {tools.scrub(summary)}")
    return b"".join(output).decode("utf-8", "replace")


def _run_group(
    tools: ClientTools, dbname_arg: str, open_stream: StreamOpener, listing: Path, run: Run
) -> None:
    opener = functools.partial(open_stream, run.part)
    if not run.entries:  # nothing to restore from this part, but it must still be authenticated
        _read_to_end(opener)
        return
    listing.write_text("\n".join(run.entries) + "\n", encoding="utf-8")
    args = ["--exit-on-error", "--no-password", dbname_arg, f"--use-list={listing}"]
    _run(tools, args, opener, verify=run.to_end)


def _read_to_end(opener: _Opener) -> None:
    buffer = bytearray(READ_SIZE)
    with opener() as reader:
        while reader.readinto(buffer):  # type: ignore[attr-defined]
            pass


def parallel_restore(
    tools: ClientTools,
    dbname_arg: str,
    open_stream: StreamOpener,
    rows: Mapping[str, int],
    jobs: int,
    parts: int = 0,
    index_tables: Mapping[str, str] | None = None,
    once_loaded: Callable[[], object] | None = None,
) -> None:
    """Restore the main archive and its ``parts`` further parts into the (empty, staging) database
    named by ``dbname_arg``, on up to ``jobs`` processes at once.

    ``index_tables`` (index -> table, from the dump's facts) lets an index be built as soon as its
    table's rows are in, while other tables still load. ``once_loaded`` (the caller's checks of the
    restored rows) runs beside the last, single-process step (foreign keys, triggers, grants) and its
    error is raised like a restore error once that step stopped.
    """
    tocs = [read_toc(tools, functools.partial(open_stream, part)) for part in range(parts + 1)]
    plan = plan_restore(tocs, jobs, rows)
    with tempfile.TemporaryDirectory(prefix="qb-toc-") as folder:
        listings = (Path(folder, f"{number}.list") for number in itertools.count())

        def run_one(run: Run) -> None:
            _run_group(tools, dbname_arg, open_stream, next(listings), run)

        started = time.monotonic()
        if plan.before:
            run_one(Run(0, plan.before, False))
        schedule = _Schedule(plan, rows, index_tables or {})
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
            wait(running)  # after a failure, let the runs already going stop before raising
        if errors:
            raise errors[0]
        logger.info("postgres rows and indexes restored seconds=%.1f", time.monotonic() - started)
        check_errors: list[BaseException] = []

        def check() -> None:
            try:
                if once_loaded is not None:
                    once_loaded()
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
    authenticated = {run.part for run in plan.data if run.to_end}
    for part in range(parts + 1):
        if part not in authenticated:
            _read_to_end(functools.partial(open_stream, part))
