"""The phased parallel restore keeps the archive's order where it matters and splits only what may run at once."""

from __future__ import annotations

from questboard_backup.sources.postgres_restore import entry_kind, plan_phases

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


def test_phases_follow_the_archive_order_and_split_data_and_indexes() -> None:
    before, data, indexes, rest = plan_phases(TOC, 2, ROWS)
    assert before == [
        [line for line in TOC if line.startswith(("215;", "216;", "217;", "218;", "3390;", "3391;"))]
    ]
    # The biggest table alone on one process; everything else, in archive order, on the other.
    assert sorted(data, key=len) == [
        ["3401; 0 16400 TABLE DATA public quests postgres"],
        [
            "3400; 0 16386 TABLE DATA public users postgres",
            "3402; 0 16410 TABLE DATA rewards ledger postgres",
            "3403; 0 0 BLOBS - BLOBS",
            "3404; 0 0 SEQUENCE SET public users_id_seq postgres",
        ],
    ]
    assert sorted(line for group in indexes for line in group) == [
        line for line in TOC if line.startswith(("3410;", "3411;", "3412;"))
    ]
    assert len(indexes) == 2
    # Foreign keys wait for every index and key; ACLs come last, in order.
    assert rest == [[line for line in TOC if line.startswith(("3413;", "3414;"))]]


def test_one_job_keeps_a_single_process_per_phase() -> None:
    assert all(len(phase) == 1 for phase in plan_phases(TOC, 1, ROWS))


def test_an_archive_without_data_is_one_phase() -> None:
    schema_only = [
        line for line in TOC if "DATA" not in line and "BLOBS" not in line and "SEQUENCE SET" not in line
    ]
    (phase,) = plan_phases(schema_only, 2, ROWS)
    assert phase == [[line for line in schema_only if line[:1].isdigit()]]
