"""The framing of a copy part: tables one after another, each readable to its own end."""

from __future__ import annotations

import io
import re
from typing import cast

import pytest

from questboard_backup.errors import IntegrityError, SourceError
from questboard_backup.sources.postgres.copy import (
    MAGIC,
    MAX_REPORT_BYTES,
    CopyTable,
    PartWriter,
    _read_header,
    _TableReader,
    load_part,
    rows_report,
)

USERS = CopyTable("public.users", "public", "users", ("id", "Name"))
LOG = CopyTable('"Guild Hall"."Quest.Log"', "Guild Hall", "Quest.Log", ("id",))


def sections(*tables: tuple[CopyTable, list[bytes]], report: bytes) -> tuple[io.BytesIO, PartWriter]:
    """A part written as psql's sections arrive: each table's data, then the rows report."""
    out = io.BytesIO()
    writer = PartWriter(lambda view: out.write(view), [table for table, _chunks in tables])
    for number, chunks in enumerate([*(chunks for _table, chunks in tables), [report]]):
        writer.begin(number)
        for chunk in chunks:
            writer.write(memoryview(chunk))
        writer.end(number)
    out.seek(0)
    return out, writer


def part(*tables: tuple[CopyTable, list[bytes]]) -> io.BytesIO:
    return sections(
        *tables, report=b'{"track_counts": true, "rows": [%s]}' % ",".join("1" * len(tables)).encode()
    )[0]


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


def test_the_rows_report_after_the_last_table_stays_out_of_the_part_and_gives_each_tables_rows() -> None:
    stream, writer = sections(
        (USERS, [b"abc"]), (LOG, []), report=b'{"track_counts" : true, "rows" : [3, 0]}\n'
    )
    assert writer.rows() == {"public.users": 3, '"Guild Hall"."Quest.Log"': 0}
    assert stream.getvalue() == part((USERS, [b"abc"]), (LOG, [])).getvalue()
    assert b"track_counts" not in stream.getvalue()


def test_rows_the_server_did_not_count_are_reported_as_unknown() -> None:
    _stream, writer = sections((USERS, [b"abc"]), report=b'{"track_counts" : false, "rows" : [0]}\n')
    assert writer.rows() is None


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        (b"", "no rows report"),
        (b"COPY 3\n", "no rows report"),
        (b'{"track_counts": true}', "no rows report"),
        (b'{"track_counts": true, "rows": [3]}', "other tables"),
        (b'{"track_counts": true, "rows": [3, "4"]}', "other tables"),
        (b'{"track_counts": true, "rows": null}', "other tables"),
        # track_counts was off as a COPY started (its scan uncounted) but is on again by the report.
        (b'{"track_counts": true, "rows": [3, null]}', "did not count the rows of public.quests"),
    ],
)
def test_a_missing_or_malformed_rows_report_fails_the_dump(report: bytes, problem: str) -> None:
    with pytest.raises(SourceError, match=problem):
        rows_report(report, ["public.users", "public.quests"])


def test_a_copy_that_ended_before_its_last_table_or_its_report_fails_the_dump() -> None:
    writer = PartWriter(lambda view: None, [USERS, LOG])
    writer.begin(0)
    writer.end(0)
    with pytest.raises(SourceError, match="psql wrote 1 of 2 tables"):
        writer.rows()
    writer.begin(1)
    writer.end(1)
    with pytest.raises(SourceError, match="without its rows report"):
        writer.rows()


def test_more_sections_than_tables_and_a_report_or_an_overlong_report_are_refused() -> None:
    writer = PartWriter(lambda view: None, [USERS])
    writer.begin(1)
    with pytest.raises(SourceError, match="more than a rows report"):
        writer.write(memoryview(bytes(MAX_REPORT_BYTES + 1)))
    with pytest.raises(SourceError, match="more sections than the 1 tables"):
        writer.begin(2)
