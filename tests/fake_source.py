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
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StreamOpener


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

    def restore(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        with open_stream() as stream:
            data = stream.read()
        if hashlib.sha256(data).hexdigest() != facts["sha256"]:
            raise RestoreVerificationError("fake: restored bytes differ from the manifest")
        self.path.write_bytes(data)
        return {"bytes": len(data)}


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
