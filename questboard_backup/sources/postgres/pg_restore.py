"""pg_restore processes fed from authenticated streams: a listing read off a stream's head, and the
restore of chosen entries, each reading its stream to the sealed end where that end must be checked."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, BinaryIO

from questboard_backup.errors import SourceError
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.sources.base import StreamOpener
from questboard_backup.sources.postgres.restore_plan import Run
from questboard_backup.sources.postgres.tools import Cancel, ClientTools, StderrTail, feed, stop, widen_pipe

#: Opens one part's authenticated stream (a StreamOpener bound to its part).
_Opener = Callable[[], AbstractContextManager[BinaryIO]]


class _StoppedReading(Exception):
    """The tool exited before the end of the stream, where that is fine (it needed only the TOC)."""


def read_tocs(tools: ClientTools, open_stream: StreamOpener, parts: int) -> list[list[str]]:
    """The listings of the main archive and its ``parts`` further parts, read at once (each reads only
    the head of its stream)."""
    with ThreadPoolExecutor(max_workers=parts + 1, thread_name_prefix="qb-pg-toc") as pool:
        return list(
            pool.map(lambda part: read_toc(tools, functools.partial(open_stream, part)), range(parts + 1))
        )


def read_toc(tools: ClientTools, open_stream: _Opener) -> list[str]:
    output = run_pg_restore(tools, ["--list"], open_stream, capture=True, verify=False)
    return output.splitlines()


def run_pg_restore(
    tools: ClientTools,
    args: Sequence[str],
    open_stream: _Opener,
    capture: bool = False,
    verify: bool = True,
    cancel: Cancel | None = None,
) -> str:
    """pg_restore fed from a stream; returns its output with ``capture``. With ``verify`` the stream is
    read to its sealed end even if the tool stops reading early, so the with-block's exit authenticates
    it all. ``cancel`` may kill the tool, and the run then raises Cancelled."""
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
    reader_thread = _collect_output(process, output) if capture else None
    try:
        _feed(open_stream, process.stdin, verify, cancel)
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


def _collect_output(process: subprocess.Popen[bytes], into: list[bytes]) -> threading.Thread:
    """A thread reading the tool's output while it is being fed (else a full pipe would stall both)."""
    assert process.stdout is not None
    stdout = process.stdout
    thread = threading.Thread(target=lambda: into.append(stdout.read()), daemon=True)
    thread.start()
    return thread


def _feed(open_stream: _Opener, stdin: IO[bytes], verify: bool, cancel: Cancel | None) -> None:
    """The stream into the tool. Where the tool stops reading early, the stream is read on to its sealed
    end with ``verify``, else left there (a listing needs only the archive's head)."""
    with contextlib.suppress(_StoppedReading), open_stream() as reader:
        if not feed(reader, stdin):
            if cancel is not None:
                cancel.check()
            if not verify:
                raise _StoppedReading
            _drain(reader)


def restore_entries(
    tools: ClientTools, dbname_arg: str, open_stream: StreamOpener, listing: Path, run: Run, cancel: Cancel
) -> None:
    """Restore the entries of ``run`` with a pg_restore reading its part (``listing``: a file to hold
    their list); a run without entries only authenticates its part."""
    opener = functools.partial(open_stream, run.part)
    if not run.entries:  # nothing to restore from this part, but it must still be authenticated
        _read_to_end(opener)
        return
    listing.write_text("\n".join(run.entries) + "\n", encoding="utf-8")
    args = ["--exit-on-error", "--no-password", dbname_arg, f"--use-list={listing}"]
    run_pg_restore(tools, args, opener, verify=run.to_end, cancel=cancel)


def _read_to_end(opener: _Opener) -> None:
    with opener() as reader:
        _drain(reader)


def _drain(reader: BinaryIO) -> None:
    """Read the rest of a stream (to its sealed end, which the opener's exit then checks)."""
    buffer = bytearray(READ_SIZE)
    while reader.readinto(buffer):  # type: ignore[attr-defined]
        pass
