"""The framing of a copy part: tables one after another, each readable to its own end."""

from __future__ import annotations

import io
import re
from typing import cast

import pytest

from questboard_backup.errors import IntegrityError
from questboard_backup.sources.postgres_copy import (
    MAGIC,
    CopyTable,
    PartWriter,
    _read_header,
    _TableReader,
    load_part,
)

USERS = CopyTable("public.users", "public", "users", ("id", "Name"))
LOG = CopyTable('"Guild Hall"."Quest.Log"', "Guild Hall", "Quest.Log", ("id",))


def part(*tables: tuple[CopyTable, list[bytes]]) -> io.BytesIO:
    out = io.BytesIO()
    writer = PartWriter(lambda view: out.write(view))
    for table, chunks in tables:
        writer.begin(table)
        for chunk in chunks:
            writer.write(memoryview(chunk))
        writer.end()
    out.seek(0)
    return out


def test_each_table_reads_back_to_its_own_end_whatever_the_read_size() -> None:
    stream = part((USERS, [b"abc", b"", b"defgh"]), (LOG, []))
    assert stream.read(len(MAGIC)) == MAGIC
    assert _read_header(stream, ["public.users", "public", "users"])["columns"] == ["id", "Name"]
    reader = _TableReader(stream)
    assert [reader.read(2), reader.read(2), reader.read(10), reader.read(10), reader.read(10)] == [
        b"ab",
        b"c",
        b"defgh",
        b"",
        b"",
    ]
    assert (
        _read_header(stream, ['"Guild Hall"."Quest.Log"', "Guild Hall", "Quest.Log"])["name"] == "Quest.Log"
    )
    assert _TableReader(stream).read() == b""
    assert stream.read() == b""


def test_a_table_other_than_the_facts_list_is_refused() -> None:
    stream = part((USERS, [b"x"]))
    stream.read(len(MAGIC))
    with pytest.raises(
        IntegrityError, match=re.escape("holds 'public.users' where the facts list 'public.quests'")
    ):
        _read_header(stream, ["public.quests", "public", "quests"])


def test_a_frame_cut_short_is_refused() -> None:
    data = part((USERS, [b"abcdef"])).getvalue()[:-8]
    stream = io.BytesIO(data)
    stream.read(len(MAGIC))
    _read_header(stream, ["public.users", "public", "users"])
    with pytest.raises(IntegrityError, match="ends in the middle of a frame"):
        _TableReader(stream).read(100)


def test_a_stream_that_is_no_copy_part_is_refused_before_connecting() -> None:
    def connect() -> None:
        raise AssertionError("connected")

    with pytest.raises(IntegrityError, match="does not start as one"):
        load_part(cast(object, connect), io.BytesIO(b"PGDMP\x01\x0e\x00"), [], "UTF8")  # type: ignore[arg-type]
