"""The Redis component against real servers: byte-exact round trips, damaged streams, managed-Redis limits."""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, BinaryIO, cast

import pytest
import redis

from questboard_backup.connections import redis_display
from questboard_backup.errors import (
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.pipeline import ComponentWriter, StreamStats
from questboard_backup.sources.base import RestoreOptions, StreamOpener
from questboard_backup.sources.redis import RedisComponent
from tests import sealed
from tests.conftest import MANAGED_REDIS_REFUSES
from tests.servers import RedisServer, free_port

KEY = os.urandom(32)
CONTEXT = "questboard_full_20240101_020000/redis"
OPTIONS = RestoreOptions("20240101_020000")
ALL_BYTES = bytes(range(256))
TTL_MARGIN_MS = 10_000
LARGE = 1024 * 1024

#: Per db, per key: a fingerprint of the value (see ``fingerprint``) and the PTTL (-1: no expiry).
Snapshot = dict[int, dict[bytes, tuple[tuple[Any, ...], int]]]


def load_dataset(port: int) -> None:
    """Every Redis type, binary keys and values, TTLs, an empty and a 1 MB value, in dbs 0 and 3."""
    db0 = redis.Redis(port=port, db=0)
    db0.set(ALL_BYTES, ALL_BYTES[::-1])
    db0.set(b"", b"the empty key")
    db0.set(b"empty", b"")
    db0.set(b"large", os.urandom(LARGE))
    db0.set(b"session:\x00\xff", os.urandom(48), ex=3600)
    db0.rpush(b"queue:notifications", *[bytes([n]) * n for n in range(1, 40)])
    db0.hset(b"quest:1", mapping={b"title": b"Slay the bug", b"\x00\xff": ALL_BYTES, "名前": "バグ退治"})
    db0.sadd(b"online", *[f"user:{n}".encode() for n in range(0, 40, 3)], ALL_BYTES)
    db0.zadd(b"leaderboard", {f"user:{n}": n * 17 % 101 for n in range(50)})
    for n in range(6):
        db0.xadd(b"events", {b"type": b"submission", b"n": str(n).encode(), b"raw": ALL_BYTES})
    db0.xgroup_create(b"events", b"workers", id="0")
    db0.xreadgroup("workers", "worker-1", {b"events": ">"}, count=2)  # two entries pending
    db3 = redis.Redis(port=port, db=3)
    db3.set(b"cache:home", b"<html>cached</html>", px=600_000)
    db3.hset(b"ratelimit:10.0.0.1", b"count", b"3")
    db3.set(ALL_BYTES, b"the same key in another db")


def fingerprint(client: redis.Redis, key: bytes) -> tuple[Any, ...]:
    """The encoding and DUMP payload; for a hash or set in a hash table, whose DUMP lists the members in
    the table's order (seeded per server process), the encoding and the sorted members instead."""
    encoding = client.object("encoding", key)
    if encoding != b"hashtable":
        return encoding, client.dump(key)
    if client.type(key) == b"hash":
        return encoding, sorted(client.hgetall(key).items())
    return encoding, sorted(client.smembers(key))


def snapshot(port: int, dbs: Iterable[int] = range(16)) -> Snapshot:
    result: Snapshot = {}
    for db in dbs:
        client = redis.Redis(port=port, db=db)
        keys = {key: (fingerprint(client, key), client.pttl(key)) for key in client.scan_iter(count=1000)}
        if keys:
            result[db] = keys
    return result


def assert_copied(before: Snapshot, port: int, placement: Mapping[int, int]) -> None:
    """Each source db's keys are in its target db with equal values and the TTLs they had left."""
    after = snapshot(port)
    assert set(after) == set(placement.values())
    for source_db, target_db in placement.items():
        source, target = before[source_db], after[target_db]
        assert set(target) == set(source)
        for key, (value, pttl) in source.items():
            copied_value, copied_pttl = target[key]
            assert copied_value == value, key
            if pttl == -1:
                assert copied_pttl == -1, key
            else:
                assert pttl - TTL_MARGIN_MS < copied_pttl <= pttl, key


def server_version(port: int) -> str:
    return str(redis.Redis(port=port).info("server")["redis_version"])


def seal(plaintext: bytes) -> tuple[bytes, StreamStats]:
    stored = io.BytesIO()
    writer = ComponentWriter(stored, KEY, CONTEXT)
    writer.write(plaintext)
    stats = writer.finish()
    return stored.getvalue(), stats


def backup(component: RedisComponent) -> tuple[dict[str, Any], bytes, StreamStats]:
    stored = io.BytesIO()
    writer = ComponentWriter(stored, KEY, CONTEXT)
    facts = component.dump(cast(BinaryIO, writer))
    stats = writer.finish()
    return facts, stored.getvalue(), stats


def opener(stored: bytes, stats: StreamStats) -> StreamOpener:
    return sealed.opener(stored, stats, KEY, CONTEXT, "redis")


def encode(dbs: Mapping[int, list[tuple[bytes, int, bytes]]], end: int | None = None) -> bytes:
    """A stream in the documented format, written independently of the component."""
    out = bytearray(b"QBREDIS\x01")
    total = 0
    for db, keys in dbs.items():
        out += b"D" + struct.pack(">I", db)
        for key, pttl, payload in keys:
            out += b"K" + struct.pack(">I", len(key)) + key + struct.pack(">qI", pttl, len(payload)) + payload
            total += 1
    return bytes(out + b"E" + struct.pack(">Q", total if end is None else end))


def decode(plaintext: bytes) -> list[tuple[int, bytes, int, bytes]]:
    """The keys of a stream in the documented format, parsed independently of the component."""
    assert plaintext[:8] == b"QBREDIS\x01"
    at, db, keys = 8, -1, []
    while plaintext[at : at + 1] != b"E":
        tag, at = plaintext[at : at + 1], at + 1
        if tag == b"D":
            (db,), at = struct.unpack_from(">I", plaintext, at), at + 4
            continue
        assert tag == b"K"
        (length,), at = struct.unpack_from(">I", plaintext, at), at + 4
        key, at = plaintext[at : at + length], at + length
        (pttl, length), at = struct.unpack_from(">qI", plaintext, at), at + 12
        keys.append((db, key, pttl, plaintext[at : at + length]))
        at += length
    assert plaintext[at + 1 :] == struct.pack(">Q", len(keys))
    return keys


def crc64(data: bytes) -> int:
    """Redis's CRC-64 (Jones polynomial, reflected), which ends every DUMP payload."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x95AC9329AC4BC9B5 if crc & 1 else 0)
    return crc


def test_every_type_round_trips_byte_for_byte_into_a_second_server(
    fresh_redis_dbs: RedisServer, fresh_managed_redis: RedisServer
) -> None:
    load_dataset(fresh_redis_dbs.port)
    before = snapshot(fresh_redis_dbs.port)
    component = RedisComponent(fresh_redis_dbs.url(0))
    component.check()

    facts, stored, stats = backup(component)

    assert json.loads(json.dumps(facts)) == facts
    assert facts == {
        "version": server_version(fresh_redis_dbs.port),
        "dbs": {"0": len(before[0]), "3": len(before[3])},
        "keys": len(before[0]) + len(before[3]),
        "vanished": 0,
    }
    assert stats.raw_bytes > LARGE
    report = RedisComponent(fresh_managed_redis.url(0)).restore(opener(stored, stats), facts, OPTIONS)
    assert json.loads(json.dumps(report)) == report
    assert report == {
        "dbs": {"0": {"to": 0, "keys": len(before[0])}, "3": {"to": 3, "keys": len(before[3])}},
        "keys": facts["keys"],
        "placement": "0->0 3->3",
        "swap": "SWAPDB",
    }
    assert_copied(before, fresh_managed_redis.port, {0: 0, 3: 3})
    # The dump changed nothing at the source (its TTLs moved on, so only values are compared).
    values = {db: {key: value[0] for key, value in keys.items()} for db, keys in before.items()}
    after = snapshot(fresh_redis_dbs.port)
    assert {db: {key: value[0] for key, value in keys.items()} for db, keys in after.items()} == values


def test_a_named_target_gets_source_db_k_in_its_urls_db_plus_k_as_an_exact_copy(
    fresh_redis_dbs: RedisServer,
) -> None:
    load_dataset(fresh_redis_dbs.port)
    before = snapshot(fresh_redis_dbs.port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0), batch_keys=3))
    target = redis.Redis(port=fresh_redis_dbs.port, db=5)
    target.set(b"unrelated", b"kept")
    target.rpush(ALL_BYTES, b"a list the backup's string replaces")

    report = RedisComponent(fresh_redis_dbs.url(5), batch_keys=4, shift_dbs=True).restore(
        opener(stored, stats), facts, OPTIONS
    )

    assert report["dbs"] == {"0": {"to": 5, "keys": len(before[0])}, "3": {"to": 8, "keys": len(before[3])}}
    assert report["placement"] == "0->5 3->8"
    # SWAPDB replaced db 5 whole: keys it held that are not in the backup are gone.
    assert target.get(b"unrelated") is None
    before_with_copies = {**before, 5: before[0], 8: before[3]}
    assert_copied(before_with_copies, fresh_redis_dbs.port, {0: 0, 3: 3, 5: 5, 8: 8})


def test_a_dump_and_a_restore_need_only_the_commands_a_narrow_acl_user_is_granted(
    fresh_managed_redis: RedisServer,
) -> None:
    port = fresh_managed_redis.port
    admin = redis.Redis(port=port)
    for command in MANAGED_REDIS_REFUSES:
        with pytest.raises(redis.ResponseError, match="unknown command"):
            admin.execute_command(command, "GET" if command == "CONFIG" else "0")
    dump_commands = ["+ping", "+info", "+select", "+scan", "+dump", "+pttl"]
    admin.execute_command("ACL", "SETUSER", "qb-dump", "on", ">dump-pw", "~*", *dump_commands)
    admin.execute_command(
        "ACL",
        "SETUSER",
        "qb-restore",
        "on",
        ">restore-pw",
        "~*",
        *dump_commands,
        *["+restore", "+dbsize", "+get", "+set", "+del", "+flushdb", "+swapdb"],
    )
    try:
        load_dataset(port)
        before = snapshot(port)
        facts, stored, stats = backup(RedisComponent(f"redis://qb-dump:dump-pw@127.0.0.1:{port}/0"))
        restorer = RedisComponent(f"redis://qb-restore:restore-pw@127.0.0.1:{port}/6", shift_dbs=True)
        restorer.check()
        assert restorer.restore(opener(stored, stats), facts, OPTIONS)["swap"] == "SWAPDB"
        assert_copied({**before, 6: before[0], 9: before[3]}, port, {0: 0, 3: 3, 6: 6, 9: 9})
    finally:
        admin.execute_command("ACL", "DELUSER", "qb-dump", "qb-restore")


@pytest.mark.parametrize("damage", ["byte-flipped-midway", "byte-flipped-near-the-end", "truncated"])
def test_a_damaged_stream_is_refused_and_the_target_stays_as_it_was(
    fresh_redis_dbs: RedisServer, fresh_managed_redis: RedisServer, damage: str
) -> None:
    load_dataset(fresh_redis_dbs.port)
    # Several megabytes, so the damage lies chunks after the keys that come first.
    filler = redis.Redis(port=fresh_redis_dbs.port, db=3)
    filler.mset({f"blob:{n}".encode(): os.urandom(LARGE) for n in range(6)})
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    if damage == "truncated":
        stored = stored[: len(stored) - 100]
    else:
        damaged = bytearray(stored)
        damaged[len(damaged) // 2 if damage == "byte-flipped-midway" else len(damaged) - 50] ^= 0x01
        stored = bytes(damaged)
    target = redis.Redis(port=fresh_managed_redis.port, db=0)
    target.set(ALL_BYTES, b"the target's own value")
    target.set(b"kept", b"untouched", ex=3600)
    before = snapshot(fresh_managed_redis.port)

    with pytest.raises(IntegrityError):
        # One key per batch: had the stream been applied as it was read, keys would have been written.
        RedisComponent(fresh_managed_redis.url(0), batch_keys=1).restore(
            opener(stored, stats), facts, OPTIONS
        )

    after = snapshot(fresh_managed_redis.port)
    assert set(after) == {0} and set(after[0]) == {ALL_BYTES, b"kept"}
    assert after[0][ALL_BYTES] == before[0][ALL_BYTES]
    assert target.get(b"kept") == b"untouched" and 0 < target.pttl(b"kept") <= before[0][b"kept"][1]


def test_counts_differing_from_the_manifest_are_refused_before_anything_is_written(
    fresh_redis_dbs: RedisServer, fresh_managed_redis: RedisServer
) -> None:
    load_dataset(fresh_redis_dbs.port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))
    found = facts["dbs"]["3"]
    wrong = {**facts, "dbs": {**facts["dbs"], "3": found + 1}, "keys": facts["keys"] + 1}

    with pytest.raises(
        RestoreVerificationError, match=f"redis db 3: {found + 1} keys expected, {found} found"
    ):
        RedisComponent(fresh_managed_redis.url(0)).restore(opener(stored, stats), wrong, OPTIONS)
    with pytest.raises(RestoreVerificationError, match="redis db 7: 1 keys expected, 0 found"):
        RedisComponent(fresh_managed_redis.url(0)).restore(
            opener(stored, stats), {**facts, "dbs": {**facts["dbs"], "7": 1}}, OPTIONS
        )
    assert snapshot(fresh_managed_redis.port) == {}


PAYLOAD = b"\x00\x05value\n\x00" + bytes(8)  # only its length and footer position matter to the parser


@pytest.mark.parametrize(
    ("plaintext", "problem"),
    [
        (b"PGDMP\x01\x0e\x00" + encode({})[8:], "does not start with the Quest Board Redis header"),
        (b"QBREDIS\x02" + encode({})[8:], "format version is 2"),
        (encode({0: [(b"k", -1, PAYLOAD)]})[:-9], "ends before its end record"),
        (encode({0: [(b"k", -1, PAYLOAD)]})[:-30], "bytes short inside a record"),
        (encode({0: [(b"k", -1, PAYLOAD)]}, end=2), "end record counts 2 keys, 1 were read"),
        (encode({0: [(b"k", -1, PAYLOAD)]}) + b"\x00", "data follows its end record"),
        (encode({0: [(b"k", 0, PAYLOAD)]}), "time to live of 0 ms"),
        (encode({0: [(b"k", -1, b"short")]}), "DUMP payload of 5 bytes is too short"),
        (encode({3: [], 1: []}), "db 1 follows db 3"),
        (b"QBREDIS\x01K" + encode({0: [(b"k", -1, PAYLOAD)]})[14:], "a key comes before any db record"),
        (b"QBREDIS\x01X" + encode({})[8:], "unknown record type b'X'"),
    ],
    ids=[
        "foreign-header",
        "future-version",
        "no-end",
        "cut-in-a-record",
        "wrong-end-count",
        "trailing-data",
        "zero-ttl",
        "short-payload",
        "dbs-out-of-order",
        "key-without-db",
        "unknown-record",
    ],
)
def test_an_authentic_stream_not_in_the_documented_format_is_refused_untouched(
    fresh_managed_redis: RedisServer, plaintext: bytes, problem: str
) -> None:
    stored, stats = seal(plaintext)
    facts = {"version": "7.0.0", "dbs": {"0": 1}, "keys": 1}
    with pytest.raises(IntegrityError, match=problem):
        RedisComponent(fresh_managed_redis.url(0)).restore(opener(stored, stats), facts, OPTIONS)
    assert snapshot(fresh_managed_redis.port) == {}


def test_keys_from_a_newer_redis_are_refused_naming_both_versions_before_anything_is_written(
    fresh_redis_dbs: RedisServer, fresh_managed_redis: RedisServer
) -> None:
    source = redis.Redis(port=fresh_redis_dbs.port)
    source.set(b"k", b"v")
    payload = cast(bytes, source.dump(b"k"))
    assert crc64(payload[:-8]).to_bytes(8, "little") == payload[-8:]  # the helper is Redis's CRC
    rdb_version = int.from_bytes(payload[-10:-8], "little")
    body = payload[:-10] + (rdb_version + 1).to_bytes(2, "little")
    newer = body + crc64(body).to_bytes(8, "little")
    keys = [(f"k{n}".encode(), -1, newer) for n in range(5)]
    stored, stats = seal(encode({0: keys}))
    facts = {"version": "99.1.0", "dbs": {"0": 5}, "keys": 5}

    with pytest.raises(SourceError) as raised:
        RedisComponent(fresh_managed_redis.url(0), batch_keys=2).restore(
            opener(stored, stats), facts, OPTIONS
        )

    message = str(raised.value)
    assert "99.1.0" in message and server_version(fresh_managed_redis.port) in message
    assert "\n" not in message
    assert snapshot(fresh_managed_redis.port) == {}


def test_a_target_db_beyond_the_servers_last_is_refused_before_anything_is_written(
    fresh_redis_dbs: RedisServer,
) -> None:
    load_dataset(fresh_redis_dbs.port)
    before = snapshot(fresh_redis_dbs.port)
    facts, stored, stats = backup(RedisComponent(fresh_redis_dbs.url(0)))

    with pytest.raises(SourceError, match=r"db 3 into db 17 .*source db k goes to db 14\+k"):
        RedisComponent(fresh_redis_dbs.url(14), shift_dbs=True).restore(opener(stored, stats), facts, OPTIONS)

    assert set(snapshot(fresh_redis_dbs.port)) == set(before) == {0, 3}


@pytest.mark.parametrize("failure", ["nothing-listening", "wrong-password"])
def test_an_unreachable_server_is_reported_in_one_line_without_its_password(
    fresh_redis_dbs: RedisServer, failure: str
) -> None:
    port = free_port() if failure == "nothing-listening" else fresh_redis_dbs.port
    user = "" if failure == "nothing-listening" else "nobody"
    component = RedisComponent(f"redis://{user}:s3cret@127.0.0.1:{port}/0")
    attempts: list[Callable[[], object]] = [
        component.check,
        lambda: component.dump(cast(BinaryIO, io.BytesIO())),
        lambda: component.restore(opener(*seal(encode({}))), {"dbs": {}, "keys": 0}, OPTIONS),
    ]
    for attempt in attempts:
        with pytest.raises(SourceUnreachableError) as raised:
            attempt()
        message = str(raised.value)
        # The URL as ``connections`` shows it (tested there), with no password.
        assert message.startswith(f"cannot connect to Redis at {redis_display(component.url)}: ")
        assert "s3cret" not in message and "\n" not in message


def test_keys_scan_returns_twice_are_stored_and_counted_once(
    fresh_redis_dbs: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis(port=fresh_redis_dbs.port, db=2)
    client.mset({f"user:{n}".encode(): str(n).encode() for n in range(100)})
    before = snapshot(fresh_redis_dbs.port)
    scan = redis.Redis.scan
    previous: list[bytes] = []

    def scan_with_repeats(self: redis.Redis, *args: Any, **kwargs: Any) -> Any:
        # What SCAN may do while Redis resizes a table: repeat keys, within a call and across calls.
        cursor, keys = cast("tuple[int, list[bytes]]", scan(self, *args, **kwargs))
        repeated = [*keys, *keys[:2], *previous]
        previous[:] = keys
        return cursor, repeated

    monkeypatch.setattr(redis.Redis, "scan", scan_with_repeats)
    out = io.BytesIO()
    facts = RedisComponent(fresh_redis_dbs.url(0), batch_keys=7).dump(cast(BinaryIO, out))
    monkeypatch.undo()

    assert facts["dbs"] == {"2": 100} and facts["keys"] == 100 and facts["vanished"] == 0
    keys = [key for _, key, _, _ in decode(out.getvalue())]
    assert sorted(keys) == sorted(before[2])
    client.flushdb()
    stored, stats = seal(out.getvalue())
    RedisComponent(fresh_redis_dbs.url(0), batch_keys=7).restore(opener(stored, stats), facts, OPTIONS)
    assert_copied(before, fresh_redis_dbs.port, {2: 2})


def test_keys_gone_between_scan_and_dump_are_skipped_and_counted_as_vanished(
    fresh_redis_dbs: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis(port=fresh_redis_dbs.port, db=0)
    client.set(b"stays", b"1")
    client.set(b"expiring", b"2", px=60_000)
    scan = redis.Redis.scan

    def scan_with_ghosts(self: redis.Redis, *args: Any, **kwargs: Any) -> Any:
        cursor, keys = scan(self, *args, **kwargs)
        return cursor, [*keys, b"ghost:1", b"ghost:2"]

    monkeypatch.setattr(redis.Redis, "scan", scan_with_ghosts)
    out = io.BytesIO()
    facts = RedisComponent(fresh_redis_dbs.url(0)).dump(cast(BinaryIO, out))

    assert (facts["dbs"], facts["keys"], facts["vanished"]) == ({"0": 2}, 2, 2)
    assert {key: pttl > 0 for _, key, pttl, _ in decode(out.getvalue())} == {
        b"stays": False,
        b"expiring": True,
    }


def test_the_stream_is_the_documented_format(fresh_redis_dbs: RedisServer) -> None:
    client = redis.Redis(port=fresh_redis_dbs.port, db=4)
    client.set(b"\x00key", b"value")
    client.set(b"session", b"s", px=90_000)
    out = io.BytesIO()

    RedisComponent(fresh_redis_dbs.url(0)).dump(cast(BinaryIO, out))

    records = {key: (db, pttl, payload) for db, key, pttl, payload in decode(out.getvalue())}
    assert records[b"\x00key"] == (4, -1, client.dump(b"\x00key"))
    db, pttl, payload = records[b"session"]
    assert db == 4 and 90_000 - TTL_MARGIN_MS < pttl <= 90_000 and payload == client.dump(b"session")


def test_an_empty_server_gives_an_empty_stream_that_restores_as_nothing(
    fresh_redis_dbs: RedisServer, fresh_managed_redis: RedisServer
) -> None:
    out = io.BytesIO()
    facts = RedisComponent(fresh_redis_dbs.url(0)).dump(cast(BinaryIO, out))
    assert out.getvalue() == b"QBREDIS\x01E" + bytes(8)
    assert facts == {"version": server_version(fresh_redis_dbs.port), "dbs": {}, "keys": 0, "vanished": 0}
    stored, stats = seal(out.getvalue())
    report = RedisComponent(fresh_managed_redis.url(0)).restore(opener(stored, stats), facts, OPTIONS)
    assert report == {"dbs": {}, "keys": 0, "placement": "none", "swap": "none"}
    assert snapshot(fresh_managed_redis.port) == {}


def test_a_restore_whose_keys_are_evicted_as_it_writes_fails_verification(
    fresh_redis_dbs: RedisServer, fresh_managed_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    source = redis.Redis(port=fresh_managed_redis.port)
    source.mset({f"item:{n}".encode(): os.urandom(1024) for n in range(2000)})
    facts, stored, stats = backup(RedisComponent(fresh_managed_redis.url(0)))
    target = redis.Redis(port=fresh_redis_dbs.port)
    room = int(target.info("memory")["used_memory"]) + 512 * 1024
    target.config_set("maxmemory-policy", "allkeys-random")
    target.config_set("maxmemory", room)
    try:
        with pytest.raises(
            RestoreVerificationError,
            match=r"redis db 0: 2000 keys without expiry restored \(staged in db 15\), but",
        ):
            RedisComponent(fresh_redis_dbs.url(0)).restore(opener(stored, stats), facts, OPTIONS)
        # The target is left empty. The spare is flushed if its marker survived; a spare whose marker
        # was evicted is left with a warning, as a db without it may be the application's by now.
        left = snapshot(fresh_redis_dbs.port)
        assert set(left) <= {15}
        assert (15 in left) == (
            "redis staging db not flushed, its marker is gone db=15 target=0" in caplog.messages
        )
    finally:
        target.config_set("maxmemory", 0)
        target.config_set("maxmemory-policy", "noeviction")
