"""The contract every backup component implements (postgres, redis, files, config).

A component instance is bound to one endpoint (a database URL, a Redis URL, a list of paths). The
same class dumps from its endpoint and restores into it; restoring elsewhere means building an
instance bound to the other endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol


class StreamOpener(Protocol):
    """Opens the authenticated plaintext of one stored object of a component: part 0 unless a further
    part is named (a component that wrote parts records in its facts how many). Leaving the ``with``
    block normally drains the stream to its sealed end and checks size and SHA-256 against the
    manifest, raising IntegrityError if anything is wrong. A restorer commits nothing before that exit
    returned."""

    def __call__(self, part: int = 0) -> AbstractContextManager[BinaryIO]: ...


#: Opens the component's next further output stream (part 1, 2, ...); the caller seals and stores it.
PartOpener = Callable[[], BinaryIO]

Facts = dict[str, Any]


@dataclass(frozen=True)
class RestoreOptions:
    #: UTC timestamp ``YYYYMMDD_HHMMSS`` naming the rollback copies (``{db}_pre_restore_{timestamp}``).
    timestamp: str
    #: Files and config: re-create the backed-up absolute paths beneath this folder instead of in place.
    files_root: Path | None = None


class Component(Protocol):
    """Dump from and restore into one endpoint.

    - ``check()`` raises SourceUnreachableError (one line, no secrets) when the endpoint cannot be used.
    - ``check_restore_target()`` raises the same, before a restore reads anything, when this endpoint
      cannot be restored into (PostgreSQL: the role's privileges, on the server, as the target database
      may not exist yet); for most components it is ``check()``.
    - ``dump(out, open_part)`` writes the component's plaintext to ``out`` as a stream (bounded memory)
      and returns JSON-safe verification facts (row counts, key counts, file counts) and ``version``.
      A component may write further streams in parallel, each from ``open_part()`` (PostgreSQL does,
      one per group of large tables); it returns only once every stream it opened is complete.
    - ``restore(open_stream, facts, options)`` restores so that a failure leaves the endpoint as it was
      where the backend allows it (see each module), checks the result against ``facts`` before it
      replaces anything, and returns a JSON-safe report of what it checked.
    """

    name: str
    #: True when the component may write several streams at once: each is then compressed on its own
    #: writer's thread, without zstd worker threads (their overlap costs about 8 % more CPU, measured).
    parallel_streams: bool

    def check(self) -> None: ...

    def check_restore_target(self) -> None: ...

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts: ...

    def restore(
        self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions
    ) -> Facts: ...
