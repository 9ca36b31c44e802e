"""The PostgreSQL component against a real server: round trips through the encrypted pipeline, swaps over
an existing database, damaged streams, failed tools, tampered facts and unreachable servers."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import psycopg2
import pytest

from questboard_backup.crypto.stream import DEFAULT_CHUNK_SIZE, HEADER, TAG_SIZE
from questboard_backup.errors import (
    DeadlineExceededError,
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.pipeline import READ_SIZE, ComponentWriter, StreamStats
from questboard_backup.sources.base import RestoreOptions, StreamOpener
from questboard_backup.sources.postgres.component import PostgresComponent, row_counts
from questboard_backup.sources.postgres.copy import binary_columns
from questboard_backup.sources.postgres.facts import describe_roles
from questboard_backup.sources.postgres.tools import Cancel, Cancelled
from tests import sealed
from tests.dataset import load_postgres
from tests.servers import PostgresServer, free_port, postgres_bindir, postgres_major

KEY = os.urandom(32)
CONTEXT = "questboard_full_20240101_020000/postgres"
TIMESTAMP = "20240102_030405"
STORED_CHUNK = DEFAULT_CHUNK_SIZE + TAG_SIZE
NOISE_BYTES = 3 * 1024 * 1024  # incompressible, so the stored stream spans many chunks
_roles = itertools.count()

EXTRAS = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qb_quest_app') THEN CREATE ROLE qb_quest_app; END IF;
END $$;
CREATE TABLE events (id bigint NOT NULL, at timestamptz NOT NULL, payload jsonb) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events SELECT n, '2024-03-01 12:00+05:30'::timestamptz + n * interval '7 days', jsonb_build_object('n', n)
    FROM generate_series(1, 70) n;
CREATE SCHEMA "Guild Hall";
CREATE TABLE "Guild Hall"."Quest.Log" (id serial PRIMARY KEY, "Note" text, token bytea DEFAULT gen_random_bytes(8));
INSERT INTO "Guild Hall"."Quest.Log" ("Note") VALUES ('ünïcödé 🐉'), (NULL), ('');
ALTER TABLE "Guild Hall"."Quest.Log" OWNER TO qb_quest_app;
GRANT SELECT ON public.quests TO qb_quest_app;
CREATE TABLE empty_table (id int);
CREATE UNLOGGED TABLE noise (id int PRIMARY KEY, blob bytea NOT NULL);
-- Binary COPY's awkward cases: built-in types of every kind, a dropped and a generated column...
CREATE TABLE measurements (
    id int PRIMARY KEY, gone text, reading float8, ratio real, exact numeric, span interval, day date,
    at time, stamp timestamp, uid uuid, addr inet, flags bit varying(8), words tsvector, spot point,
    stretch int8range, nums int[], doc json, yes boolean, code char(3), price money, note varchar(20)
);
ALTER TABLE measurements DROP COLUMN gone;
ALTER TABLE measurements ADD COLUMN doubled float8 GENERATED ALWAYS AS (reading * 2) STORED;
INSERT INTO measurements (id, reading, ratio, exact, span, day, at, stamp, uid, addr, flags, words, spot,
    stretch, nums, doc, yes, code, price, note) VALUES
    (1, 0.1, 1.1e-7, 12345678901234567890.123456789, '1 year 2 mons 3 days 04:05:06.789', 'infinity',
     '23:59:59.999999', '2024-02-29 12:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2001:db8::1/64', B'1011',
     'quest board hero', '(1.5,2.5)', '[1,10)', '{1,NULL,3}', '{"a": [1, 2.50]}', true, 'ab', 12.34, 'ünï 🐉'),
    (2, 'NaN', '-Infinity', 'NaN', '-1 day', '-infinity', NULL, NULL, NULL, NULL, B'', '', NULL, 'empty',
     '{}', 'null', false, NULL, -0.01, ''),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL);
-- ... and the types it must not carry (their ids differ between databases): they stay with pg_dump.
CREATE TYPE mood AS ENUM ('calm', 'furious');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE tavern_orders (id int PRIMARY KEY, mood mood, amount positive, menu regclass);
INSERT INTO tavern_orders VALUES (1, 'calm', 3, 'public.quests'), (2, NULL, 5, NULL);
"""


@dataclass
class Backup:
    facts: dict[str, Any]
    stored: bytes
    stats: StreamStats
    largest_write: int
    parts: list[tuple[bytes, StreamStats]] = dataclasses.field(default_factory=list)


@contextmanager
def session(url: str) -> Iterator[Any]:
    """A cursor in autocommit mode on a connection closed afterwards."""
    with closing(psycopg2.connect(url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            yield cur


def create_database(pg: PostgresServer, name: str) -> str:
    with session(pg.url()) as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return pg.url(name)


def load_quest_board(url: str) -> None:
    load_postgres(url, users=30)
    with session(url) as cur:
        cur.execute(EXTRAS)
        for n in range(NOISE_BYTES // (256 * 1024)):
            cur.execute("INSERT INTO noise VALUES (%s, %s)", (n, os.urandom(256 * 1024)))


def backup(
    component: PostgresComponent, wrap: Callable[[BinaryIO], BinaryIO] | None = None, parts: bool = False
) -> Backup:
    """Dump through the real pipeline; with ``parts``, further streams are offered as the engine does."""
    streams: list[tuple[io.BytesIO, ComponentWriter]] = []
    sizes: list[int] = []

    def open_stream() -> BinaryIO:
        stored = io.BytesIO()
        context = CONTEXT if not streams else f"{CONTEXT}/part{len(streams)}"
        writer = ComponentWriter(stored, KEY, context)
        streams.append((stored, writer))

        class Recording:
            def write(self, data: bytes) -> int:
                sizes.append(len(data))
                return writer.write(data)

        sink = cast(BinaryIO, Recording())
        return wrap(sink) if wrap else sink

    main = open_stream()
    facts = component.dump(main, open_stream if parts else None)
    stats = [writer.finish() for _stored, writer in streams]  # seals the last chunk first
    sealed_streams = [
        (stored.getvalue(), stat) for (stored, _writer), stat in zip(streams, stats, strict=True)
    ]
    (stored, first), *further = sealed_streams
    return Backup(facts, stored, first, max(sizes), further)


def opener(
    stored: bytes, stats: StreamStats, parts: list[tuple[bytes, StreamStats]] | None = None
) -> StreamOpener:
    return sealed.opener(stored, stats, KEY, CONTEXT, "postgres", parts or ())


def restore(
    url: str,
    stored: bytes,
    stats: StreamStats,
    facts: dict[str, Any],
    parts: list[tuple[bytes, StreamStats]] | None = None,
) -> dict[str, Any]:
    return PostgresComponent(url).restore(opener(stored, stats, parts), facts, RestoreOptions(TIMESTAMP))


def dump_text(url: str) -> str:
    """Everything pg_dump sees, owners and privileges included, without the lines that name the run."""
    output = subprocess.run(
        [str(postgres_bindir() / "pg_dump"), "--format=plain", "--encoding=UTF8", "--dbname", url],
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8")
    varying = ("-- Dumped from", "-- Dumped by", "\\restrict ", "\\unrestrict ")
    return "\n".join(line for line in output.splitlines() if not line.startswith(varying))


def name_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def databases_like(pg: PostgresServer, prefix: str) -> list[str]:
    with session(pg.url()) as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (prefix + "\\_%",))
        return [name for (name,) in cur.fetchall()]


def assert_no_sessions_left(pg: PostgresServer, timeout: float = 10.0) -> None:
    """Waits for the component's sessions (its own and the tools') to end: a backend exits shortly after
    its client has gone, not at the same instant."""
    deadline = time.monotonic() + timeout
    while True:
        with session(pg.url()) as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'questboard-backup'")
            left = int(cur.fetchone()[0])
        if left == 0:
            return
        assert time.monotonic() < deadline, f"{left} sessions of the component are still open"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def source(pg_server: PostgresServer) -> Iterator[str]:
    """A loaded Quest Board database shared by the tests of this module, which only read it."""
    url = create_database(pg_server, "qb_pg_component_source")
    load_quest_board(url)
    yield url
    with session(pg_server.url()) as cur:
        cur.execute('DROP DATABASE "qb_pg_component_source" WITH (FORCE)')


@pytest.fixture(scope="module")
def source_backup(source: str) -> Backup:
    return backup(PostgresComponent(source))


@pytest.fixture
def existing_target(fresh_database: str) -> str:
    """A database already in service, holding other data than the backup."""
    with session(fresh_database) as cur:
        cur.execute(
            "CREATE TABLE live (id int PRIMARY KEY, note text); INSERT INTO live VALUES (1, 'before')"
        )
    return fresh_database


def test_a_database_round_trips_through_the_encrypted_pipeline_into_a_new_database_identically(
    pg_server: PostgresServer, source: str, source_backup: Backup, fresh_database: str
) -> None:
    PostgresComponent(source).check()
    facts = source_backup.facts
    assert json.loads(json.dumps(facts)) == facts
    assert source_backup.largest_write <= READ_SIZE
    assert source_backup.stats.stored_bytes > 6 * STORED_CHUNK
    varying = ("version", "pg_dump", "indexes", "foreign_keys")
    assert {key: value for key, value in facts.items() if key not in varying} == {
        "parts": [],  # below the split threshold: one stream
        "copy_parts": [],
        "database": "qb_pg_component_source",
        "encoding": "UTF8",
        "collate": "C.UTF-8",
        "ctype": "C.UTF-8",
        "owner": "postgres",
        "roles": ["postgres", "qb_quest_app"],  # pgcrypto's functions are left to CREATE EXTENSION
        "large_objects": 4,
        "tables": {
            '"Guild Hall"."Quest.Log"': 3,
            "public.empty_table": 0,
            "public.events_2024": 43,
            "public.events_2025": 27,
            "public.measurements": 3,
            "public.noise": NOISE_BYTES // (256 * 1024),
            "public.quests": 25,
            "public.submissions": 120,
            "public.tavern_orders": 2,
            "public.users": 30,
            "rewards.ledger": 60,
        },
    }
    major = f"{postgres_major()}."
    assert facts["version"].startswith(major) and facts["pg_dump"].startswith(major)
    assert facts["indexes"]["public.users_pkey"] == "public.users"
    assert facts["indexes"]["Guild Hall.Quest.Log_pkey"] == "Guild Hall.Quest.Log"  # as pg_restore lists it
    assert facts["foreign_keys"]["public quests quests_posted_by_fkey"] == ["public.quests", "public.users"]
    target = name_of(fresh_database) + "_copy"

    report = restore(pg_server.url(target), source_backup.stored, source_backup.stats, facts)

    assert report == {
        "database": target,
        "staging": f"{target}_restore_{TIMESTAMP}",
        "previous": None,
        "tables_checked": 11,
        "rows": sum(facts["tables"].values()),
        "large_objects": 4,
    }
    assert dump_text(pg_server.url(target)) == dump_text(source)
    assert row_counts(pg_server.url(target)) == row_counts(source) == facts["tables"]
    assert databases_like(pg_server, target) == []
    assert_no_sessions_left(pg_server)


@pytest.fixture(scope="module")
def split_backup(source: str) -> Backup:
    """The same database dumped on parallel streams: the largest tables' rows in data-only parts."""
    return backup(PostgresComponent(source, jobs=3, split_min_bytes=0), parts=True)


def test_a_database_dumped_on_parallel_streams_restores_identically(
    pg_server: PostgresServer, source: str, split_backup: Backup, fresh_database: str
) -> None:
    facts = split_backup.facts
    # jobs=3: the largest table (noise, 3 MiB) has a further stream to itself, the others are spread
    # over the main stream and another; of the moved tables, those of built-in types only travel as
    # binary COPY, the others (citext, an enum, a domain, regclass) in a data-only archive.
    ineligible = {"public.users", "public.tavern_orders"}
    archived = [table for part in facts["parts"] for table in part]
    copied = [key for part in facts["copy_parts"] for key, _schema, _name in part]
    # The last part holds the cluster's roles.
    assert (
        len(split_backup.parts) == facts["roles_part"] == len(facts["parts"]) + len(facts["copy_parts"]) + 1
    )
    assert [["public.noise", "public", "noise"]] in facts["copy_parts"]
    assert "public.measurements" in copied and set(archived) <= ineligible
    assert not ineligible.intersection(copied) and len(copied) == len(set(copied))
    target = name_of(fresh_database) + "_split"

    report = restore(
        pg_server.url(target), split_backup.stored, split_backup.stats, facts, split_backup.parts
    )

    assert report["rows"] == sum(facts["tables"].values())
    assert dump_text(pg_server.url(target)) == dump_text(source)
    assert row_counts(pg_server.url(target)) == facts["tables"]
    assert databases_like(pg_server, target) == []
    assert_no_sessions_left(pg_server)


MIXED = """
CREATE TYPE mood AS ENUM ('calm', 'furious');
CREATE TABLE plain_big (id int PRIMARY KEY, at timestamptz, note text);
CREATE TABLE enum_big (id int PRIMARY KEY, mood mood, note text);
CREATE TABLE small (id int);
INSERT INTO plain_big SELECT g, '2024-01-01'::timestamptz + g * interval '1 minute', repeat('p', 50)
    FROM generate_series(1, 20000) g;
INSERT INTO enum_big SELECT g, 'furious', repeat('e', 50) FROM generate_series(1, 10000) g;
INSERT INTO small VALUES (1);
"""


@pytest.fixture(scope="module")
def mixed(pg_server: PostgresServer) -> Iterator[str]:
    url = create_database(pg_server, "qb_pg_component_mixed")
    with session(url) as cur:
        cur.execute(MIXED)
    yield url
    with session(pg_server.url()) as cur:
        cur.execute('DROP DATABASE "qb_pg_component_mixed" WITH (FORCE)')


@pytest.fixture(scope="module")
def mixed_backup(mixed: str) -> Backup:
    return backup(PostgresComponent(mixed, jobs=3, split_min_bytes=0), parts=True)


def test_a_large_table_of_a_user_defined_type_goes_to_an_archive_part_beside_the_copy_part(
    pg_server: PostgresServer, mixed: str, mixed_backup: Backup
) -> None:
    # jobs=3: plain_big and enum_big each get a stream, small stays in the main one; the enum keeps
    # enum_big out of binary COPY (its type's id differs in the restored database).
    assert mixed_backup.facts["parts"] == [["public.enum_big"]]
    assert mixed_backup.facts["copy_parts"] == [[["public.plain_big", "public", "plain_big"]]]
    assert len(mixed_backup.parts) == 3  # the archive, the copy and the roles
    target = name_of(mixed) + "_copy"

    restore(
        pg_server.url(target), mixed_backup.stored, mixed_backup.stats, mixed_backup.facts, mixed_backup.parts
    )

    assert dump_text(pg_server.url(target)) == dump_text(mixed)
    assert row_counts(pg_server.url(target)) == mixed_backup.facts["tables"]
    with session(pg_server.url(target)) as cur:
        # Loaded frozen (COPY FREEZE, in the transaction that emptied the new table): every page is
        # marked all-frozen, so no vacuum has to rewrite the table later.
        cur.execute("CREATE EXTENSION pg_visibility")
        cur.execute(
            "SELECT all_frozen, pg_relation_size('plain_big') / current_setting('block_size')::int "
            "FROM pg_visibility_map_summary('plain_big')"
        )
        frozen, pages = cur.fetchone()
    assert frozen == pages > 10
    assert_no_sessions_left(pg_server)


def sequential_scans(url: str, at_least: Mapping[str, int] | None = None) -> dict[str, int]:
    """Scans per table, once every other session of the database has ended (a session hands its counts
    to the statistics as it ends) and, with ``at_least``, once the counts have reached those (before
    PostgreSQL 15 they reach the statistics a moment later)."""
    deadline = time.monotonic() + 30
    with session(url) as cur:
        while True:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            others = cur.fetchone()[0]
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT format('%I.%I', schemaname, relname), seq_scan FROM pg_stat_user_tables")
            scans = dict(cur.fetchall())
            if not others and all(scans[key] >= n for key, n in (at_least or {}).items()):
                return scans
            assert time.monotonic() < deadline, f"{others} other sessions, scans {scans}"
            time.sleep(0.05)


def test_a_copied_table_is_read_once_its_rows_counted_by_the_server_as_the_copy_ran(mixed: str) -> None:
    before = sequential_scans(mixed)

    written = backup(PostgresComponent(mixed, jobs=3, split_min_bytes=0), parts=True)

    # plain_big: the COPY alone, no count(*) after it; the others: pg_dump's COPY and a count(*).
    expected = {"public.plain_big": 1, "public.enum_big": 2, "public.small": 2}
    after = sequential_scans(mixed, {key: before[key] + n for key, n in expected.items()})
    assert {key: n - before[key] for key, n in after.items()} == expected
    assert written.facts["copy_parts"] == [[["public.plain_big", "public", "plain_big"]]]
    assert written.facts["tables"] == {"public.enum_big": 10000, "public.plain_big": 20000, "public.small": 1}


def test_with_track_counts_off_the_copied_tables_are_counted_with_the_others(
    pg_server: PostgresServer, fresh_database: str
) -> None:
    with session(fresh_database) as cur:
        cur.execute(
            "CREATE TABLE big (id int PRIMARY KEY, note text); CREATE TABLE small (id int); "
            "INSERT INTO big SELECT g, repeat('b', 100) FROM generate_series(1, 5000) g; "
            "INSERT INTO small VALUES (1), (2)"
        )
        # The server then counts no rows for any scan (a superuser-only setting: a role or database may have it).
        cur.execute(f'ALTER DATABASE "{name_of(fresh_database)}" SET track_counts = off')

    written = backup(PostgresComponent(fresh_database, jobs=2, split_min_bytes=0), parts=True)

    assert written.facts["copy_parts"] == [[["public.big", "public", "big"]]]
    assert written.facts["tables"] == {"public.big": 5000, "public.small": 2}
    target = name_of(fresh_database) + "_uncounted"
    restore(pg_server.url(target), written.stored, written.stats, written.facts, written.parts)
    assert row_counts(pg_server.url(target)) == written.facts["tables"]


def test_only_tables_of_built_in_types_without_object_ids_travel_as_binary_copy(fresh_database: str) -> None:
    with session(fresh_database) as cur:
        cur.execute(
            "CREATE TYPE mood AS ENUM ('calm'); CREATE DOMAIN positive AS integer CHECK (VALUE > 0); "
            "CREATE TYPE pair AS (a int, b int); "
            "CREATE TABLE plain (id int, gone text, nums int[], at timestamptz, doc jsonb); "
            "ALTER TABLE plain DROP COLUMN gone; "
            "ALTER TABLE plain ADD COLUMN twice int GENERATED ALWAYS AS (id * 2) STORED; "
            "CREATE TABLE with_enum (id int, m mood); CREATE TABLE with_enum_array (id int, m mood[]); "
            "CREATE TABLE with_domain (id int, p positive); CREATE TABLE with_composite (id int, p pair); "
            "CREATE TABLE with_regclass (id int, r regclass); CREATE TABLE with_regtypes (id int, r regtype[]); "
            "CREATE TABLE with_acl (id int, a aclitem[]); CREATE TABLE no_columns (); "
            "CREATE TABLE with_xml (id int, x xml); CREATE TABLE with_xml_array (id int, x xml[]); "
            "CREATE TABLE with_cluster_type (id int, n information_schema.sql_identifier); "
            "CREATE TABLE with_range (id int, r tstzrange, m int4multirange, p point, b bit(3)); "
            "CREATE TABLE parent (id int) PARTITION BY RANGE (id)"
        )
        names = ["plain", "with_enum", "with_enum_array", "with_domain", "with_composite", "with_regclass"]
        names += ["with_regtypes", "with_acl", "no_columns", "parent", "with_xml", "with_xml_array"]
        names += ["with_cluster_type", "with_range"]

        assert binary_columns(cur, [f"public.{name}" for name in names]) == {
            "public.plain": ("id", "nums", "at", "doc"),  # neither the dropped nor the generated column
            "public.with_range": ("id", "r", "m", "p", "b"),
        }


def flipped(part: tuple[bytes, StreamStats]) -> tuple[bytes, StreamStats]:
    return flip(part[0], len(part[0]) - 100), part[1]


def truncated(part: tuple[bytes, StreamStats]) -> tuple[bytes, StreamStats]:
    return part[0][: HEADER.size + 10], part[1]


@pytest.mark.parametrize(
    ("damage", "index", "error"),
    [
        (flipped, 0, "failed authentication"),
        (flipped, 1, "failed authentication"),
        (truncated, 0, "truncated"),
        (truncated, 1, "truncated"),
        (None, 1, "no part 3"),
    ],
    ids=[
        "flipped archive part",
        "flipped copy part",
        "truncated archive part",
        "truncated copy part",
        "missing",
    ],
)
def test_a_damaged_or_missing_part_fails_the_restore_and_leaves_the_target(
    pg_server: PostgresServer,
    mixed_backup: Backup,
    existing_target: str,
    damage: Callable[[tuple[bytes, StreamStats]], tuple[bytes, StreamStats]] | None,
    index: int,
    error: str,
) -> None:
    before = dump_text(existing_target)
    parts = list(mixed_backup.parts)
    assert len(mixed_backup.facts["parts"]) == 1 and len(parts) == 3  # the archive part comes first
    if damage is None:
        del parts[index]
    else:
        parts[index] = damage(parts[index])

    with pytest.raises(IntegrityError, match=error):
        restore(existing_target, mixed_backup.stored, mixed_backup.stats, mixed_backup.facts, parts)

    assert dump_text(existing_target) == before
    assert databases_like(pg_server, name_of(existing_target)) == []
    assert_no_sessions_left(pg_server)


@pytest.fixture(scope="module")
def big_backup(pg_server: PostgresServer) -> Iterator[Backup]:
    """A 40 MB table in a copy part (many stored chunks), a small one of an enum in an archive part."""
    url = create_database(pg_server, "qb_pg_component_big")
    with session(url) as cur:
        cur.execute(
            "CREATE TYPE mood AS ENUM ('calm'); CREATE TABLE moods (id int, mood mood); CREATE TABLE one (id int); "
            "CREATE TABLE big (id int, note text); INSERT INTO moods SELECT g, 'calm' FROM generate_series(1, 1000) g; "
            "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 300000) g; INSERT INTO one VALUES (1)"
        )
    written = backup(PostgresComponent(url, jobs=3, split_min_bytes=0), parts=True)
    assert written.facts["parts"] == [["public.moods"]] and len(written.facts["copy_parts"]) == 1
    yield written
    with session(pg_server.url()) as cur:
        cur.execute('DROP DATABASE "qb_pg_component_big" WITH (FORCE)')


def test_a_copy_part_damaged_mid_table_fails_as_damage_and_leaves_the_target(
    pg_server: PostgresServer, big_backup: Backup, existing_target: str
) -> None:
    before = dump_text(existing_target)
    archive, (copy, stats), roles = big_backup.parts
    parts = [archive, (flip(copy, len(copy) // 2), stats), roles]  # read inside COPY ... FROM STDIN

    with pytest.raises(IntegrityError, match="failed authentication"):
        restore(existing_target, big_backup.stored, big_backup.stats, big_backup.facts, parts)

    assert dump_text(existing_target) == before
    assert databases_like(pg_server, name_of(existing_target)) == []
    assert_no_sessions_left(pg_server)


def test_a_failing_step_stops_the_other_steps_instead_of_letting_them_run_to_their_end(
    pg_server: PostgresServer, big_backup: Backup, fresh_database: str
) -> None:
    written = big_backup
    inner = opener(written.stored, written.stats, written.parts)
    copying, failed = threading.Event(), threading.Event()
    read = [0]
    opened: list[int] = []

    class Counting:
        """The copy part (part 2, 40 MB), counting what the restore reads of it."""

        def __init__(self, reader: BinaryIO) -> None:
            self._reader = reader

        def read(self, size: int = -1) -> bytes:
            data = self._reader.read(size)
            read[0] += len(data)
            if read[0] > 1_000_000:
                copying.set()
                assert failed.wait(30)  # goes on reading only once the other step has failed
            return data

    class Failing:
        """The archive part (part 1) when its rows are restored: it fails once the copy is under way."""

        def read(self, size: int = -1) -> bytes:
            assert copying.wait(30)
            failed.set()
            raise IntegrityError("postgres part 1: simulated damage")

        def readinto(self, buffer: Any) -> int:
            self.read()
            return 0

    @contextmanager
    def streams(part: int = 0) -> Iterator[BinaryIO]:
        opened.append(part)
        with inner(part) as reader:
            if part == 2:
                yield cast(BinaryIO, Counting(reader))
            elif part == 1 and opened.count(1) == 2:  # the first opening reads its listing
                yield cast(BinaryIO, Failing())
            else:
                yield reader

    target = name_of(fresh_database) + "_stopped"
    with pytest.raises(IntegrityError, match="simulated damage"):
        PostgresComponent(pg_server.url(target), jobs=3).restore(
            streams, written.facts, RestoreOptions(TIMESTAMP)
        )

    # The 40 MB copy part was being loaded when the archive part failed: it stopped before its end.
    assert 1_000_000 < read[0] < written.parts[1][1].raw_bytes
    assert databases_like(pg_server, target) == []
    assert_no_sessions_left(pg_server)


def test_a_cancelled_restore_cancels_a_row_count_under_way(fresh_database: str) -> None:
    with session(fresh_database) as cur:
        cur.execute("CREATE TABLE held (id int); INSERT INTO held VALUES (1)")
    cancel = Cancel()
    outcome: list[BaseException | dict[str, int]] = []
    with closing(psycopg2.connect(fresh_database)) as holder, holder.cursor() as cur:
        # The count waits for this lock as a count of a large table would take its time.
        cur.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")

        def count() -> None:
            try:
                component = PostgresComponent(fresh_database)
                outcome.append(component._count_rows(name_of(fresh_database), [("public", "held")], cancel))
            except BaseException as error:  # noqa: BLE001 - checked below
                outcome.append(error)

        counting = threading.Thread(target=count)
        counting.start()
        deadline = time.monotonic() + 30
        with session(fresh_database) as watch:
            while True:  # until the count is waiting for the lock
                watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%%count(*)%%held%%'"
                )
                if watch.fetchone()[0]:
                    break
                assert time.monotonic() < deadline and counting.is_alive()
                time.sleep(0.01)

        cancel.cancel()  # another step failed
        counting.join(30)
        assert not counting.is_alive()  # it stopped while the lock was still held
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)


def test_copy_parts_keep_text_in_the_database_encoding_whatever_the_client_asks_for(
    pg_server: PostgresServer, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session(fresh_database) as cur:
        cur.execute(
            "CREATE TABLE notes (id int, note text, doc jsonb); CREATE TABLE one (id int); INSERT INTO one VALUES (1); "
            "INSERT INTO notes SELECT g, 'café 🐉 北 ' || g, jsonb_build_object('名前', 'ü' || g) FROM generate_series(1, 500) g"
        )
    # A role, URL or environment asking for another client encoding (here one without 🐉 or 北).
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    written = backup(PostgresComponent(fresh_database, jobs=2, split_min_bytes=0), parts=True)
    assert written.facts["copy_parts"] == [[["public.notes", "public", "notes"]]]
    target = name_of(fresh_database) + "_copy"

    restore(pg_server.url(target), written.stored, written.stats, written.facts, written.parts)

    monkeypatch.delenv("PGCLIENTENCODING")
    assert dump_text(pg_server.url(target)) == dump_text(fresh_database)


def test_parallel_streams_see_one_snapshot_while_the_database_is_being_written(
    pg_server: PostgresServer, fresh_database: str
) -> None:
    with session(fresh_database) as cur:
        cur.execute(
            "CREATE TABLE guilds (id bigint PRIMARY KEY, note text); "
            "CREATE TABLE members (id bigserial PRIMARY KEY, guild bigint NOT NULL REFERENCES guilds (id), note text); "
            "INSERT INTO guilds SELECT g, repeat('g', 100) FROM generate_series(1, 2000) g; "
            "INSERT INTO members (guild, note) SELECT 1 + g % 2000, repeat('m', 200) FROM generate_series(1, 40000) g"
        )
    commits = 0
    stop = threading.Event()

    def write() -> None:
        """A new guild and its first member in each transaction, as fast as the server takes them."""
        nonlocal commits
        with closing(psycopg2.connect(fresh_database)) as conn, conn.cursor() as cur:
            guild = 2000
            while not stop.is_set():
                guild += 1
                cur.execute("INSERT INTO guilds VALUES (%s, 'new')", (guild,))
                cur.execute("INSERT INTO members (guild, note) VALUES (%s, 'new')", (guild,))
                conn.commit()
                commits += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while commits < 50:  # the writer is going before the dump starts
            assert writer.is_alive()
            time.sleep(0.01)
        before = commits
        written = backup(PostgresComponent(fresh_database, jobs=2, split_min_bytes=0), parts=True)
        during = commits - before
    finally:
        stop.set()
        writer.join()
    assert during > 10  # transactions committed while the streams were being dumped
    # The larger table goes to a copy part, the other stays in the main stream: their rows were read by
    # psql and pg_dump, which must both have read the same snapshot.
    assert written.facts["copy_parts"] == [[["public.members", "public", "members"]]]
    assert written.facts["parts"] == []
    target = name_of(fresh_database) + "_copy"

    restore(pg_server.url(target), written.stored, written.stats, written.facts, written.parts)

    counts = row_counts(pg_server.url(target))
    assert counts == written.facts["tables"]
    assert counts["public.guilds"] - 2000 == counts["public.members"] - 40000 > 0


def test_ddl_arriving_during_the_copies_waits_for_the_backup_instead_of_failing_it(
    pg_server: PostgresServer, fresh_database: str
) -> None:
    with session(fresh_database) as cur:
        cur.execute(
            "CREATE TABLE a_big (id int, note text); CREATE TABLE b_mid (id int, note text); "
            "CREATE TABLE c_late (id int); CREATE TABLE tiny (id int); INSERT INTO tiny VALUES (1); "
            "INSERT INTO a_big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 150000) g; "
            "INSERT INTO b_mid SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 100000) g; "
            "INSERT INTO c_late SELECT generate_series(1, 100)"
        )
    streams = itertools.count()
    migration_waiting, main_writing = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def migrate() -> None:
        """A migration on c_late, queued behind the backup's locks while b_mid is being copied."""
        try:
            with session(fresh_database) as cur:
                cur.execute("ALTER TABLE c_late ADD COLUMN extra int")
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    migration = threading.Thread(target=migrate)

    class MigrationOnFirstWrite:
        def __init__(self, sink: BinaryIO) -> None:
            self._sink = sink
            self._written = 0

        def write(self, data: bytes) -> int:
            self._written += len(data)
            if self._written > 1_000_000 and not migration_waiting.is_set():  # b_mid's rows coming
                # pg_dump writes once it has locked every table (the migration queued before that
                # would make it give up, as plain pg_dump would).
                assert main_writing.wait(10)
                migration.start()
                deadline = time.monotonic() + 10
                with session(pg_server.url()) as cur:
                    while not migration_waiting.is_set():
                        cur.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND query LIKE 'ALTER TABLE c_late%%'"
                        )
                        if cur.fetchone()[0]:
                            migration_waiting.set()
                        assert time.monotonic() < deadline, "the migration never queued"
            return self._sink.write(data)

    class Main:
        def __init__(self, sink: BinaryIO) -> None:
            self._sink = sink

        def write(self, data: bytes) -> int:
            main_writing.set()
            return self._sink.write(data)

    def wrap(sink: BinaryIO) -> BinaryIO:
        # Streams: the main dump, part 1 (a_big), part 2 (b_mid, then c_late).
        number = next(streams)
        return cast(
            BinaryIO, Main(sink) if number == 0 else MigrationOnFirstWrite(sink) if number == 2 else sink
        )

    component = PostgresComponent(fresh_database, jobs=2, split_min_bytes=0)
    written = backup(component, wrap, parts=True)
    migration.join()

    assert migration_waiting.is_set() and errors == []
    assert written.facts["copy_parts"] == [
        [["public.a_big", "public", "a_big"]],
        [["public.b_mid", "public", "b_mid"], ["public.c_late", "public", "c_late"]],
    ]
    target = name_of(fresh_database) + "_copy"
    restore(pg_server.url(target), written.stored, written.stats, written.facts, written.parts)
    with session(pg_server.url(target)) as cur:
        cur.execute("SELECT count(*) FROM c_late")
        assert cur.fetchone()[0] == 100
        cur.execute("SELECT count(*) FROM information_schema.columns WHERE column_name = 'extra'")
        assert cur.fetchone()[0] == 0  # as of the snapshot, before the migration


def test_a_table_locked_by_running_ddl_fails_the_dump_in_one_line_once_the_wait_is_over(
    pg_server: PostgresServer, fresh_database: str
) -> None:
    with session(fresh_database) as cur:
        cur.execute("CREATE TABLE ledger (id int); CREATE TABLE other (id int)")
    component = PostgresComponent(fresh_database, jobs=2, split_min_bytes=0)
    component.lock_wait = "300ms"
    with closing(psycopg2.connect(fresh_database)) as ddl, ddl.cursor() as cur:
        cur.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")  # a migration, mid-way

        with pytest.raises(SourceError) as failure:
            component.dump(io.BytesIO(), lambda: cast(BinaryIO, io.BytesIO()))

        ddl.rollback()
    assert "lock timeout" in str(failure.value) and "\n" not in str(failure.value)
    assert_no_sessions_left(pg_server)


def test_one_failing_dump_stream_stops_the_others_and_fails_the_dump(
    pg_server: PostgresServer, source: str
) -> None:
    class DiskFull(Exception):
        pass

    class FailingSink:
        def write(self, data: bytes) -> int:
            raise DiskFull("the part's storage is full")

    main = io.BytesIO()
    component = PostgresComponent(source, jobs=2, split_min_bytes=0)

    with pytest.raises(DiskFull):
        component.dump(main, lambda: cast(BinaryIO, FailingSink()))

    assert_no_sessions_left(pg_server)  # both pg_dumps and the counters have gone


def test_restoring_over_an_existing_database_keeps_it_as_the_pre_restore_copy(
    pg_server: PostgresServer, source: str, source_backup: Backup, existing_target: str
) -> None:
    before = dump_text(existing_target)
    name = name_of(existing_target)
    idle_client = psycopg2.connect(existing_target)

    report = restore(existing_target, source_backup.stored, source_backup.stats, source_backup.facts)

    previous = f"{name}_pre_restore_{TIMESTAMP}"
    assert report["previous"] == previous and report["database"] == name
    assert dump_text(existing_target) == dump_text(source)
    assert dump_text(pg_server.url(previous)) == before
    assert databases_like(pg_server, name) == [previous]
    with pytest.raises(psycopg2.OperationalError), idle_client.cursor() as cur:
        cur.execute("SELECT 1")
    idle_client.close()


def test_a_name_too_long_for_the_suffixes_still_restores_over_the_existing_database(
    pg_server: PostgresServer, source: str, source_backup: Backup, fresh_database: str
) -> None:
    name = (name_of(fresh_database) + "_" + "x" * 63)[:63]
    create_database(pg_server, name)

    report = restore(pg_server.url(name), source_backup.stored, source_backup.stats, source_backup.facts)

    assert len(report["staging"]) == len(report["previous"]) == 63
    assert report["previous"].endswith(f"_pre_restore_{TIMESTAMP}")
    assert sorted(databases_like(pg_server, name_of(fresh_database))) == sorted([name, report["previous"]])
    assert row_counts(pg_server.url(name)) == source_backup.facts["tables"]


@pytest.fixture
def make_role(pg_server: PostgresServer, fresh_database: str) -> Iterator[Callable[[str], str]]:
    """Creates roles for the test (``make_role("LOGIN CREATEDB")`` returns the new role's name); drops
    them afterwards, after the test's databases, which they may own or hold objects in."""
    created: list[str] = []

    def make(options: str = "") -> str:
        name = f"qb_role_{next(_roles)}_{os.getpid()}"
        with session(pg_server.url()) as cur:
            cur.execute(f"CREATE ROLE {name} {options}")
        created.append(name)
        return name

    yield make
    prefix = name_of(fresh_database)
    with session(pg_server.url()) as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s", (prefix, prefix + "\\_%")
        )
        for (datname,) in cur.fetchall():
            cur.execute(f'DROP DATABASE "{datname}" WITH (FORCE)')
        for name in created:
            cur.execute(f"DROP ROLE {name}")


def as_role(pg: PostgresServer, role: str, database: str) -> str:
    return f"postgresql://{role}@127.0.0.1:{pg.port}/{database}"


def unread(open_stream: StreamOpener, opened: list[int]) -> StreamOpener:
    """``open_stream``, noting in ``opened`` each part opened."""

    @contextmanager
    def streams(part: int = 0) -> Iterator[BinaryIO]:
        opened.append(part)
        with open_stream(part) as reader:
            yield reader

    return streams


@pytest.mark.parametrize(
    ("options", "owns_target", "lacking"),
    [
        pytest.param(
            "LOGIN", True, "it lacks CREATEDB (grant it: ALTER ROLE {role} CREATEDB)", id="no-createdb"
        ),
        pytest.param(
            "LOGIN CREATEDB",
            False,
            'it does not own database "{target}" (owner: "postgres"); restore as its owner or a superuser',
            id="not-the-owner",
        ),
        pytest.param(
            "LOGIN",
            False,
            "it lacks CREATEDB (grant it: ALTER ROLE {role} CREATEDB) and it does not own database "
            '"{target}" (owner: "postgres"); restore as its owner or a superuser',
            id="neither",
        ),
    ],
)
def test_a_role_lacking_a_restore_privilege_is_refused_before_anything_is_created_or_read(
    pg_server: PostgresServer,
    source_backup: Backup,
    existing_target: str,
    make_role: Callable[[str], str],
    options: str,
    owns_target: bool,
    lacking: str,
) -> None:
    role, target = make_role(options), name_of(existing_target)
    if owns_target:
        with session(pg_server.url()) as cur:
            cur.execute(f'ALTER DATABASE "{target}" OWNER TO {role}')
    before = dump_text(existing_target)
    component = PostgresComponent(as_role(pg_server, role, target))
    opened: list[int] = []
    expected = f'role "{role}" cannot restore into "{target}": ' + lacking.format(role=role, target=target)

    with pytest.raises(SourceUnreachableError) as refused:
        component.restore(
            unread(opener(source_backup.stored, source_backup.stats), opened),
            source_backup.facts,
            RestoreOptions(TIMESTAMP),
        )

    assert str(refused.value) == expected
    assert opened == []
    assert dump_text(existing_target) == before
    assert databases_like(pg_server, target) == []
    with pytest.raises(SourceUnreachableError) as checked:
        component.check_restore_privileges()
    assert str(checked.value) == expected


@pytest.mark.parametrize("target_exists", [True, False], ids=["over-its-database", "into-a-new-database"])
def test_a_role_with_createdb_restores_over_a_database_it_owns_or_into_a_new_one(
    pg_server: PostgresServer, fresh_database: str, make_role: Callable[[str], str], target_exists: bool
) -> None:
    role = make_role("LOGIN CREATEDB")
    source = name_of(fresh_database) + "_src"
    with session(pg_server.url()) as cur:
        cur.execute(f'CREATE DATABASE "{source}" OWNER {role}')
    with session(as_role(pg_server, role, source)) as cur:
        cur.execute(
            "CREATE TABLE quests (id int PRIMARY KEY, title text); INSERT INTO quests VALUES (1, 'slay')"
        )
    taken = backup(PostgresComponent(pg_server.url(source)))
    target = name_of(fresh_database) if target_exists else name_of(fresh_database) + "_new"
    if target_exists:
        with session(pg_server.url()) as cur:
            cur.execute(f'ALTER DATABASE "{target}" OWNER TO {role}')
    component = PostgresComponent(as_role(pg_server, role, target))

    component.check_restore_privileges()
    report = component.restore(opener(taken.stored, taken.stats), taken.facts, RestoreOptions(TIMESTAMP))

    previous = f"{target}_pre_restore_{TIMESTAMP}" if target_exists else None
    assert report["previous"] == previous
    assert dump_text(pg_server.url(target)) == dump_text(pg_server.url(source))
    with session(pg_server.url()) as cur:
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (target,))
        assert cur.fetchone()[0] == role


def test_the_facts_name_every_role_that_owns_an_object_of_the_database_or_is_granted_one(
    pg_server: PostgresServer, fresh_database: str, make_role: Callable[[str], str]
) -> None:
    owner, author, reader, columns, defaulted = (make_role("") for _ in range(5))
    with session(pg_server.url()) as cur:
        cur.execute(f'ALTER DATABASE "{name_of(fresh_database)}" OWNER TO {owner}')
    with session(fresh_database) as cur:
        cur.execute(
            f"ALTER SCHEMA public OWNER TO {owner}; CREATE EXTENSION IF NOT EXISTS pgcrypto; "
            f"CREATE SCHEMA lore AUTHORIZATION {author}; CREATE TABLE lore.tales (id int, secret text); "
            f"ALTER TABLE lore.tales OWNER TO {author}; GRANT SELECT ON lore.tales TO {reader}; "
            f"GRANT SELECT (id) ON lore.tales TO {columns}; "
            f"CREATE FUNCTION public.answer() RETURNS int LANGUAGE sql AS 'SELECT 42'; "
            f"ALTER FUNCTION public.answer() OWNER TO {owner}; REVOKE EXECUTE ON FUNCTION public.answer() FROM PUBLIC; "
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT ON TABLES TO {defaulted}"
        )

    facts = backup(PostgresComponent(fresh_database)).facts

    # Not postgres: it owns only pgcrypto's functions, which CREATE EXTENSION makes anew on a restore.
    assert facts["roles"] == sorted([owner, author, reader, columns, defaulted])
    assert describe_roles(facts) == "roles: " + ", ".join(facts["roles"])


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        pytest.param(
            lambda b: (flip(b.stored, len(b.stored) // 2), b.stats),
            "failed authentication",
            id="flipped-byte",
        ),
        pytest.param(
            lambda b: (b.stored[: HEADER.size + 4 * STORED_CHUNK], b.stats),
            "trunc",
            id="cut-at-a-chunk-boundary",
        ),
        # pg_restore has been given the whole archive but the seal: it must not get the end of its input.
        pytest.param(
            lambda b: (flip(b.stored, len(b.stored) - 3), b.stats),
            "failed authentication",
            id="flip-in-the-seal",
        ),
        # The stream itself is sound, only the manifest disagrees with it.
        pytest.param(
            lambda b: (b.stored, dataclasses.replace(b.stats, sha256="0" * 64)), "SHA-256", id="manifest-hash"
        ),
    ],
)
def test_a_damaged_stream_raises_integrity_error_and_leaves_the_target_and_no_staging(
    pg_server: PostgresServer,
    source_backup: Backup,
    existing_target: str,
    damage: Callable[[Backup], tuple[bytes, StreamStats]],
    error: str,
) -> None:
    before = dump_text(existing_target)
    damaged, stats = damage(source_backup)
    assert len(damaged) > HEADER.size + 3 * STORED_CHUNK  # pg_restore has been fed a good part first

    with pytest.raises(IntegrityError, match=error):
        restore(existing_target, damaged, stats, source_backup.facts)

    assert dump_text(existing_target) == before
    assert databases_like(pg_server, name_of(existing_target)) == []
    assert_no_sessions_left(pg_server)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ({"tables": {"public.users": 31}}, "table public.users expected 31 rows, got 30 rows"),
        ({"tables": {"public.gone": 1}}, "table public.gone expected 1 rows, got no such table"),
        ({"large_objects": 5}, "expected 5 large objects, got 4"),
    ],
)
def test_restore_refuses_a_result_that_does_not_match_the_facts_and_leaves_the_target_untouched(
    pg_server: PostgresServer,
    source_backup: Backup,
    existing_target: str,
    tamper: dict[str, Any],
    message: str,
) -> None:
    facts = {**source_backup.facts, **tamper}
    if "tables" in tamper:
        facts["tables"] = {**source_backup.facts["tables"], **tamper["tables"]}
    before = dump_text(existing_target)

    with pytest.raises(RestoreVerificationError, match=message):
        restore(existing_target, source_backup.stored, source_backup.stats, facts)

    assert dump_text(existing_target) == before
    assert databases_like(pg_server, name_of(existing_target)) == []


def test_a_failing_pg_restore_is_reported_with_its_error_and_leaves_the_target_and_no_staging(
    pg_server: PostgresServer, fresh_database: str, existing_target: str
) -> None:
    # Dumped while a role owns a table, restored after the role is gone: pg_restore stops on ALTER OWNER.
    # (This backup has no roles part, as older backups do not, so nothing creates the role again.)
    role = f"qb_gone_{next(_roles)}_{os.getpid()}"
    source = name_of(fresh_database) + "_src"
    url = create_database(pg_server, source)
    with session(url) as cur:
        cur.execute(f"CREATE ROLE {role}; CREATE TABLE quests (id int); INSERT INTO quests VALUES (1)")
        cur.execute(f"ALTER TABLE quests OWNER TO {role}")
    taken = backup(PostgresComponent(url))
    with session(url) as cur:
        cur.execute(f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}")
    before = dump_text(existing_target)

    with pytest.raises(SourceError, match=rf'pg_restore failed \(exit 1\): .*role "{role}" does not exist'):
        restore(existing_target, taken.stored, taken.stats, taken.facts)

    assert dump_text(existing_target) == before
    assert databases_like(pg_server, name_of(existing_target)) == [source]


def test_an_unreachable_server_is_reported_in_one_line_without_the_password(source_backup: Backup) -> None:
    component = PostgresComponent(f"postgresql://u:s3cret@127.0.0.1:{free_port()}/db")
    calls: list[Callable[[], object]] = [
        component.check,
        lambda: component.dump(cast(BinaryIO, io.BytesIO())),
        lambda: component.restore(
            opener(source_backup.stored, source_backup.stats), source_backup.facts, RestoreOptions(TIMESTAMP)
        ),
    ]
    for call in calls:
        with pytest.raises(SourceUnreachableError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith("cannot connect to PostgreSQL at postgresql://u")
        assert "\n" not in message and "s3cret" not in message and "refused" in message


def fake_tool(folder: Path, name: str, version: str, body: str = "exit 0") -> Path:
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "{name} (PostgreSQL) {version}"; exit 0; fi\n{body}\n'
    )
    script.chmod(0o755)
    return folder


def test_pg_dump_gets_the_password_only_through_its_environment_and_its_failure_is_reported(
    pg_server: PostgresServer, fresh_database: str, tmp_path: Path
) -> None:
    body = f'echo "$@" > {tmp_path}/args; printf %s "$PGPASSWORD" > {tmp_path}/password\n'
    body += 'echo "pg_dump: warning: noise" >&2; echo "pg_dump: error: boom" >&2; echo "later" >&2; exit 3'
    bin_dir = fake_tool(tmp_path / "bin", "pg_dump", f"{postgres_major()}.18", body)
    url = fresh_database.replace("postgres@", "postgres:s3cret@")  # the test server trusts, any password goes
    with session(fresh_database) as cur:
        cur.execute("CREATE TABLE t (id int)")

    with pytest.raises(SourceError) as caught:
        PostgresComponent(url, bin_dir).dump(cast(BinaryIO, io.BytesIO()))

    assert str(caught.value) == "pg_dump failed (exit 3) in the main dump: pg_dump: error: boom"
    args = (tmp_path / "args").read_text()
    assert "s3cret" not in args and "--snapshot=" in args and "--format=custom" in args
    assert (tmp_path / "password").read_text() == "s3cret"
    assert_no_sessions_left(pg_server)


def test_an_interrupted_dump_stops_pg_dump_and_releases_every_session(
    pg_server: PostgresServer, source: str
) -> None:
    class Deadline:
        def __init__(self, inner: BinaryIO) -> None:
            self.inner, self.calls = inner, 0

        def write(self, data: bytes) -> int:
            self.calls += 1
            if self.calls > 1:
                raise DeadlineExceededError("postgres stopped: the time limit is near")
            return self.inner.write(data)

    with pytest.raises(DeadlineExceededError):
        backup(PostgresComponent(source), lambda sink: cast(BinaryIO, Deadline(sink)))

    assert_no_sessions_left(pg_server)


def test_check_refuses_a_pg_dump_older_than_the_server(fresh_database: str, tmp_path: Path) -> None:
    older = postgres_major() - 1
    bin_dir = fake_tool(tmp_path / "bin", "pg_dump", f"{older}.9")
    (bin_dir / "pg_restore").symlink_to(postgres_bindir() / "pg_restore")
    (bin_dir / "psql").symlink_to(postgres_bindir() / "psql")

    with pytest.raises(
        SourceError, match=rf"^pg_dump {older}\.9 cannot dump a PostgreSQL {older + 1} server"
    ):
        PostgresComponent(fresh_database, bin_dir).check()


def test_a_leftover_database_with_the_staging_name_is_refused_and_left_alone(
    pg_server: PostgresServer, source_backup: Backup, existing_target: str
) -> None:
    leftover = f"{name_of(existing_target)}_restore_{TIMESTAMP}"
    with session(create_database(pg_server, leftover)) as cur:
        cur.execute("CREATE TABLE kept (id int)")

    with pytest.raises(SourceError, match=f"cannot create staging database {leftover}: .*already exists"):
        restore(existing_target, source_backup.stored, source_backup.stats, source_backup.facts)

    assert "public.kept" in row_counts(pg_server.url(leftover))
    assert "public.live" in row_counts(existing_target)


@pytest.mark.parametrize(
    "created_with",
    [
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'",
        "LOCALE_PROVIDER icu ICU_LOCALE 'und'",
        "OWNER qb_db_owner",
    ],
    ids=["latin1", "icu", "owned-by-a-role"],
)
def test_the_restored_database_gets_the_encoding_and_locale_of_the_backed_up_one(
    pg_server: PostgresServer, fresh_database: str, created_with: str
) -> None:
    source, target = name_of(fresh_database) + "_src", name_of(fresh_database) + "_copy"
    with session(pg_server.url()) as cur:
        cur.execute("SELECT FROM pg_roles WHERE rolname = 'qb_db_owner'")
        if cur.fetchone() is None:
            cur.execute("CREATE ROLE qb_db_owner")
        cur.execute(f'CREATE DATABASE "{source}" TEMPLATE template0 {created_with}')
    with session(pg_server.url(source)) as cur:
        cur.execute("CREATE TABLE names (n text); INSERT INTO names VALUES ('Zoë'), ('zoe'), ('Ångström')")
    taken = backup(PostgresComponent(pg_server.url(source)))

    restore(pg_server.url(target), taken.stored, taken.stats, taken.facts)

    def settings(name: str) -> tuple[Any, ...]:
        with session(pg_server.url()) as cur:
            cur.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, daticulocale, "
                "pg_get_userbyid(datdba) "
                "FROM pg_database WHERE datname = %s",
                (name,),
            )
            return tuple(cur.fetchone())

    assert settings(target) == settings(source)
    assert dump_text(pg_server.url(target)) == dump_text(pg_server.url(source))
