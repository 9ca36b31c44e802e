"""The phased parallel restore keeps the archive's order where it matters and splits only what may run at once."""

from __future__ import annotations

import pytest

from questboard_backup.errors import IntegrityError
from questboard_backup.sources.postgres.restore import Run, _Schedule, entry_kind, plan_restore

TOC = """;
; Archive created at 2026-11-29 05:00:00 UTC
;
215; 1259 16386 TABLE public users postgres
216; 1259 16390 SEQUENCE public users_id_seq postgres
217; 1259 16400 TABLE public quests postgres
218; 1259 16410 TABLE rewards ledger postgres
3390; 0 0 COMMENT - EXTENSION citext
3391; 2613 16500 BLOB - 16500 postgres
3400; 0 16386 TABLE DATA public users postgres
3401; 0 16400 TABLE DATA public quests postgres
3402; 0 16410 TABLE DATA rewards ledger postgres
3403; 0 0 BLOBS - BLOBS
3404; 0 0 SEQUENCE SET public users_id_seq postgres
3410; 2606 16420 CONSTRAINT public users users_pkey postgres
3411; 2606 16421 CONSTRAINT public quests quests_pkey postgres
3412; 1259 16422 INDEX public submissions_by_quest postgres
3413; 2606 16423 FK CONSTRAINT public quests quests_posted_by_fkey postgres
3414; 0 0 ACL - SCHEMA public postgres
""".splitlines()

ROWS = {"public.users": 40, "public.quests": 25_000, "rewards.ledger": 60}


def test_entry_kinds_are_read_from_the_listing() -> None:
    assert entry_kind("3400; 0 16386 TABLE DATA public users postgres") == "TABLE DATA"
    assert (
        entry_kind("3413; 2606 16423 FK CONSTRAINT public quests quests_posted_by_fkey postgres")
        == "FK CONSTRAINT"
    )
    assert entry_kind("3410; 2606 16420 CONSTRAINT public users users_pkey postgres") == "CONSTRAINT"
    assert entry_kind("; a comment") == ""


def test_the_plan_follows_the_archive_order_and_splits_the_data() -> None:
    plan = plan_restore([TOC], 2, ROWS)
    assert plan.before == [
        line for line in TOC if line.startswith(("215;", "216;", "217;", "218;", "3390;", "3391;"))
    ]
    # The biggest table alone on one process; everything else, in archive order, on the other; the
    # first data run reads the stream to its sealed end.
    assert sorted(plan.data, key=lambda run: len(run.entries)) == [
        Run(0, ["3401; 0 16400 TABLE DATA public quests postgres"], True),
        Run(
            0,
            [
                "3400; 0 16386 TABLE DATA public users postgres",
                "3402; 0 16410 TABLE DATA rewards ledger postgres",
                "3403; 0 0 BLOBS - BLOBS",
                "3404; 0 0 SEQUENCE SET public users_id_seq postgres",
            ],
            False,
        ),
    ]
    assert plan.post == [line for line in TOC if line.startswith(("3410;", "3411;", "3412;"))]
    # Foreign keys wait for every index and key; ACLs come last, in order.
    assert plan.rest == [line for line in TOC if line.startswith(("3413;", "3414;"))]


def test_further_parts_get_a_process_each_and_only_their_table_data() -> None:
    part = [
        ";",
        "5000; 0 16400 TABLE DATA public quests postgres",
        "5001; 0 0 SEQUENCE SET public quests_id_seq postgres",
    ]
    main = [line for line in TOC if "TABLE DATA public quests" not in line]
    plan = plan_restore([main, part], 2, ROWS)
    assert plan.data == [
        Run(0, [line for line in main if line.startswith(("3400;", "3402;", "3403;", "3404;"))], True),
        Run(1, ["5000; 0 16400 TABLE DATA public quests postgres"], True),
    ]


def test_copy_parts_follow_the_archive_parts_and_report_their_own_rows() -> None:
    main = [line for line in POST_TOC if "TABLE DATA public quests" not in line]
    copy_parts = [[["public.quests", "public", "quests"]]]
    plan = plan_restore([main], 2, POST_ROWS, FOREIGN_KEYS, copy_parts)
    copy = Run(
        1,
        ["0; 0 0 TABLE DATA public quests -"],
        True,
        kind="copy",
        tables=(("public.quests", "public", "quests"),),
    )
    assert plan.data == [Run(0, [POST_TOC[0]], True), copy]
    steps = _Schedule(plan, POST_ROWS, INDEXES, FOREIGN_KEYS)
    users_data, quests_copy = steps.next(), steps.next()
    assert quests_copy == copy
    steps.done(quests_copy)  # type: ignore[arg-type]
    steps.done(users_data)  # type: ignore[arg-type]
    started: list[Run] = []
    while not steps.finished:
        run = steps.next()
        assert run is not None
        started.append(run)
        steps.done(run)
    # The copied table's indexes and keys follow its rows as any table's; its rows are not counted again.
    assert [names(run) for run in started if run.kind == "count"] == [["users"]]
    assert ["quests_pkey"] in [names(run) for run in started]


def test_a_copy_part_listed_unreadably_is_refused() -> None:
    with pytest.raises(IntegrityError, match="copy part"):
        plan_restore([TOC], 2, ROWS, copy_parts=[[["public.quests", "public"]]])


def test_one_job_keeps_one_data_process() -> None:
    assert len(plan_restore([TOC], 1, ROWS).data) == 1


def test_an_archive_without_data_is_restored_first_and_still_read_to_its_end() -> None:
    schema_only = [
        line for line in TOC if "DATA" not in line and "BLOBS" not in line and "SEQUENCE SET" not in line
    ]
    plan = plan_restore([schema_only], 2, ROWS)
    assert plan.before == [line for line in schema_only if line[:1].isdigit()]
    assert plan.data == [Run(0, [], True)] and plan.post == [] and plan.rest == []


def test_a_part_with_data_behind_a_main_archive_without_is_refused() -> None:
    schema_only = [line for line in TOC if "DATA" not in line and "BLOBS" not in line and "SET" not in line]
    with pytest.raises(IntegrityError, match="no data but further parts do"):
        plan_restore([schema_only, ["1; 0 1 TABLE DATA public quests postgres"]], 2, ROWS)


POST_TOC = """3400; 0 1 TABLE DATA public users postgres
3401; 0 2 TABLE DATA public quests postgres
3410; 2606 3 CONSTRAINT public users users_pkey postgres
3411; 2606 4 CONSTRAINT public quests quests_pkey postgres
3412; 1259 5 INDEX public quests_by_reward postgres
3413; 1259 6 INDEX public quests_by_due postgres
3414; 1259 7 INDEX public orphan_index postgres
3415; 2606 8 FK CONSTRAINT public quests quests_posted_by_fkey postgres
3416; 2606 9 FK CONSTRAINT public quests quests_other_fkey postgres
3417; 0 0 ACL - SCHEMA public postgres""".splitlines()
INDEXES = {
    "public.quests_by_reward": "public.quests",
    "public.quests_by_due": "public.quests",
    "public.users_pkey": "public.users",  # a key's index is named like the key
    "public.quests_pkey": "public.quests",
}
FOREIGN_KEYS = {"public quests quests_posted_by_fkey": ["public.quests", "public.users"]}
POST_ROWS = {"public.users": 10, "public.quests": 900_000}


def schedule(jobs: int = 2) -> _Schedule:
    plan = plan_restore([POST_TOC], jobs, POST_ROWS, FOREIGN_KEYS)
    return _Schedule(plan, POST_ROWS, INDEXES, FOREIGN_KEYS)


def names(run: Run | None) -> list[str]:
    assert run is not None
    return [line.split(" ")[-2] for line in run.entries]


def test_only_foreign_keys_the_facts_name_are_scheduled_early_the_rest_keep_the_archive_order() -> None:
    plan = plan_restore([POST_TOC], 2, POST_ROWS, FOREIGN_KEYS)
    assert [line.split(" ")[-2] for line in plan.post] == [
        "users_pkey",
        "quests_pkey",
        "quests_by_reward",
        "quests_by_due",
        "orphan_index",
        "quests_posted_by_fkey",
    ]
    assert plan.rest == POST_TOC[-2:]


def test_a_foreign_key_to_a_table_without_rows_here_keeps_its_place_at_the_end() -> None:
    # e.g. a table the listing names differently from the facts (a name with spaces), or a partitioned
    # parent: its keys are not scheduled here, so the foreign key must wait for everything.
    foreign_keys = {"public quests quests_posted_by_fkey": ["public.quests", "public.events"]}
    plan = plan_restore([POST_TOC], 2, POST_ROWS, foreign_keys)
    fk = next(line for line in POST_TOC if "quests_posted_by_fkey" in line)
    assert fk not in plan.post and plan.rest == [fk, *POST_TOC[-2:]]


def test_steps_start_as_soon_as_their_tables_are_in_while_other_tables_still_load() -> None:
    plan = schedule()
    quests_data, users_data = plan.next(), plan.next()
    assert names(quests_data) == ["quests"] and names(users_data) == ["users"]
    assert plan.next() is None  # nothing of the post-data part may start before its table's rows
    plan.done(users_data)  # type: ignore[arg-type]
    # The users key starts at once; the row count waits for it (ADD CONSTRAINT locks the table
    # exclusively); the foreign key from quests waits for the quests rows, the unknown index for all.
    users_key = plan.next()
    assert names(users_key) == ["users_pkey"] and users_key.kind == "post"  # type: ignore[union-attr]
    assert plan.next() is None
    plan.done(users_key)  # type: ignore[arg-type]
    users_count = plan.next()
    assert users_count is not None and users_count.kind == "count" and names(users_count) == ["users"]
    plan.done(users_count)
    assert plan.next() is None
    plan.done(quests_data)  # type: ignore[arg-type]
    # Every table's rows are in: the unknown index goes now, and of the large table's steps the heaviest
    # (ties: the order they were listed), one per process. The key locks quests exclusively.
    orphan, key = plan.next(), plan.next()
    assert names(orphan) == ["orphan_index"] and names(key) == ["quests_pkey"]
    plan.done(orphan)  # type: ignore[arg-type]
    assert plan.next() is None
    plan.done(key)  # type: ignore[arg-type]
    # CREATE INDEX only shares the table: both builds run at once.
    assert [names(plan.next()), names(plan.next())] == [["quests_by_reward"], ["quests_by_due"]]


def simulate(plan: _Schedule, jobs: int) -> list[list[Run]]:
    """Runs the schedule, finishing the oldest running step whenever it stalls; returns what ran at
    once at every start."""
    running: list[Run] = []
    moments = []
    while not (plan.finished and not running):
        while len(running) < jobs and (run := plan.next()) is not None:
            running.append(run)
            moments.append(list(running))
        assert running, "the schedule stalled with nothing running"
        plan.done(running.pop(0))
    return moments


LOCKS = {"INDEX": "Share", "CONSTRAINT": "AccessExclusive", "FK CONSTRAINT": "ShareRowExclusive"}
CONFLICTING = {
    frozenset({"AccessExclusive"}),
    frozenset({"AccessExclusive", "Share"}),
    frozenset({"AccessExclusive", "AccessShare"}),
    frozenset({"AccessExclusive", "ShareRowExclusive"}),
    frozenset({"ShareRowExclusive"}),
    frozenset({"ShareRowExclusive", "Share"}),
}


def locks_of(run: Run) -> list[tuple[str, str]]:
    taken = []
    for line in run.entries:
        parts = line.split(" ")
        if run.kind == "count":
            taken.append((f"{parts[-3]}.{parts[-2]}", "AccessShare"))
        elif run.kind == "post":
            kind = entry_kind(line)
            if kind == "FK CONSTRAINT":
                taken += [(table, LOCKS[kind]) for table in FOREIGN_KEYS.get(" ".join(parts[-4:-1]), [])]
            elif kind == "CONSTRAINT":
                taken.append((f"{parts[-4]}.{parts[-3]}", LOCKS[kind]))
            elif line.split(" ")[-2] in ("quests_by_reward", "quests_by_due"):
                taken.append(("public.quests", LOCKS[kind]))
    return taken


def test_no_two_steps_that_would_wait_for_each_others_locks_ever_run_at_once() -> None:
    for jobs in (1, 2, 4, 8):
        moments = simulate(schedule(jobs), jobs)
        for moment in moments:
            held = [(table, mode, id(run)) for run in moment for table, mode in locks_of(run)]
            for table, mode, owner in held:
                for other_table, other_mode, other_owner in held:
                    if owner != other_owner and table == other_table:
                        assert frozenset({mode, other_mode}) not in CONFLICTING, (jobs, moment)
        ran = [line for moment in moments for line in moment[-1].entries if moment[-1].kind == "post"]
        assert sorted(ran) == sorted(POST_TOC[2:8])  # each post step exactly once
        counted = [name for moment in moments for name in names(moment[-1]) if moment[-1].kind == "count"]
        assert sorted(counted) == ["quests", "users"]


def test_a_foreign_key_waits_for_the_referenced_key() -> None:
    for jobs in (2, 8):
        moments = simulate(schedule(jobs), jobs)
        started = [names(moment[-1]) for moment in moments]
        assert started.index(["quests_posted_by_fkey"]) > started.index(["users_pkey"])


def test_a_foreign_key_waits_for_every_index_of_unknown_table() -> None:
    # The referenced table's unique index is not in the facts (say the table is not among the largest):
    # it may be the one the foreign key needs, so the key must not start before it has been built.
    toc = """10; 0 1 TABLE DATA public a o
11; 0 2 TABLE DATA public b o
20; 2606 5 CONSTRAINT public a a_pkey o
21; 1259 6 INDEX public b_uq o
22; 2606 7 FK CONSTRAINT public a a_b_fkey o""".splitlines()
    rows = {"public.a": 10**6, "public.b": 10}
    foreign_keys = {"public a a_b_fkey": ["public.a", "public.b"]}
    indexes = {"public.a_pkey": "public.a"}
    plan = _Schedule(plan_restore([toc], 4, rows, foreign_keys), rows, indexes, foreign_keys)
    for moment in simulate(plan, 4):
        running = [line for run in moment for line in run.entries if run.kind == "post"]
        assert not ("21; 1259 6 INDEX public b_uq o" in running and toc[-1] in running)
    plan = _Schedule(plan_restore([toc], 4, rows, foreign_keys), rows, indexes, foreign_keys)
    started = [names(moment[-1]) for moment in simulate(plan, 4)]
    assert started.index(["a_b_fkey"]) > started.index(["b_uq"])


def test_steps_on_tables_whose_names_cannot_be_read_off_the_listing_wait_for_all_rows() -> None:
    toc = """10; 0 1 TABLE DATA public big o
11; 0 2 TABLE DATA Guild Hall Quest.Log o
12; 0 3 TABLE DATA a b.c o
13; 0 4 TABLE DATA a.b c o
20; 2606 5 CONSTRAINT public big big_pkey o
21; 2606 6 CONSTRAINT public big big_not_negative o
22; 2606 7 CONSTRAINT Guild Hall Quest.Log Quest.Log_pkey o""".splitlines()
    rows = {"public.big": 10**6}
    indexes = {"public.big_pkey": "public.big", "Guild Hall.Quest.Log_pkey": "Guild Hall.Quest.Log"}
    plan = _Schedule(plan_restore([toc], 2, rows), rows, indexes, {})
    big_data, other_data = plan.next(), plan.next()
    assert names(big_data) == ["big"] and len(other_data.entries) == 3  # type: ignore[union-attr]
    plan.done(big_data)  # type: ignore[arg-type]
    # While the other rows still load, only the key of public.big (its index is known) may go: the
    # CHECK constraint could reach inheriting tables, "Guild Hall" has a space, and "a"."b.c" and
    # "a.b"."c" read alike. The row count of public.big waits for the key's exclusive lock.
    key = plan.next()
    assert names(key) == ["big_pkey"] and plan.next() is None
    plan.done(key)  # type: ignore[arg-type]
    count = plan.next()
    assert count is not None and count.kind == "count" and names(count) == ["big"]
    assert plan.next() is None
    plan.done(count)
    plan.done(other_data)  # type: ignore[arg-type]
    # All rows are in: the rest goes together, and nothing is counted for the unreadable names (the
    # final check counts those tables).
    rest = plan.next()
    assert rest is not None and sorted(names(rest)) == ["Quest.Log_pkey", "big_not_negative"]
    plan.done(rest)
    assert plan.next() is None and plan.finished
