"""Files and config: folders and single files as one streaming PAX tar, restored through staging and a swap.

A restore checks the whole archive before writing anything (checking.py), extracts each root into a
private staging folder through directory handles (staging.py), and swaps it in, keeping the previous
copy as ``{path}.pre_restore_{ts}`` (swap.py; a mount point is filled instead of renamed). A later
restore settles a swap left unsettled rather than rolling back what the target took since.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from questboard_backup.address import TIMESTAMP_PATTERN
from questboard_backup.errors import ConfigurationError, IntegrityError, SourceUnreachableError
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StagedRestore, StreamOpener
from questboard_backup.sources.files import swap
from questboard_backup.sources.files.archive import Archiver
from questboard_backup.sources.files.checking import COUNTED, Counts
from questboard_backup.sources.files.staging import Place, stage

logger = logging.getLogger(__name__)

TreeListing = dict[str, tuple[str, int, int, int, str]]


class FilesComponent(StagedRestore):
    """Back up a list of absolute paths (folders or single files); restore them where the manifest says.

    ``stage`` re-creates the roots recorded in the facts, in place or beneath ``options.files_root``; the
    later steps act on those roots, or, in a process that did not stage, on ``paths`` (the configured
    roots: the registry binds a restore target to them), so a later process can finish or undo a restore.
    """

    def __init__(self, name: str, paths: Sequence[Path]) -> None:
        self.name = name
        self.parallel_streams = False
        # abspath, not resolve: a root that is itself a symlink is backed up as that link.
        self.paths = tuple(Path(os.path.abspath(path)) for path in paths)
        problem = _roots_problem([str(path) for path in self.paths])
        if problem:
            raise ConfigurationError(f"{name}: {problem}")
        self._staged_roots: tuple[str, ...] | None = None

    def check(self) -> None:
        for path in self.paths:
            try:
                mode = os.lstat(path).st_mode
                wanted = os.R_OK | os.X_OK if stat.S_ISDIR(mode) else os.R_OK
                if not stat.S_ISLNK(mode) and not os.access(path, wanted):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            except OSError as error:
                raise SourceUnreachableError(f"{self.name}: cannot read {path}: {error.strerror}") from None

    def check_restore_target(self) -> None:
        """Nothing to check before a restore reads: its targets come from the manifest (and may not
        exist yet), and ``stage`` checks each before it writes anything."""

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts:
        """``open_part`` is not used: one stream."""
        counts = Counts()
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=READ_SIZE) as tar:
            # Content is copied in chunks of this size (16 KiB by default); undocumented, hence untyped.
            tar.copybufsize = READ_SIZE  # type: ignore[attr-defined]
            archiver = Archiver(self.name, tar, counts)
            for index, root in enumerate(self.paths):
                archiver.add_root(index, str(root))
        facts: Facts = {"roots": [str(path) for path in self.paths]}
        facts.update({key: getattr(counts, key) for key in (*COUNTED, "skipped", "changed_during_backup")})
        logger.info(
            "files archived component=%s files=%d dirs=%d symlinks=%d bytes=%d skipped=%d changed=%d",
            self.name,
            counts.files,
            counts.dirs,
            counts.symlinks,
            counts.bytes,
            counts.skipped,
            counts.changed_during_backup,
        )
        return facts

    def stage(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        roots = facts.get("roots")
        if not isinstance(roots, list) or not all(isinstance(root, str) for root in roots):
            raise IntegrityError(f"{self.name}: the manifest facts hold no list of roots")
        problem = _roots_problem(roots)
        if problem:
            raise IntegrityError(f"{self.name}: manifest roots refused: {problem}")
        places = self._places(roots, options)
        if self.paths and roots != [str(path) for path in self.paths]:
            logger.warning("restore roots differ from the configured paths component=%s", self.name)
        self._staged_roots = tuple(roots)
        return stage(self.name, open_stream, facts, places)

    def swap_in(self, options: RestoreOptions) -> Facts:
        return {"previous": swap.swap_in(self.name, self._places(self._roots(), options))}

    def settle(self, options: RestoreOptions) -> None:
        swap.settle(self.name, self._places(self._roots(), options))

    def undo(self, options: RestoreOptions) -> list[str]:
        return swap.undo(self.name, self._places(self._roots(), options))

    def clear_leftovers(self, options: RestoreOptions) -> list[str]:
        return swap.clear_leftovers(self.name, self._places(self._roots(), options))

    # Restore drills (questboard_backup/drill.py): files go beneath the drill's own scratch folder.

    def drillable(self, options: RestoreOptions) -> bool:
        return options.files_root is not None

    def drill_guard(self, production: object, facts: Mapping[str, Any], options: RestoreOptions) -> None:
        """A drill restores files only beneath a scratch folder that is neither ``/`` nor inside a
        backed-up or configured root (it is removed after the drill)."""
        if options.files_root is None:
            raise ConfigurationError(f"{self.name}: a drill restores files only beneath a drill files root")
        root = Path(os.path.realpath(options.files_root))
        roots = [str(path) for path in facts.get("roots", [])] + [str(path) for path in self.paths]
        if isinstance(production, FilesComponent):
            roots += [str(path) for path in production.paths]
        if root == Path("/"):
            raise ConfigurationError(f"{self.name}: the drill files root resolves to /, which is production")
        for production_root in roots:
            resolved = Path(os.path.realpath(production_root))
            if root == resolved or root.is_relative_to(resolved):
                raise ConfigurationError(
                    f"{self.name}: the drill files root {options.files_root} lies in production's {production_root}"
                )

    def discard(self, facts: Mapping[str, Any], options: RestoreOptions) -> list[str]:
        """Nothing of its own: the drill removes its whole scratch folder."""
        return []

    def _roots(self) -> Sequence[str]:
        """The roots this instance staged, else the configured ones."""
        if self._staged_roots is not None:
            return self._staged_roots
        return [str(path) for path in self.paths]

    def _places(self, roots: Sequence[str], options: RestoreOptions) -> list[Place]:
        if not re.fullmatch(TIMESTAMP_PATTERN, options.timestamp, re.ASCII):
            raise ConfigurationError(f"restore timestamp {options.timestamp!r} is not YYYYMMDD_HHMMSS")
        base = os.path.abspath(options.files_root) if options.files_root is not None else None
        return [
            Place(
                self.name,
                root if base is None else os.path.join(base, os.path.relpath(root, "/")),
                options.timestamp,
            )
            for root in roots
        ]


def _roots_problem(roots: Sequence[str]) -> str | None:
    for root in roots:
        if not os.path.isabs(root) or os.path.normpath(root) != root or root.startswith("//") or "\0" in root:
            return f"{root!r} is not a normalized absolute path"
        if root == "/":
            return "/ cannot be a root"
    for index, root in enumerate(roots):
        for other in roots[index + 1 :]:
            if root == other or other.startswith(root + "/") or root.startswith(other + "/"):
                return f"{root} and {other} overlap"
    return None


def tree_listing(path: Path) -> TreeListing:
    """Relative path -> (type, mode, mtime_ns, size, sha256 or link target), ``"."`` being ``path`` itself.

    Two trees with equal listings hold the same names, types, modes, mtimes, contents and link targets.
    """
    listing: TreeListing = {}
    pending = [(".", str(path))]
    while pending:
        relative, full = pending.pop()
        st = os.lstat(full)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            listing[relative] = ("dir", mode, st.st_mtime_ns, 0, "")
            with os.scandir(full) as entries:
                pending.extend(
                    (entry.name if relative == "." else f"{relative}/{entry.name}", entry.path)
                    for entry in entries
                )
        elif stat.S_ISLNK(st.st_mode):
            listing[relative] = ("symlink", mode, st.st_mtime_ns, 0, os.readlink(full))
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256()
            with open(full, "rb") as handle:
                while chunk := handle.read(READ_SIZE):
                    digest.update(chunk)
            listing[relative] = ("file", mode, st.st_mtime_ns, st.st_size, digest.hexdigest())
        else:
            listing[relative] = ("other", mode, st.st_mtime_ns, 0, "")
    return listing
