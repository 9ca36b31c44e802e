"""The contract every backup component implements (postgres, redis, files, config).

A component instance is bound to one endpoint (a database URL, a Redis URL, a list of paths). The
same class dumps from its endpoint and restores into it; restoring elsewhere means building an
instance bound to the other endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

logger = logging.getLogger(__name__)


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


class Source(Protocol):
    """What a backup needs of a component: its name, whether it writes parallel streams, and its dump.

    - ``check()`` raises SourceUnreachableError (one line, no secrets) when the endpoint cannot be used.
    - ``dump(out, open_part)`` writes the component's plaintext to ``out`` as a stream (bounded memory)
      and returns JSON-safe verification facts (row counts, key counts, file counts) and ``version``.
      A component may write further streams in parallel, each from ``open_part()`` (PostgreSQL does,
      one per group of large tables); it returns only once every stream it opened is complete.
    """

    name: str
    #: True when the component may write several streams at once: each is then compressed on its own
    #: writer's thread, without zstd worker threads (their overlap costs about 8 % more CPU, measured).
    parallel_streams: bool

    def check(self) -> None: ...

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts: ...


class Component(Source, Protocol):
    """Dump from and restore into one endpoint (see ``Source`` for the backup half).

    - ``check_restore_target()`` raises SourceUnreachableError, before a restore reads anything, when
      this endpoint cannot be restored into (PostgreSQL: the role's privileges, on the server, as the
      target database may not exist yet).

    A restore is all or nothing across components, in four steps the engine drives (``restore_staged``
    for one component, ``restore.run_restore`` for a set, the workflow's Stage/Swap/failure tasks across
    processes). Every name a step uses derives from the target and ``options.timestamp`` (or is found
    by a marker holding it), so a later process can finish or undo what a killed one began:

    - ``stage(open_stream, facts, options)`` restores into a staging area beside the target (PostgreSQL:
      database ``{db}_restore_{ts}``; Redis: spare logical dbs; files: ``.{name}.restore-{ts}``),
      checks it against ``facts`` and returns a JSON-safe report. It changes nothing of the target; on
      failure it removes its own staging and raises.
    - ``swap_in(options)`` puts the staged copy in the target's place in one short step, the target
      kept aside where the component keeps a previous copy, and leaves a mark that the swap is not yet
      settled. On failure it puts back what it moved and raises. Returns report fields (``previous``).
    - ``settle(options)``, once every component of the restore has swapped in: removes the mark (and
      what the component does not keep, such as Redis's spare dbs now holding the old data). Logs,
      never raises.
    - ``undo(options)``: idempotent, from any process, after a failure or kill anywhere in ``stage`` or
      ``swap_in`` (never after ``settle``): a swapped-in, unsettled target gets its previous copy back,
      a swap killed between two renames is completed backwards, and this restore's staging is removed.
      Returns one line per thing it did; nothing to undo is not an error.
    - ``clear_leftovers(options)``, before a restore stages anything: removes what earlier restores
      (other timestamps) left of this target's (staging databases, spare Redis dbs, staging folders),
      completes backwards a swap cut between two renames (the target missing), and settles, never
      undoes, a swap that completed but was not settled (the target may have taken writes since). It
      touches only what carries the engine's own marks. Returns one line per thing it did.
    """

    def check_restore_target(self) -> None: ...

    def stage(
        self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions
    ) -> Facts: ...

    def swap_in(self, options: RestoreOptions) -> Facts: ...

    def settle(self, options: RestoreOptions) -> None: ...

    def undo(self, options: RestoreOptions) -> list[str]: ...

    def clear_leftovers(self, options: RestoreOptions) -> list[str]: ...

    def restore(
        self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions
    ) -> Facts: ...


def restore_staged(
    component: Component, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions
) -> Facts:
    """One component's whole restore: stage, swap in, settle; undone on any failure before settling."""
    try:
        report = dict(component.stage(open_stream, facts, options))
        report.update(component.swap_in(options))
    except BaseException:
        try:
            component.undo(options)
        except Exception as error:  # noqa: BLE001 - the failure being handled is the one to report
            logger.error("restore not undone component=%s error=%s", component.name, error)
        raise
    component.settle(options)
    return report


class StagedRestore:
    """Gives a component ``restore()`` as ``restore_staged`` over its own four steps."""

    def restore(
        self: Component, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions
    ) -> Facts:
        return restore_staged(self, open_stream, facts, options)
