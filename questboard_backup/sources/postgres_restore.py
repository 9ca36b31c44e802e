"""A parallel pg_restore from a stream: pg_restore -j needs a seekable archive, and this project never
writes a decrypted dump to disk, so the archive's own order is split into phases instead.

The archive's table of contents (``pg_restore -l``, in its serial restore order) is cut where the data
starts and where it ends. Phase 1 restores everything before the data; phase 2 the data, split over
``jobs`` processes by row count; phase 3 the plain indexes and table constraints after it, split the
same way; phase 4 everything else in order (foreign keys, index attachments, triggers, ACLs...). Each
process reads its own authenticated stream; the first data process reads its stream to the sealed
end, so the whole archive has been authenticated before the caller swaps anything in.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from questboard_backup.errors import SourceError
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


def plan_phases(toc: Sequence[str], jobs: int, rows: Mapping[str, int]) -> list[list[list[str]]]:
    """The phases, each a list of TOC lists run concurrently."""
    entries = [line for line in toc if _ENTRY.match(line)]
    data_positions = [i for i, line in enumerate(entries) if entry_kind(line) in DATA_KINDS]
    if not data_positions:
        return [[entries]] if entries else []
    first, last = data_positions[0], data_positions[-1]
    before, data, after = entries[:first], entries[first : last + 1], entries[last + 1 :]
    parallel_after = [line for line in after if entry_kind(line) in PARALLEL_AFTER_DATA]
    rest = [line for line in after if entry_kind(line) not in PARALLEL_AFTER_DATA]
    phases = [
        [before],
        split_by_weight(data, jobs, lambda line: rows.get(_table_of(line), 0)),
        split_by_weight(parallel_after, jobs, lambda line: rows.get(_table_of(line), 1)),
        [rest],
    ]
    return [[group for group in phase if group] for phase in phases if any(phase)]


def read_toc(tools: ClientTools, open_stream: StreamOpener) -> list[str]:
    output = _run(tools, ["--list"], open_stream, capture=True, verify=False)
    return output.splitlines()


def _run(
    tools: ClientTools,
    args: Sequence[str],
    open_stream: StreamOpener,
    capture: bool = False,
    verify: bool = True,
) -> str:
    """pg_restore fed from a stream. With ``verify`` the stream is read to its sealed end even if the
    tool stops reading early, so the with-block's exit authenticates it all."""
    process = tools.start(
        "pg_restore", args, stdin=subprocess.PIPE, stdout=subprocess.PIPE if capture else subprocess.DEVNULL
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
    tools: ClientTools,
    dbname_arg: str,
    open_stream: StreamOpener,
    listing: Path,
    group: list[str],
    verify: bool,
    errors: list[BaseException],
) -> None:
    listing.write_text("\n".join(group) + "\n", encoding="utf-8")
    args = ["--exit-on-error", "--no-password", dbname_arg, f"--use-list={listing}"]
    try:
        _run(tools, args, open_stream, verify=verify)
    except BaseException as error:  # noqa: BLE001 - re-raised by the caller once every group stopped
        errors.append(error)


def parallel_restore(
    tools: ClientTools, dbname_arg: str, open_stream: StreamOpener, rows: Mapping[str, int], jobs: int
) -> None:
    """Restore the archive into the (empty, staging) database named by ``dbname_arg``."""
    phases = plan_phases(read_toc(tools, open_stream), jobs, rows)
    verified = False
    with tempfile.TemporaryDirectory(prefix="qb-toc-") as folder:
        for number, phase in enumerate(phases):
            is_data = any(entry_kind(line) in DATA_KINDS for group in phase for line in group)
            errors: list[BaseException] = []
            threads = [
                threading.Thread(
                    target=_run_group,
                    args=(
                        tools,
                        dbname_arg,
                        open_stream,
                        Path(folder, f"{number}-{index}.list"),
                        group,
                        is_data and index == 0,  # one data process reading to the end authenticates all
                        errors,
                    ),
                    name=f"qb-pg-restore-{number}-{index}",
                )
                for index, group in enumerate(phase)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]
            verified = verified or is_data
    if not verified and phases:
        # No data in the archive: authenticate the stream to its end all the same.
        with open_stream() as reader:
            while reader.read(READ_SIZE):
                pass
