"""Reading a component's tar stream one member at a time, as the files, s3uploads and ssmconfig
restores do: an archive that cannot be read is an IntegrityError naming the component, and no member
is kept once read (memory stays flat whatever the archive holds)."""

from __future__ import annotations

import tarfile
from typing import BinaryIO

from questboard_backup.errors import IntegrityError
from questboard_backup.pipeline import READ_SIZE


def open_archive(label: str, reader: BinaryIO) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=reader, mode="r|", bufsize=READ_SIZE)
    except tarfile.TarError as error:
        raise IntegrityError(f"{label}: not a readable archive ({error})") from None


def next_member(label: str, tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    try:
        member = tar.next()
    except tarfile.TarError as error:
        raise IntegrityError(f"{label}: archive unreadable ({error})") from None
    # TarFile keeps every member it has read; a streamed restore needs none of them.
    tar.members.clear()  # type: ignore[attr-defined]
    return member
