"""The PostgreSQL client tools (pg_dump, pg_restore, psql) run as child processes whose data is streamed.

The password reaches a tool only through its PGPASSWORD environment variable, never its command line
(which ``ps`` shows to every user of the host). Standard error is drained on a thread of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from questboard_backup.errors import SourceError
from questboard_backup.pipeline import READ_SIZE

logger = logging.getLogger(__name__)
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)")
_TAIL_LINES = 20
_MAX_LINE = 64 * 1024
PIPE_SIZE = 1024 * 1024


def widen_pipe(stream: IO[bytes]) -> None:
    """Give a pipe to or from a tool 1 MiB of room (Linux; elsewhere, or above the system's limit, it
    keeps its size): fewer, larger transfers and task switches (measured: a third less kernel time
    feeding pg_restore)."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error, for one-line messages (libpq adds hint lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def major_version(version: str) -> int | None:
    """``15`` from ``15.18``; None when the text does not start with a number."""
    match = re.match(r"\d+", version)
    return int(match.group()) if match else None


class ClientTools:
    """Finds the tools in ``bin_dir`` (None: on PATH), reads their versions and starts them."""

    def __init__(self, bin_dir: Path | None, password: str | None) -> None:
        self.bin_dir = bin_dir
        self._password = password
        self._versions: dict[str, str] = {}

    def path(self, name: str) -> str:
        if self.bin_dir is not None:
            candidate = self.bin_dir / name
            if os.access(candidate, os.X_OK) and candidate.is_file():
                return str(candidate)
            raise SourceError(f"{name} not found in {self.bin_dir}")
        found = shutil.which(name)
        if found is None:
            raise SourceError(
                f"{name} not found on PATH (install PostgreSQL client tools or set BACKUP_PG_BIN_DIR)"
            )
        return found

    def version(self, name: str) -> str:
        """``15.18`` from ``pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)``."""
        if name not in self._versions:
            path = self.path(name)
            try:
                output = subprocess.run(
                    [path, "--version"], capture_output=True, check=True, timeout=30, text=True
                ).stdout
            except (OSError, subprocess.SubprocessError) as error:
                raise SourceError(f"cannot run {path} --version: {first_line(error)}") from None
            match = _VERSION.search(output)
            if match is None:
                raise SourceError(f"cannot tell the version of {path} from {output.strip()[:100]!r}")
            self._versions[name] = match.group(1)
        return self._versions[name]

    def major(self, name: str) -> int:
        return int(self.version(name).split(".")[0])

    def start(self, name: str, args: Sequence[str], **streams: Any) -> subprocess.Popen[bytes]:
        # The child needs the usual environment (PATH, locale, PGSSL* settings) plus the password.
        env = dict(os.environ)
        if self._password:
            env["PGPASSWORD"] = self._password
        path = self.path(name)
        try:
            return subprocess.Popen([path, *args], env=env, stderr=subprocess.PIPE, **streams)
        except OSError as error:
            raise SourceError(f"cannot start {path}: {error.strerror}") from None

    def scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text


class StderrTail:
    """Reads a child's standard error to its end, keeping the last lines (a full pipe would block it)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lines: deque[str] = deque(maxlen=_TAIL_LINES)
        self._thread = threading.Thread(target=self._drain, name="qb-pg-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with self._stream:
            while raw := self._stream.readline(_MAX_LINE):
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    self._lines.append(line)

    def summary(self) -> str:
        """The last error line (pg_restore follows it with the failing command), else the last line."""
        self._thread.join()
        errors = [line for line in self._lines if "error:" in line.lower() or "fatal:" in line.lower()]
        return (errors or list(self._lines) or ["no error output"])[-1]


@dataclass(frozen=True)
class ToolRun:
    """A tool process (``tool`` with ``args``, doing ``what``) whose output is handed to ``write`` in
    sections: one, or several where it holds ``separator`` (which is not passed on). ``before`` and
    ``after`` are called around each section with its number; ``after`` only once it ended well."""

    tool: str
    args: Sequence[str]
    what: str
    write: Callable[[memoryview], object]
    before: Callable[[int], object] | None = None
    after: Callable[[int], object] | None = None
    separator: bytes = b""


def split_sections(
    buffer: bytearray,
    end: int,
    separator: bytes,
    write: Callable[[memoryview], object],
    boundary: Callable[[], None],
) -> int:
    """Hand ``buffer[:end]`` on to ``write``, calling ``boundary`` where ``separator`` stands (it is not
    passed on). Returns how many bytes it moved to the buffer's start instead, because they may begin
    a separator: the next read goes behind them, and they are written once the stream ends."""
    view = memoryview(buffer)
    offset = 0
    while separator and (found := buffer.find(separator, offset, end)) >= 0:
        if found > offset:
            write(view[offset:found])
        boundary()
        offset = found + len(separator)
    held = min(len(separator) - 1, end - offset) if separator else 0
    if end - held > offset:
        write(view[offset : end - held])
    buffer[:held] = buffer[end - held : end]
    return held


def stream_out_all(tools: ClientTools, runs: Sequence[ToolRun]) -> list[int]:
    """Carry out the runs at the same time; returns the bytes of output each had. The first failure
    stops every run and is raised.

    ``write`` gets a view of one reused buffer, valid only during the call. Reading into it instead of
    reading new bytes objects saves most of the kernel time: each fresh 1 MiB bytes object costs page
    faults, and a pipe read returns far less than that (measured: 1.05 s -> 0.27 s of system time for
    710 MB of pg_dump output).
    """
    return _OutStreams(tools, runs).carry_out()


class _OutStreams:
    """The processes of one ``stream_out_all``, each pumped on a thread of its own (the first on the
    caller's): the first failure stops them all."""

    def __init__(self, tools: ClientTools, runs: Sequence[ToolRun]) -> None:
        self._tools, self._runs = tools, runs
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._written = [0] * len(runs)
        self._errors: list[BaseException] = []

    def carry_out(self) -> list[int]:
        threads = [
            threading.Thread(target=self._pump, args=(index,), name=f"qb-pg-dump-{index}")
            for index in range(1, len(self._runs))
        ]
        try:
            for thread in threads:
                thread.start()
            self._pump(0)
            for thread in threads:
                thread.join()
        except BaseException:  # an interrupt while the streams run stops them
            self._stop_all()
            raise
        finally:
            for thread in threads:
                if thread.ident is not None:
                    thread.join()
        if self._errors:
            raise self._errors[0]
        return self._written

    def _stop_all(self) -> None:
        with self._lock:
            self._stopped = True
            for process in self._running.values():
                stop(process)

    def _start(self, index: int, name: str, args: Sequence[str]) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopped:
                return None
            process = self._tools.start(
                name, args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0
            )
            self._running[index] = process
        assert process.stdout is not None
        widen_pipe(process.stdout)
        return process

    def _fail(self, error: BaseException) -> None:
        self._errors.append(error)
        self._stop_all()

    def _pump(self, index: int) -> None:
        run = self._runs[index]
        try:
            process = self._start(index, run.tool, run.args)
        except BaseException as error:  # noqa: BLE001 - the first one is raised by the caller
            self._fail(error)
            return
        if process is None:
            return
        assert process.stdout is not None and process.stderr is not None
        tail = StderrTail(process.stderr)
        section = 0
        try:
            section = self._copy_out(index, process.stdout)
        except BaseException as error:  # noqa: BLE001 - the first one is raised by the caller
            self._fail(error)
        finally:
            process.stdout.close()
            returncode = process.wait()
            summary = tail.summary()
        if self._errors:
            return
        if returncode != 0:
            scrubbed = self._tools.scrub(summary)
            self._fail(SourceError(f"{run.tool} failed (exit {returncode}) in {run.what}: {scrubbed}"))
            return
        try:
            if run.after is not None:
                run.after(section)
        except BaseException as error:  # noqa: BLE001 - the first one is raised by the caller
            self._fail(error)

    def _copy_out(self, index: int, stdout: IO[bytes]) -> int:
        """Hand the process's output to its run's ``write``, section by section; returns the number of
        the last section (its ``after`` is left to the caller, once the process ended well)."""
        run = self._runs[index]
        section = 0

        def next_section() -> None:
            nonlocal section
            if run.after is not None:
                run.after(section)
            section += 1
            if run.before is not None:
                run.before(section)

        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        if run.before is not None:
            run.before(section)
        held = 0  # bytes kept at the buffer's start: they may begin a separator
        while count := stdout.readinto(view[held:]):  # type: ignore[attr-defined]
            self._written[index] += count
            held = split_sections(buffer, held + count, run.separator, run.write, next_section)
        if held:
            run.write(view[:held])
        return section


def feed(reader: BinaryIO, stdin: IO[bytes]) -> bool:
    """Copy the stream into the tool; False when the tool stopped reading (it exited)."""
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    try:
        while count := reader.readinto(buffer):  # type: ignore[attr-defined]
            chunk = view[:count]
            while chunk:  # an unbuffered pipe may take part of a write (a signal arriving mid-way)
                chunk = chunk[stdin.write(chunk) :]
        stdin.flush()
    except BrokenPipeError:
        return False
    return True


class Cancelled(Exception):
    """A step stopped because another step of the same restore failed."""


class Cancel:
    """Stops the other steps of a parallel restore once one has failed, instead of letting them run to
    their end (on a large database, for hours) before the failure is reported: the tool processes it
    tracks are killed, the queries of the sessions it tracks are cancelled, and readers that ``check``
    it stop at their next read."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._stops: dict[object, Callable[[], object]] = {}

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("stopped: another step of the restore failed")

    def track(self, process: subprocess.Popen[bytes]) -> None:
        self.watch(process, functools.partial(stop, process))

    def watch(self, what: object, stopping: Callable[[], object]) -> None:
        """Call ``stopping`` (from another thread) to stop ``what`` when the restore is cancelled, at
        once if it already is; until ``untrack(what)``."""
        with self._lock:
            self._stops[what] = stopping
            cancelled = self._event.is_set()
        if cancelled:
            _quietly(stopping)

    def untrack(self, what: object) -> None:
        with self._lock:
            self._stops.pop(what, None)

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            stops = list(self._stops.values())
        # Outside the lock: a cancel request goes over the network, and steps untrack meanwhile.
        for stopping in stops:
            _quietly(stopping)


def _quietly(stopping: Callable[[], object]) -> None:
    """Stop one thing; if that fails (a cancel request that cannot reach the server), the step runs
    to its end, and the failure that cancelled the restore is still the one reported."""
    try:
        stopping()
    except Exception as error:  # noqa: BLE001
        logger.warning("could not stop a restore step early: %s", first_line(error))


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
