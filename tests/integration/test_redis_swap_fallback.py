"""A Redis restore into a server that refuses SWAPDB: the staged keys are copied, with a warning."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from questboard_backup.sources.base import RestoreOptions
from questboard_backup.sources.redis import RedisComponent
from questboard_backup.sources.redis.spares import MARKER
from tests.integration.test_redis_component import assert_copied, backup, opener, snapshot
from tests.integration.test_redis_staged_restore import app_on_db_2, markers
from tests.servers import RedisServer

OPTIONS = RestoreOptions("20240101_020000")


@pytest.fixture(scope="module")
def swapdb_refused_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis that refuses SWAPDB (renamed to nothing, as a hardened server may) and has 20 dbs."""
    args = ["--rename-command", "SWAPDB", "", "--databases", "20"]
    server = RedisServer(tmp_path_factory.mktemp("redis-no-swapdb"), extra_args=args).start()
    yield server
    server.stop()


@pytest.fixture
def no_swapdb(swapdb_refused_server: RedisServer) -> Iterator[RedisServer]:
    client = redis.Redis(port=swapdb_refused_server.port)
    client.flushall()
    yield swapdb_refused_server
    client.flushall()


def test_where_swapdb_is_refused_the_keys_are_copied_with_a_warning(no_swapdb: RedisServer) -> None:
    port = no_swapdb.port
    app_on_db_2(port)
    before = snapshot(port, range(20))
    facts, stored, stats = backup(RedisComponent(no_swapdb.url(2)))
    target = redis.Redis(port=port, db=2)
    target.set(b"quest:1", b"changed after the backup")
    target.set(b"not-in-the-backup", b"kept by the copy")

    report = RedisComponent(no_swapdb.url(2)).restore(opener(stored, stats), facts, OPTIONS)

    assert report["swap"] == "copy"
    assert "refused SWAPDB" in report["warning"] and "not atomic" in report["warning"]
    after = snapshot(port, range(20))
    assert set(after) == {2}  # the spare (db 19, the top of 20) was flushed after the copy
    assert target.get(b"quest:1") == b"v1" and target.get(b"not-in-the-backup") == b"kept by the copy"
    assert {key: value[0] for key, value in before[2].items()} == {
        key: value[0] for key, value in after[2].items() if key != b"not-in-the-backup"
    }


def test_spare_dbs_are_taken_from_the_top_of_the_servers_range(no_swapdb: RedisServer) -> None:
    port = no_swapdb.port
    app_on_db_2(port)
    facts, stored, stats = backup(RedisComponent(no_swapdb.url(2)))

    RedisComponent(no_swapdb.url(2)).stage(opener(stored, stats), facts, OPTIONS)

    assert {db: m["target"] for db, m in markers(port, range(20)).items()} == {19: 2}
    RedisComponent(no_swapdb.url(2)).undo(OPTIONS)
    assert markers(port, range(20)) == {}


def test_an_interrupted_copy_is_reported_by_undo_and_its_spare_dropped(no_swapdb: RedisServer) -> None:
    port = no_swapdb.port
    app_on_db_2(port)
    facts, stored, stats = backup(RedisComponent(no_swapdb.url(2)))
    component = RedisComponent(no_swapdb.url(2))
    component.stage(opener(stored, stats), facts, OPTIONS)
    # What a copy killed midway leaves: the spare marked as copying.
    marker = markers(port, range(20))[19]
    redis.Redis(port=port, db=19).set(MARKER, json.dumps({**marker, "copying": True}))

    lines = RedisComponent(no_swapdb.url(2)).undo(OPTIONS)

    assert len(lines) == 1 and "redis db 2: restore" in lines[0] and "SWAPDB refused" in lines[0]
    assert markers(port, range(20)) == {} and redis.Redis(port=port, db=19).dbsize() == 0


def test_a_user_denied_swapdb_by_an_acl_gets_the_copy_with_a_warning(
    fresh_managed_redis: RedisServer,
) -> None:
    port = fresh_managed_redis.port
    admin = redis.Redis(port=port)
    commands = ["+ping", "+info", "+select", "+scan", "+dump", "+pttl", "+restore", "+dbsize"]
    commands += ["+get", "+set", "+del", "+flushdb"]
    admin.execute_command("ACL", "SETUSER", "qb-no-swap", "on", ">pw", "~*", *commands)
    try:
        app_on_db_2(port)
        before = snapshot(port)
        url = f"redis://qb-no-swap:pw@127.0.0.1:{port}/2"
        facts, stored, stats = backup(RedisComponent(url))
        redis.Redis(port=port, db=2).flushdb()

        report = RedisComponent(url).restore(opener(stored, stats), facts, OPTIONS)

        assert report["swap"] == "copy" and "refused SWAPDB" in report["warning"]
        assert_copied(before, port, {2: 2})
    finally:
        admin.execute_command("ACL", "DELUSER", "qb-no-swap")
