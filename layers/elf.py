"""Just enough ELF reading to check a Lambda layer: machine, needed libraries, search paths, glibc needs.

Reads 64-bit little-endian ELF files (x86_64 and AArch64), the only kinds a Lambda layer holds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
MACHINE_X86_64 = 62
MACHINE_AARCH64 = 183

_SHT_DYNAMIC = 6
_SHT_GNU_VERNEED = 0x6FFFFFFE
_DT_NULL = 0
_DT_NEEDED = 1
_DT_RPATH = 15
_DT_RUNPATH = 29


class ElfError(ValueError):
    """The bytes are not a 64-bit little-endian ELF file this module can read."""


@dataclass(frozen=True)
class ElfInfo:
    """What the dynamic loader needs to know about one executable or shared library."""

    machine: int
    needed: tuple[str, ...]
    search_paths: tuple[str, ...]  # DT_RPATH then DT_RUNPATH entries, unexpanded ($ORIGIN kept)
    version_needs: tuple[tuple[str, str], ...]  # (library, version), e.g. ("libc.so.6", "GLIBC_2.34")


def is_elf(path: Path) -> bool:
    """Whether the file starts with the ELF magic bytes."""
    with path.open("rb") as handle:
        return handle.read(4) == ELF_MAGIC


def read_machine(path: Path) -> int:
    """The e_machine field of the ELF header (62 x86_64, 183 AArch64)."""
    with path.open("rb") as handle:
        header = handle.read(20)
    if header[:4] != ELF_MAGIC or len(header) < 20:
        raise ElfError(f"{path}: not an ELF file")
    return int.from_bytes(header[18:20], "little")


def read_elf(path: Path) -> ElfInfo:
    """Parse the header, the dynamic section and the version needs of an ELF file."""
    data = path.read_bytes()
    if data[:4] != ELF_MAGIC:
        raise ElfError(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError(f"{path}: only 64-bit little-endian ELF is supported")
    machine = struct.unpack_from("<H", data, 18)[0]
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    # (type, offset, size, link) of every section header
    sections = [struct.unpack_from("<4xI16xQQI", data, shoff + index * shentsize) for index in range(shnum)]

    def string_at(table: int, offset: int) -> str:
        start = sections[table][1] + offset
        return data[start : data.index(b"\0", start)].decode()

    needed: list[str] = []
    search_paths: list[str] = []
    version_needs: list[tuple[str, str]] = []
    for kind, offset, size, link in sections:
        if kind == _SHT_DYNAMIC:
            rpath: list[str] = []
            runpath: list[str] = []
            for entry in range(offset, offset + size, 16):
                tag, value = struct.unpack_from("<qQ", data, entry)
                if tag == _DT_NULL:
                    break
                if tag == _DT_NEEDED:
                    needed.append(string_at(link, value))
                elif tag == _DT_RPATH:
                    rpath.extend(p for p in string_at(link, value).split(":") if p)
                elif tag == _DT_RUNPATH:
                    runpath.extend(p for p in string_at(link, value).split(":") if p)
            search_paths = rpath + runpath
        elif kind == _SHT_GNU_VERNEED:
            version_needs.extend(_read_version_needs(data, offset, link, string_at))
    return ElfInfo(machine, tuple(needed), tuple(search_paths), tuple(version_needs))


def _read_version_needs(
    data: bytes, offset: int, strtab: int, string_at: Callable[[int, int], str]
) -> list[tuple[str, str]]:
    needs: list[tuple[str, str]] = []
    entry = offset
    while True:
        _version, count, file_name, aux, next_entry = struct.unpack_from("<HHIII", data, entry)
        library = string_at(strtab, file_name)
        aux_entry = entry + aux
        for _ in range(count):
            _hash, _flags, _other, name, next_aux = struct.unpack_from("<IHHII", data, aux_entry)
            needs.append((library, string_at(strtab, name)))
            aux_entry += next_aux
        if not next_entry:
            return needs
        entry += next_entry


def glibc_version_needed(info: ElfInfo) -> tuple[int, ...]:
    """The newest GLIBC_x.y symbol version the file needs, (0,) when it needs none."""
    versions = [
        tuple(int(part) for part in version.removeprefix("GLIBC_").split("."))
        for _library, version in info.version_needs
        if version.startswith("GLIBC_") and version[6:7].isdigit()
    ]
    return max(versions, default=(0,))
