"""A Redis restore against real servers, step by step: in place or shifted to a named target, staged in
spare dbs, swapped in with SWAPDB (or copied where it is refused), undone from another process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

import pytest
import redis

from questboard_backup.errors import RestoreVerificationError, SourceError, SourceUnreachableError
from questboard_backup.pipeline import StreamStats
from questboard_backup.sources.base import RestoreOptions
from questboard_backup.sources.redis import RedisComponent
from questboard_backup.sources.redis.spares import MARKER
from tests.integration.conftest import Deployment
from tests.integration.test_cli import cli, full_backup
from tests.integration.test_redis_component import (
    Snapshot,
    assert_copied,
    backup,
    crc64,
    encode,
    load_dataset,
    opener,
    seal,
    snapshot,
)
from tests.redis_fault_proxy import RedisFaultProxy
from tests.servers import RedisServer

OPTIONS = RestoreOptions("20240101_020000")
EARLIER = RestoreOptions("20231231_020000")


def markers(port: int, dbs: range = range(16)) -> dict[int, dict[str, object]]:
    found = {db: redis.Redis(port=port, db=db).get(MARKER) for db in dbs}
    return {db: json.loads(raw) for db, raw in found.items() if raw is not None}


def assert_unchanged(before: Snapshot, port: int) -> None:
    """Every db holds what it held (TTLs moved on)."""
    assert_copied(before, port, {db: db for db in before})


def app_on_db_2(port: int) -> None:
    client = redis.Redis(port=port, db=2)
    client.mset({f"quest:{n}".encode(): f"v{n}".encode() for n in range(10)})
    client.set(b"session", b"s", ex=3600)


def backed_up_then_changed(server: RedisServer) -> tuple[dict[str, Any], bytes, StreamStats, Snapshot]:
    """The dataset backed up from db 0's URL, then a key written: the state a restore must undo to."""
    load_dataset(server.port)
    facts, stored, stats = backup(RedisComponent(server.url(0)))
    redis.Redis(port=server.port, db=0).set(b"written-after-the-backup", b"1")
    return facts, stored, stats, snapshot(server.port)


def test_an_in_place_restore_puts_each_db_back_where_it_came_from(fresh_redis_dbs: RedisServer) -> None:
    port = fresh_redis_dbs.port
    app_on_db_2(port)
    before = snapshot(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(2)))
    redis.Redis(port=port, db=2).flushdb()

    report = RedisComponent(fresh_redis_dbs.url(2)).restore(opener(stored, stats), facts, OPTIONS)

    assert report["dbs"] == {"2": {"to": 2, "keys": 11}} and report["placement"] == "2->2"
    assert_copied(before, port, {2: 2})  # db 4 (2 + 2) and the spare dbs are empty


def test_a_named_target_shifts_each_db_by_the_db_in_its_url(fresh_redis_dbs: RedisServer) -> None:
    port = fresh_redis_dbs.port
    app_on_db_2(port)
    before = snapshot(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(2)))

    report = RedisComponent(fresh_redis_dbs.url(5), shift_dbs=True).restore(
        opener(stored, stats), facts, OPTIONS
    )

    assert report["dbs"] == {"2": {"to": 7, "keys": 11}} and report["placement"] == "2->7"
    assert_copied({**before, 7: before[2]}, port, {2: 2, 7: 7})


def test_a_staged_restore_undone_by_another_process_leaves_the_target_and_no_spare(
    fresh_redis_dbs: RedisServer,
) -> None:
    port = fresh_redis_dbs.port
    facts, stored, stats, before = backed_up_then_changed(fresh_redis_dbs)

    report = RedisComponent(fresh_redis_dbs.url(0)).stage(opener(stored, stats), facts, OPTIONS)

    assert report["keys"] == facts["keys"]
    staged = markers(port)
    assert {(db, m["target"]) for db, m in staged.items()} == {(15, 0), (14, 3)}
    assert all(m["timestamp"] == OPTIONS.timestamp and m["spare"] == db for db, m in staged.items())
    lines = RedisComponent(fresh_redis_dbs.url(0)).undo(OPTIONS)
    assert len(lines) == 2 and all("flushed" in line for line in lines)
    assert_unchanged(before, port)
    assert RedisComponent(fresh_redis_dbs.url(0)).undo(OPTIONS) == []  # idempotent


def test_a_swapped_in_restore_undone_by_another_process_gives_back_the_original_exactly(
    fresh_redis_dbs: RedisServer,
) -> None:
    port = fresh_redis_dbs.port
    load_dataset(port)
    backed_up = snapshot(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    redis.Redis(port=port, db=0).set(b"written-after-the-backup", b"1")
    redis.Redis(port=port, db=3).flushdb()
    redis.Redis(port=port, db=3).set(b"only-in-the-target", b"1")
    before = snapshot(port)
    first = RedisComponent(fresh_redis_dbs.url(0))
    first.stage(opener(stored, stats), facts, OPTIONS)

    assert first.swap_in(OPTIONS) == {"swap": "SWAPDB"}
    # Swapped in, not settled: the targets hold the backup and the marker, the spares the old data.
    assert redis.Redis(port=port, db=0).get(b"written-after-the-backup") is None
    # The spares hold the previous data and the marker that says so.
    assert {db: (m["spare"], m["previous"]) for db, m in markers(port).items()} == {
        0: (15, False),
        3: (14, False),
        15: (15, True),
        14: (14, True),
    }
    assert set(backed_up[3]) | {MARKER} == set(redis.Redis(port=port, db=3).keys())

    lines = RedisComponent(fresh_redis_dbs.url(0)).undo(OPTIONS)

    assert sum("swapped back" in line for line in lines) == 2
    assert_unchanged(before, port)


def test_a_swap_killed_between_two_dbs_is_undone_for_both(fresh_redis_dbs: RedisServer) -> None:
    port = fresh_redis_dbs.port
    load_dataset(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    redis.Redis(port=port, db=3).set(b"written-after-the-backup", b"3")
    before = snapshot(port)
    RedisComponent(fresh_redis_dbs.url(0)).stage(opener(stored, stats), facts, OPTIONS)
    # What a swap_in killed after its first SWAPDB leaves: db 3 swapped in, db 0 still staged.
    staged = markers(port)
    spare = next(db for db, marker in staged.items() if marker["target"] == 3)
    redis.Redis(port=port).swapdb(3, spare)

    lines = RedisComponent(fresh_redis_dbs.url(0)).undo(OPTIONS)

    assert sorted(lines) == sorted(
        [
            f"redis db 3: swapped back the data restore {OPTIONS.timestamp} replaced",
            f"redis db {spare}: flushed restore {OPTIONS.timestamp}'s staging of db 3",
            f"redis db 15: flushed restore {OPTIONS.timestamp}'s staging of db 0",
        ]
    )
    assert_unchanged(before, port)


def test_a_stage_that_fails_midway_leaves_the_target_and_no_spare(
    fresh_redis_dbs: RedisServer, fresh_managed_redis: RedisServer
) -> None:
    source = redis.Redis(port=fresh_redis_dbs.port, db=0)
    source.mset({f"k{n}".encode(): b"v" for n in range(5)})
    good = [(key, -1, cast(bytes, source.dump(key))) for key in sorted(cast("list[bytes]", source.keys()))]
    target = redis.Redis(port=fresh_managed_redis.port, db=0)
    target.set(b"the-target's-own", b"1")
    before = snapshot(fresh_managed_redis.port)
    # Db 0 stages, then db 3's payload is refused (a Redis of a later RDB version wrote it).
    body = bytearray(good[0][2][:-8])
    body[-2] += 1
    newer = bytes(body) + crc64(bytes(body)).to_bytes(8, "little")
    stored, stats = seal(encode({0: good, 3: [(b"new", -1, newer)]}))
    facts = {"version": "99.0.0", "dbs": {"0": 5, "3": 1}, "keys": 6}

    with pytest.raises(SourceError, match=r"refused a key dumped by Redis 99\.0\.0"):
        RedisComponent(fresh_managed_redis.url(0)).stage(opener(stored, stats), facts, OPTIONS)

    assert_unchanged(before, fresh_managed_redis.port)


def test_a_stage_whose_counts_do_not_match_the_facts_touches_nothing(fresh_redis_dbs: RedisServer) -> None:
    port = fresh_redis_dbs.port
    load_dataset(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    before = snapshot(port)

    with pytest.raises(RestoreVerificationError):
        RedisComponent(fresh_redis_dbs.url(0)).stage(
            opener(stored, stats), {**facts, "dbs": {**facts["dbs"], "0": 1}}, OPTIONS
        )

    assert_unchanged(before, port)


def test_a_restore_needs_as_many_empty_dbs_as_the_backup_has_and_says_so(
    fresh_redis_dbs: RedisServer,
) -> None:
    port = fresh_redis_dbs.port
    for db in range(10):
        redis.Redis(port=port, db=db).set(b"k", str(db).encode())
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    before = snapshot(port)

    with pytest.raises(SourceError, match=r"restore of 10 Redis dbs .* and 6 of its 16 are"):
        RedisComponent(fresh_redis_dbs.url(0)).restore(opener(stored, stats), facts, OPTIONS)

    assert_unchanged(before, port)


def test_clear_leftovers_settles_an_earlier_unsettled_swap_forwards_keeping_what_was_written_since(
    fresh_redis_dbs: RedisServer,
) -> None:
    """An earlier restore swapped in and never settled (its settle failed and was only logged, or the
    CLI was killed): the application has written into the restored dbs since. Swapping back would roll
    production back to before that restore and flush what was written since."""
    port = fresh_redis_dbs.port
    load_dataset(port)
    backed_up = snapshot(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    redis.Redis(port=port, db=0).set(b"replaced-by-the-earlier-restore", b"1")
    earlier = RedisComponent(fresh_redis_dbs.url(0))
    earlier.stage(opener(stored, stats), facts, EARLIER)
    earlier.swap_in(EARLIER)
    redis.Redis(port=port, db=0).set(b"written-since", b"live")
    live = snapshot(port, [0, 3])

    lines = RedisComponent(fresh_redis_dbs.url(0)).clear_leftovers(OPTIONS)

    assert lines == [
        f"redis db 0: kept what restore {EARLIER.timestamp} swapped in, db 15 (its previous data) flushed",
        f"redis db 3: kept what restore {EARLIER.timestamp} swapped in, db 14 (its previous data) flushed",
    ]
    assert markers(port) == {}
    assert redis.Redis(port=port, db=0).get(b"written-since") == b"live"
    assert_copied({0: {k: v for k, v in live[0].items() if k != MARKER}, 3: backed_up[3]}, port, {0: 0, 3: 3})
    assert RedisComponent(fresh_redis_dbs.url(0)).clear_leftovers(OPTIONS) == []


def test_clear_leftovers_settles_a_swap_killed_midway_forwards_and_flushes_the_staging_never_swapped(
    fresh_redis_dbs: RedisServer,
) -> None:
    """The network went down for good just after the earlier restore's first SWAPDB (its reply lost,
    then every connection refused, so the swap back failed too): db 0 is swapped in, db 3 still staged."""
    port = fresh_redis_dbs.port
    facts, stored, stats, _ = backed_up_then_changed(fresh_redis_dbs)
    redis.Redis(port=port, db=3).set(b"written-after-the-backup", b"3")
    before = snapshot(port)
    RedisComponent(fresh_redis_dbs.url(0)).stage(opener(stored, stats), facts, EARLIER)
    staged = snapshot(port)
    with RedisFaultProxy(port) as proxy:
        proxy.drop_reply(b"SWAPDB", then_cut=True)
        with pytest.raises(SourceUnreachableError):
            RedisComponent(proxy.url(0)).swap_in(EARLIER)
    assert proxy.dropped == [b"SWAPDB"]

    lines = RedisComponent(fresh_redis_dbs.url(0)).clear_leftovers(OPTIONS)

    assert lines == [
        f"redis db 0: kept what restore {EARLIER.timestamp} swapped in, db 15 (its previous data) flushed",
        f"redis db 14: flushed restore {EARLIER.timestamp}'s staging of db 3",
    ]
    assert markers(port) == {}
    staged_db_0 = {key: value for key, value in staged[15].items() if key != MARKER}
    assert_copied({0: staged_db_0, 3: before[3]}, port, {0: 0, 3: 3})


def test_clear_leftovers_of_a_shifted_drill_and_of_production_leave_each_others_restores_alone(
    fresh_redis_dbs: RedisServer,
) -> None:
    port = fresh_redis_dbs.port
    load_dataset(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    production = RedisComponent(fresh_redis_dbs.url(0))
    drill = RedisComponent(fresh_redis_dbs.url(5), shift_dbs=True)
    production.stage(opener(stored, stats), facts, EARLIER)
    production.swap_in(EARLIER)  # not settled yet: that restore is still running
    swapped = snapshot(port)

    assert drill.clear_leftovers(OPTIONS) == []
    assert_unchanged(swapped, port)

    production.settle(EARLIER)
    drill.stage(opener(stored, stats), facts, EARLIER)  # a drill killed after staging dbs 5 and 8
    staged = snapshot(port)

    assert production.clear_leftovers(OPTIONS) == []
    assert_unchanged(staged, port)


def test_clear_leftovers_and_undo_leave_another_restores_staging_alone(fresh_redis_dbs: RedisServer) -> None:
    port = fresh_redis_dbs.port
    load_dataset(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    RedisComponent(fresh_redis_dbs.url(0)).stage(opener(stored, stats), facts, OPTIONS)
    staged = snapshot(port)

    assert RedisComponent(fresh_redis_dbs.url(0)).clear_leftovers(OPTIONS) == []
    assert RedisComponent(fresh_redis_dbs.url(0)).undo(EARLIER) == []
    assert_unchanged(staged, port)


def test_a_restore_settles_without_markers_or_spare_data_left(fresh_redis_dbs: RedisServer) -> None:
    port = fresh_redis_dbs.port
    load_dataset(port)
    before = snapshot(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    redis.Redis(port=port, db=0).set(b"written-after-the-backup", b"1")

    RedisComponent(fresh_redis_dbs.url(0)).restore(opener(stored, stats), facts, OPTIONS)

    assert markers(port) == {}
    assert_copied(before, port, {0: 0, 3: 3})


def test_a_settle_killed_midway_is_finished_forwards_never_swapped_back(fresh_redis_dbs: RedisServer) -> None:
    port = fresh_redis_dbs.port
    load_dataset(port)
    backed_up = snapshot(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    redis.Redis(port=port, db=3).set(b"written-after-the-backup", b"3")
    changed = snapshot(port)
    component = RedisComponent(fresh_redis_dbs.url(0))
    component.stage(opener(stored, stats), facts, OPTIONS)
    component.swap_in(OPTIONS)
    # What a settle killed after flushing db 0's spare leaves: db 0 marked settling, its spare empty.
    marker = markers(port)[0]
    redis.Redis(port=port, db=0).set(MARKER, json.dumps({**marker, "settling": True}))
    redis.Redis(port=port, db=15).flushdb()

    lines = RedisComponent(fresh_redis_dbs.url(0)).undo(OPTIONS)

    assert lines[0] == f"redis db 0: kept what restore {OPTIONS.timestamp} swapped in, db 15 empty"
    assert lines[1] == f"redis db 3: swapped back the data restore {OPTIONS.timestamp} replaced"
    assert markers(port) == {}
    after = snapshot(port)
    assert set(after) == {0, 3}
    assert set(after[0]) == set(backed_up[0]) and set(after[3]) == set(changed[3])


def test_a_backup_taken_during_a_restore_leaves_out_the_marker(fresh_redis_dbs: RedisServer) -> None:
    port = fresh_redis_dbs.port
    app_on_db_2(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(2)))
    component = RedisComponent(fresh_redis_dbs.url(2))
    component.stage(opener(stored, stats), facts, OPTIONS)
    component.swap_in(OPTIONS)
    assert redis.Redis(port=port, db=2).exists(MARKER)

    during, _, _ = backup(RedisComponent(fresh_redis_dbs.url(2)))

    assert during["dbs"]["2"] == facts["dbs"]["2"]


def test_the_cli_restores_in_place_into_the_same_dbs_and_a_named_target_shifted_saying_where(
    deployment: Deployment,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = redis_server.port
    monkeypatch.setenv("REDIS_URL", f"{deployment.redis_base}/2")
    app_on_db_2(port)
    before = snapshot(port)
    assert set(before) == {0, 1, 2}
    backup_id = str(full_backup(capsys)["backup_id"])
    redis.Redis(port=port, db=2).flushdb()

    code, out, err = cli(capsys, "restore", backup_id, "--only", "redis")

    assert code == 0, err
    assert "placement=0->0 1->1 2->2" in out
    assert_unchanged(before, port)  # db 4 (2 + 2) empty

    code, out, err = cli(
        capsys,
        "restore",
        backup_id,
        "--only",
        "redis",
        "--to-redis-url",
        f"{deployment.redis_base}/5",
        "--json",
    )

    assert code == 0, err
    placed = json.loads(out)["components"]["redis"]["dbs"]
    assert {source: db["to"] for source, db in placed.items()} == {"0": 5, "1": 6, "2": 7}
    assert_copied(
        {**before, 5: before[0], 6: before[1], 7: before[2]}, port, {n: n for n in (0, 1, 2, 5, 6, 7)}
    )


def test_a_swap_that_fails_on_the_second_db_swaps_the_first_back(
    fresh_redis_dbs: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = fresh_redis_dbs.port
    load_dataset(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    redis.Redis(port=port, db=0).set(b"written-after-the-backup", b"0")
    redis.Redis(port=port, db=3).set(b"written-after-the-backup", b"3")
    before = snapshot(port)
    swapdb = redis.Redis.swapdb
    calls: list[tuple[int, int]] = []

    def second_swap_refused(self: redis.Redis, first: int, second: int, **kwargs: Any) -> Any:
        calls.append((first, second))
        if len(calls) == 2:
            raise redis.ResponseError("ERR the second swap failed")
        return swapdb(self, first, second, **kwargs)

    monkeypatch.setattr(redis.Redis, "swapdb", second_swap_refused)

    with pytest.raises(SourceError, match="the second swap failed"):
        RedisComponent(fresh_redis_dbs.url(0)).restore(opener(stored, stats), facts, OPTIONS)

    assert calls == [(0, 15), (3, 14), (0, 15)]
    assert_unchanged(before, port)


def test_the_restore_lambdas_restore_in_place_unless_the_workflow_names_a_redis_db(
    fresh_redis_dbs: RedisServer,
) -> None:
    from lambdas.dependencies import Dependencies, FunctionSettings

    port = fresh_redis_dbs.port
    app_on_db_2(port)
    before = snapshot(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(2)))
    secrets = {"arn:redis": json.dumps({"url": fresh_redis_dbs.url(2)})}
    settings = FunctionSettings(s3_bucket="b", hostname="h", kms_key_id="k", redis_secret_arn="arn:redis")
    deps = Dependencies(settings, clients=lambda name: None, secrets=secrets.__getitem__)
    in_place, elsewhere = deps.restore_target("redis"), deps.restore_target("redis", redis_db=5)
    assert in_place is not None and elsewhere is not None
    redis.Redis(port=port, db=2).flushdb()

    assert in_place.restore(opener(stored, stats), facts, OPTIONS)["placement"] == "2->2"
    assert elsewhere.restore(opener(stored, stats), facts, EARLIER)["placement"] == "2->7"

    assert_copied({**before, 7: before[2]}, port, {2: 2, 7: 7})


def test_a_swapdb_whose_reply_is_lost_is_not_sent_again_and_the_restore_goes_on_from_where_the_marker_is(
    fresh_redis_dbs: RedisServer,
) -> None:
    """SWAPDB is not idempotent: redis-py, retrying a command whose connection broke after the server
    ran it, would swap the db back, and the restore would report success with the old data in place.
    A proxy in front of the real server lets Redis run the first SWAPDB and then closes the connection
    instead of passing the reply on (what a network cut or failover between request and reply does),
    so the engine's real client, retries and all, meets that very failure."""
    port = fresh_redis_dbs.port
    load_dataset(port)
    backed_up = snapshot(port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    redis.Redis(port=port, db=0).set(b"written-after-the-backup", b"1")

    with RedisFaultProxy(port) as proxy:
        proxy.drop_reply(b"SWAPDB")
        report = RedisComponent(proxy.url(0)).restore(opener(stored, stats), facts, OPTIONS)

    assert proxy.dropped == [b"SWAPDB"]
    assert report["swap"] == "SWAPDB"
    assert markers(port) == {}
    assert_copied(backed_up, port, {0: 0, 3: 3})


def test_settle_keeps_a_staging_that_was_never_swapped_in_and_says_so(
    fresh_redis_dbs: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Settling a restore whose staged marker is still in its spare means the swap did not happen (two
    SWAPDBs, say): flushing the spare would throw the restored data away while the restore reports
    success. The staging stays for undo, with an error in the log."""
    port = fresh_redis_dbs.port
    facts, stored, stats, before = backed_up_then_changed(fresh_redis_dbs)
    component = RedisComponent(fresh_redis_dbs.url(0))
    component.stage(opener(stored, stats), facts, OPTIONS)
    staged = snapshot(port)

    component.settle(OPTIONS)

    assert_unchanged(staged, port)
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
        "redis swap did not happen, staging kept for undo db=14 target=3 timestamp=20240101_020000",
        "redis swap did not happen, staging kept for undo db=15 target=0 timestamp=20240101_020000",
    ]
    assert len(component.undo(OPTIONS)) == 2
    assert_unchanged(before, port)


def test_a_failed_stage_leaves_alone_a_spare_db_whose_marker_is_gone_and_warns(
    fresh_redis_dbs: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The application took spare db 15 while the restore staged into it (flushed it, marker included,
    and wrote its own keys): a db without this restore's marker is not the restore's to flush."""
    port = fresh_redis_dbs.port
    facts, stored, stats, _ = backed_up_then_changed(fresh_redis_dbs)
    authentic = opener(stored, stats)
    opened: list[int] = []

    @contextmanager
    def app_takes_db_15_as_the_restore_writes(part: int = 0) -> Iterator[BinaryIO]:
        with authentic(part) as reader:
            opened.append(part)
            if len(opened) == 2:  # the second pass, which writes into the spares
                spare = redis.Redis(port=port, db=15)
                spare.flushdb()
                spare.set(b"app:scratch", b"the application's")
            yield reader

    with pytest.raises(RestoreVerificationError):
        RedisComponent(fresh_redis_dbs.url(0)).restore(app_takes_db_15_as_the_restore_writes, facts, OPTIONS)

    assert redis.Redis(port=port, db=15).get(b"app:scratch") == b"the application's"
    assert redis.Redis(port=port, db=14).dbsize() == 0  # the other spare, still marked, was flushed
    assert "redis staging db not flushed, its marker is gone db=15 target=0" in caplog.messages


#: What the README tells operators to grant the restore user.
RESTORE_COMMANDS = "PING INFO SELECT DBSIZE GET SET DEL RESTORE FLUSHDB SWAPDB SCAN DUMP PTTL"


@pytest.mark.parametrize("swapdb", [True, False], ids=["swapdb", "copy"])
def test_a_restore_needs_no_command_beyond_those_the_readme_lists(
    fresh_redis_dbs: RedisServer, swapdb: bool
) -> None:
    """An ACL user granted exactly the README's list restores, swapping or (SWAPDB denied) copying;
    clear_leftovers and undo run too (the restore runs them on failure and before staging)."""
    port = fresh_redis_dbs.port
    facts, stored, stats, _ = backed_up_then_changed(fresh_redis_dbs)
    commands = [f"+{name.lower()}" for name in RESTORE_COMMANDS.split() if swapdb or name != "SWAPDB"]
    admin = redis.Redis(port=port)
    admin.acl_setuser("restorer", enabled=True, passwords=["+restorer-pw"], keys=["~*"], commands=commands)
    try:
        url = f"redis://restorer:restorer-pw@127.0.0.1:{port}/0"
        component = RedisComponent(url)
        component.check_restore_target()
        assert component.clear_leftovers(OPTIONS) == []
        report = component.restore(opener(stored, stats), facts, OPTIONS)
        assert report["swap"] == ("SWAPDB" if swapdb else "copy")
        assert component.undo(OPTIONS) == []
    finally:
        admin.acl_deluser("restorer")
    assert redis.Redis(port=port, db=0).get(b"written-after-the-backup") is (None if swapdb else b"1")
    assert markers(port) == {}
