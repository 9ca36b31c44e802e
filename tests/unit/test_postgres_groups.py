"""How a database's tables are spread over parallel dump streams."""

from __future__ import annotations

from questboard_backup.sources.postgres.component import MAX_SPLIT_TABLES, group_tables
from questboard_backup.sources.postgres.facts import Table

MIB = 2**20


def tables(*names: str) -> list[Table]:
    return [Table(f"public.{name}", "public", name, 0) for name in names]


def keys(groups: list[list[Table]]) -> list[list[str]]:
    return [[table.name for table in group] for group in groups]


def test_the_largest_tables_are_balanced_over_further_streams_and_the_main_one_keeps_the_rest() -> None:
    sizes = {"public.big": 500 * MIB, "public.mid": 300 * MIB, "public.small": 150 * MIB, "public.tiny": MIB}
    groups = group_tables(tables("big", "mid", "small", "tiny"), sizes, jobs=2)
    # tiny, the smallest, keeps the main stream company; big -> 1, mid -> 2, small -> 2 (the lighter).
    assert keys(groups) == [["big"], ["mid", "small"]]
    groups = group_tables(tables("big", "mid", "small", "tiny"), sizes, jobs=3)
    assert keys(groups) == [["big"], ["mid"], ["small"]]


def test_the_main_stream_keeps_at_least_one_table() -> None:
    sizes = {"public.a": 300 * MIB, "public.b": 200 * MIB}
    assert keys(group_tables(tables("a", "b"), sizes, jobs=3)) == [["a"]]
    sizes = {"public.a": 300 * MIB, "public.b": 200 * MIB, "public.c": 100 * MIB}
    assert keys(group_tables(tables("a", "b", "c"), sizes, jobs=2)) == [["a"], ["b"]]


def test_small_databases_one_job_or_one_table_stay_one_stream() -> None:
    sizes = {"public.a": 10 * MIB, "public.b": 10 * MIB}
    assert group_tables(tables("a", "b"), sizes, jobs=2) == []  # below the 64 MiB default
    assert keys(group_tables(tables("a", "b"), sizes, jobs=2, min_bytes=0)) == [["a"]]
    assert group_tables(tables("a", "b"), sizes, jobs=1, min_bytes=0) == []
    assert group_tables(tables("a"), {"public.a": 900 * MIB}, jobs=2) == []


def test_only_the_largest_tables_move_so_pg_dumps_command_line_stays_short() -> None:
    names = [f"t{index:03}" for index in range(MAX_SPLIT_TABLES * 3)]
    sizes = {f"public.{name}": (index + 1) * MIB for index, name in enumerate(names)}
    groups = group_tables(tables(*names), sizes, jobs=2)
    moved = [table.name for group in groups for table in group]
    assert 0 < len(moved) <= MAX_SPLIT_TABLES
    assert set(moved) <= set(names[-MAX_SPLIT_TABLES:])
