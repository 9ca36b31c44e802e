"""The PostgreSQL restore in steps (stage, swap in, settle, undo, clear leftovers) against a real server:
each step may run in another process than the one before, and a kill anywhere leaves a state that undo
or the next restore puts right, without ever dropping an operator's rollback copy."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from questboard_backup.errors import SourceError
from questboard_backup.sources.base import RestoreOptions
from questboard_backup.sources.postgres.component import PostgresComponent
from tests.integration.test_postgres_component import (
    Backup,
    backup,
    create_database,
    databases_like,
    dump_text,
    name_of,
    opener,
    session,
)
from tests.servers import PostgresServer

TIMESTAMP = "20240102_030405"
EARLIER = "20231231_235959"
LATER = "20240203_040506"
OPTIONS = RestoreOptions(TIMESTAMP)


@pytest.fixture(scope="module")
def small_backup(pg_server: PostgresServer) -> Iterator[Backup]:
    url = create_database(pg_server, "qb_pg_staged_source")
    with session(url) as cur:
        cur.execute(
            "CREATE TABLE quests (id int PRIMARY KEY, title text); "
            "INSERT INTO quests SELECT g, 'quest ' || g FROM generate_series(1, 50) g"
        )
    yield backup(PostgresComponent(url), parts=True)
    with session(pg_server.url()) as cur:
        cur.execute('DROP DATABASE "qb_pg_staged_source" WITH (FORCE)')


@pytest.fixture
def target(fresh_database: str) -> str:
    """A database in service, holding other data than the backup."""
    with session(fresh_database) as cur:
        cur.execute(
            "CREATE TABLE live (id int PRIMARY KEY, note text); INSERT INTO live VALUES (1, 'before')"
        )
    return fresh_database


def stage(url: str, taken: Backup, options: RestoreOptions = OPTIONS) -> PostgresComponent:
    component = PostgresComponent(url)
    component.stage(opener(taken.stored, taken.stats, taken.parts), taken.facts, options)
    return component


def database(pg: PostgresServer, name: str) -> tuple[bool, str | None] | None:
    """(ALLOW_CONNECTIONS, comment) of a database, or None when there is none of that name."""
    with session(pg.url()) as cur:
        cur.execute(
            "SELECT datallowconn, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        )
        row = cur.fetchone()
    return (bool(row[0]), row[1]) if row else None


def test_a_staged_restore_undone_leaves_the_target_as_it_was_and_no_staging_database(
    pg_server: PostgresServer, small_backup: Backup, target: str
) -> None:
    before, name = dump_text(target), name_of(target)

    stage(target, small_backup)

    assert databases_like(pg_server, name) == [f"{name}_restore_{TIMESTAMP}"]
    assert dump_text(target) == before
    assert PostgresComponent(target).undo(OPTIONS) == [f"dropped {name}_restore_{TIMESTAMP}"]
    assert dump_text(target) == before
    assert databases_like(pg_server, name) == []
    assert PostgresComponent(target).undo(OPTIONS) == []


def test_a_swap_undone_by_another_process_gives_the_target_back_exactly(
    pg_server: PostgresServer, small_backup: Backup, target: str
) -> None:
    before, name = dump_text(target), name_of(target)
    previous = f"{name}_pre_restore_{TIMESTAMP}"
    report = stage(target, small_backup).swap_in(OPTIONS)
    assert report == {"previous": previous}
    assert "public.quests" in dump_text(target)
    # Swapped but not settled, as a later process reads it off the server.
    assert database(pg_server, previous) == (False, None)
    assert database(pg_server, name) == (
        True,
        f"questboard-backup restore {TIMESTAMP} not settled target={name}",
    )

    undone = PostgresComponent(target).undo(OPTIONS)  # a new instance: another Lambda invocation

    assert undone == [
        f"moved the restored database {name} back to {name}_restore_{TIMESTAMP}",
        f"put {previous} back as {name}",
        f"dropped {name}_restore_{TIMESTAMP}",
    ]
    assert dump_text(target) == before
    assert database(pg_server, name) == (True, None)
    assert databases_like(pg_server, name) == []
    assert PostgresComponent(target).undo(OPTIONS) == []


def test_a_swap_into_a_new_database_undone_leaves_no_database(
    pg_server: PostgresServer, small_backup: Backup, fresh_database: str
) -> None:
    url = pg_server.url(name_of(fresh_database) + "_new")

    assert stage(url, small_backup).swap_in(OPTIONS) == {"previous": None}
    PostgresComponent(url).undo(OPTIONS)

    assert database(pg_server, name_of(url)) is None
    assert databases_like(pg_server, name_of(url)) == []


def test_settling_opens_the_previous_copy_and_clears_the_mark_so_undo_keeps_the_restore(
    pg_server: PostgresServer, small_backup: Backup, target: str
) -> None:
    before, name = dump_text(target), name_of(target)
    previous = f"{name}_pre_restore_{TIMESTAMP}"
    component = stage(target, small_backup)
    component.swap_in(OPTIONS)

    PostgresComponent(target).settle(OPTIONS)

    assert database(pg_server, previous) == (True, None)
    assert database(pg_server, name) == (True, None)
    assert PostgresComponent(target).undo(OPTIONS) == []
    assert dump_text(pg_server.url(previous)) == before
    assert "public.quests" in dump_text(target)


@pytest.mark.parametrize("finisher", ["undo", "clear_leftovers"])
def test_a_swap_killed_between_its_two_renames_is_put_back(
    pg_server: PostgresServer, small_backup: Backup, target: str, finisher: str
) -> None:
    before, name = dump_text(target), name_of(target)
    staging, previous = f"{name}_restore_{TIMESTAMP}", f"{name}_pre_restore_{TIMESTAMP}"
    stage(target, small_backup)
    # What swap_in does before its second rename, then the process is gone.
    with session(pg_server.url()) as cur:
        cur.execute(
            f"COMMENT ON DATABASE \"{staging}\" IS 'questboard-backup restore {TIMESTAMP} not settled target={name}'"
        )
        cur.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        cur.execute(f'ALTER DATABASE "{name}" RENAME TO "{previous}"')
    assert database(pg_server, name) is None

    if finisher == "undo":
        done = PostgresComponent(target).undo(OPTIONS)
        assert done == [f"put {previous} back as {name}", f"dropped {staging}"]
    else:  # the next restore, at a later time
        done = PostgresComponent(target).clear_leftovers(RestoreOptions(LATER))
        assert done == [
            f"put {previous} back as {name}",
            f"dropped the staging database {staging} of an earlier restore",
        ]

    assert dump_text(target) == before
    assert database(pg_server, name) == (True, None)
    assert databases_like(pg_server, name) == []


def test_clearing_leftovers_drops_stale_staging_databases_but_keeps_settled_previous_copies(
    pg_server: PostgresServer, small_backup: Backup, target: str
) -> None:
    before, name = dump_text(target), name_of(target)
    PostgresComponent(target).restore(
        opener(small_backup.stored, small_backup.stats, small_backup.parts), small_backup.facts, OPTIONS
    )
    kept = f"{name}_pre_restore_{TIMESTAMP}"
    stage(target, small_backup, RestoreOptions(EARLIER))  # then the process is gone
    current = create_database(pg_server, f"{name}_restore_{LATER}")  # this restore's own: not a leftover
    unrelated = create_database(pg_server, f"{name}_restore_of_the_guild")

    done = PostgresComponent(target).clear_leftovers(RestoreOptions(LATER))

    assert done == [f"dropped the staging database {name}_restore_{EARLIER} of an earlier restore"]
    assert sorted(databases_like(pg_server, name)) == sorted([kept, name_of(current), name_of(unrelated)])
    assert database(pg_server, kept) == (True, None)
    assert dump_text(pg_server.url(kept)) == before
    assert "public.quests" in dump_text(target)


def test_a_swap_an_earlier_restore_left_unsettled_is_settled_by_the_next_one_keeping_both_copies(
    pg_server: PostgresServer, small_backup: Backup, target: str
) -> None:
    before, name = dump_text(target), name_of(target)
    previous = f"{name}_pre_restore_{TIMESTAMP}"
    stage(target, small_backup).swap_in(OPTIONS)  # then the process is gone, and its undo never ran
    with session(target) as cur:
        cur.execute("INSERT INTO quests VALUES (51, 'written after the swap')")

    done = PostgresComponent(target).clear_leftovers(RestoreOptions(LATER))

    assert done == [f"settled the swap of an earlier restore ({TIMESTAMP}) into {name}"]
    assert database(pg_server, name) == (True, None)
    assert database(pg_server, previous) == (True, None)
    assert dump_text(pg_server.url(previous)) == before
    with session(target) as cur:
        cur.execute("SELECT title FROM quests WHERE id = 51")
        assert cur.fetchone() == ("written after the swap",)


def test_a_session_held_on_the_staging_database_does_not_stop_the_swap(
    pg_server: PostgresServer, small_backup: Backup, target: str
) -> None:
    name = name_of(target)
    staging = f"{name}_restore_{TIMESTAMP}"
    component = stage(target, small_backup)
    agent = psycopg2.connect(pg_server.url(staging))  # a monitoring agent found the new database
    with agent.cursor() as cur:
        cur.execute("SELECT 1")

    report = component.swap_in(OPTIONS)

    assert report == {"previous": f"{name}_pre_restore_{TIMESTAMP}"}
    assert "public.quests" in dump_text(target)
    with pytest.raises(psycopg2.OperationalError), agent.cursor() as cur:
        cur.execute("SELECT 1")
    agent.close()
    component.settle(OPTIONS)
    assert database(pg_server, name) == (True, None)


def test_a_swap_that_cannot_move_the_target_aside_leaves_it_open_and_as_it_was(
    pg_server: PostgresServer, small_backup: Backup, target: str
) -> None:
    before, name = dump_text(target), name_of(target)
    component = stage(target, small_backup)
    create_database(pg_server, f"{name}_pre_restore_{TIMESTAMP}")  # the name swap_in would move it to

    with pytest.raises(
        SourceError, match=f"cannot swap {name}_restore_{TIMESTAMP} in for {name}: .*already exists"
    ):
        component.swap_in(OPTIONS)

    assert database(pg_server, name) == (True, None)
    assert dump_text(target) == before
    assert component.undo(OPTIONS) == [f"dropped {name}_restore_{TIMESTAMP}"]
    assert dump_text(target) == before


def test_clearing_leftovers_of_a_target_named_like_a_previous_copy_keeps_the_other_databases_rollback_copies(
    pg_server: PostgresServer, small_backup: Backup, target: str
) -> None:
    # A drill into "{name}_pre": its staging databases are named "{name}_pre_restore_{ts}", exactly
    # like the rollback copies of "{name}".
    name = name_of(target)
    PostgresComponent(target).restore(
        opener(small_backup.stored, small_backup.stats, small_backup.parts), small_backup.facts, OPTIONS
    )
    rollback = f"{name}_pre_restore_{TIMESTAMP}"
    before = dump_text(pg_server.url(rollback))

    assert PostgresComponent(pg_server.url(f"{name}_pre")).clear_leftovers(RestoreOptions(LATER)) == []

    assert database(pg_server, rollback) == (True, None)
    assert dump_text(pg_server.url(rollback)) == before


def test_a_closed_staging_database_of_a_target_named_like_a_previous_copy_is_not_put_back_as_the_other(
    pg_server: PostgresServer, small_backup: Backup, fresh_database: str
) -> None:
    # "{db}" does not exist; a swap into "{db}_pre" failed after closing its staging database, which has
    # the name a closed previous copy of "{db}" would have.
    db = name_of(fresh_database) + "_q"
    drill = create_database(pg_server, f"{db}_pre")
    create_database(pg_server, f"{db}_pre_pre_restore_{TIMESTAMP}")  # where the swap would move it
    with pytest.raises(SourceError, match="already exists"):
        stage(drill, small_backup).swap_in(OPTIONS)
    staging = f"{db}_pre_restore_{TIMESTAMP}"
    assert database(pg_server, staging) == (False, database(pg_server, staging)[1])  # closed, marked

    assert PostgresComponent(pg_server.url(db)).clear_leftovers(RestoreOptions(LATER)) == []

    assert database(pg_server, db) is None
    assert database(pg_server, staging) is not None


def staged_as(url: str, taken: Backup, timestamp: str) -> str:
    """Stage ``taken`` for the restore into ``url`` at ``timestamp``; the staging database's name."""
    component = PostgresComponent(url)
    report = component.stage(
        opener(taken.stored, taken.stats, taken.parts), taken.facts, RestoreOptions(timestamp)
    )
    return str(report["staging"])


def test_long_targets_sharing_their_first_45_bytes_get_their_own_staging_databases_and_clear_only_their_own(
    pg_server: PostgresServer, small_backup: Backup, fresh_database: str
) -> None:
    shared = (name_of(fresh_database) + "_" + "x" * 45)[:45]
    first, second = pg_server.url(shared + "_first_guild"), pg_server.url(shared + "_second_guild")
    left_by_first = staged_as(first, small_backup, TIMESTAMP)
    left_by_second = staged_as(second, small_backup, EARLIER)

    done = PostgresComponent(first).clear_leftovers(RestoreOptions(LATER))

    assert done == [f"dropped the staging database {left_by_first} of an earlier restore"]
    assert database(pg_server, left_by_second) is not None
    at_once = [staged_as(url, small_backup, LATER) for url in (first, second)]
    assert at_once[0] != at_once[1]
    assert all(len(name.encode()) == 63 and name.startswith(shared[:30]) for name in at_once)


@pytest.mark.parametrize(
    "comment",
    [None, f"questboard-backup restore {EARLIER} staged"],  # unmarked; marked before marks named a target
    ids=["unmarked", "mark-without-target"],
)
def test_a_database_named_like_a_staging_database_but_not_marked_for_this_target_is_left_alone(
    pg_server: PostgresServer, target: str, comment: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    name = name_of(target)
    lookalike = create_database(pg_server, f"{name}_restore_{EARLIER}")
    with session(lookalike) as cur:
        cur.execute("CREATE TABLE kept (id int)")
        cur.execute(f'COMMENT ON DATABASE "{name_of(lookalike)}" IS %s', (comment,))

    assert PostgresComponent(target).clear_leftovers(RestoreOptions(LATER)) == []
    assert PostgresComponent(target).undo(RestoreOptions(EARLIER)) == []

    assert database(pg_server, name_of(lookalike)) == (True, comment)
    assert "public.kept" in dump_text(lookalike)
    warned = [record for record in caplog.records if record.getMessage().startswith("postgres restore mark")]
    assert len(warned) == (2 if comment else 0)


def test_a_target_still_marked_the_old_way_is_left_by_the_next_restore_and_given_back_by_its_undo(
    pg_server: PostgresServer, small_backup: Backup, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A swap settled by nothing since marks named their target: its comment goes with the target
    # into the previous copy, whose name it must not make look like another target's staging.
    before, name = dump_text(target), name_of(target)
    old_mark = f"questboard-backup restore {EARLIER} not settled"
    with session(pg_server.url()) as cur:
        cur.execute(f'COMMENT ON DATABASE "{name}" IS %s', (old_mark,))

    assert PostgresComponent(target).clear_leftovers(OPTIONS) == []
    stage(target, small_backup).swap_in(OPTIONS)
    undone = PostgresComponent(target).undo(OPTIONS)

    assert undone[1] == f"put {name}_pre_restore_{TIMESTAMP} back as {name}"
    assert database(pg_server, name) == (True, old_mark)
    assert dump_text(target) == before
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("postgres restore mark")] == [
        f"postgres restore mark without target left database={name} comment={old_mark}"
    ]
