"""A source the engine does not ship, registered by tests to prove that adding one needs only a module
and a registry entry: it backs up one file and restores it to another."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from questboard_backup.errors import RestoreVerificationError, SourceUnreachableError
from questboard_backup.sources import registry
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StreamOpener, restore_staged


class FakeComponent:
    name = "fake"
    parallel_streams = False

    def __init__(self, path: Path) -> None:
        self.path = path

    def check(self) -> None:
        if not self.path.parent.is_dir():
            raise SourceUnreachableError(f"fake: {self.path.parent} does not exist")

    def check_restore_target(self) -> None:
        self.check()

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts:
        data = self.path.read_bytes()
        out.write(data)
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    # The staged restore, by names from the restore's timestamp as the shipped components do: staging
    # beside the target, the target kept aside, a mark file while the swap is unsettled.
    def _names(self, timestamp: str) -> tuple[Path, Path, Path]:
        folder, name = self.path.parent, self.path.name
        return (
            folder / f".{name}.restore-{timestamp}",
            folder / f"{name}.pre_restore_{timestamp}",
            folder / f".{name}.restore-{timestamp}.swapping",
        )

    def stage(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        staging, _, _ = self._names(options.timestamp)
        with open_stream() as stream:
            data = stream.read()
        if hashlib.sha256(data).hexdigest() != facts["sha256"]:
            raise RestoreVerificationError("fake: restored bytes differ from the manifest")
        staging.write_bytes(data)
        return {"bytes": len(data)}

    def swap_in(self, options: RestoreOptions) -> Facts:
        staging, previous, mark = self._names(options.timestamp)
        mark.write_text("swapping")
        kept = self.path.exists()
        if kept:
            self.path.rename(previous)
        staging.rename(self.path)
        return {"previous": str(previous) if kept else None}

    def settle(self, options: RestoreOptions) -> None:
        self._names(options.timestamp)[2].unlink(missing_ok=True)

    def undo(self, options: RestoreOptions) -> list[str]:
        staging, previous, mark = self._names(options.timestamp)
        done = []
        if mark.exists():
            if previous.exists():
                if self.path.exists():
                    self.path.rename(staging)
                previous.rename(self.path)
                done.append(f"put {self.path.name} back")
            mark.unlink()
        if staging.exists():
            staging.unlink()
            done.append(f"removed {staging.name}")
        return done

    def clear_leftovers(self, options: RestoreOptions) -> list[str]:
        return []

    def restore(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        return restore_staged(self, open_stream, facts, options)


@contextmanager
def registered_fake(source: Path, target: Path) -> Iterator[None]:
    registry.register(
        registry.SourceSpec(
            "fake", lambda endpoints, settings: FakeComponent(source), lambda e, s: FakeComponent(target)
        )
    )
    try:
        yield
    finally:
        registry.unregister("fake")
