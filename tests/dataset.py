"""A small but realistic Quest Board dataset, and the comparisons that prove two copies identical.

Used by the integration tests, `make demo` and the benchmark. It exercises the awkward cases: NULLs,
unicode, bytea, large objects, a sequence past 1, JSONB, a second schema, foreign keys, binary Redis
keys, every Redis type, TTLs, several logical dbs, symlinks, unicode names, empty files and folders.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import psycopg2
import redis

from tests.servers import postgres_bindir

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email citext UNIQUE NOT NULL,
    display_name text NOT NULL,
    avatar bytea,
    profile jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE users IS 'Quest Board adventurers (冒険者)';
CREATE TABLE quests (
    id serial PRIMARY KEY,
    title text NOT NULL,
    description text,
    reward_points integer NOT NULL CHECK (reward_points >= 0),
    tags text[] NOT NULL DEFAULT '{}',
    posted_by bigint REFERENCES users(id),
    due_at timestamptz
);
CREATE TABLE submissions (
    id bigserial PRIMARY KEY,
    quest_id integer NOT NULL REFERENCES quests(id) ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES users(id),
    body text,
    attachment_oid oid,
    score numeric(6,2),
    submitted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX submissions_by_quest ON submissions (quest_id, submitted_at);
CREATE SCHEMA rewards;
CREATE TABLE rewards.ledger (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    points integer NOT NULL,
    reason text,
    meta jsonb
);
CREATE SEQUENCE rewards.voucher_codes START 1000;
CREATE VIEW rewards.totals AS SELECT user_id, sum(points) AS points FROM rewards.ledger GROUP BY user_id;
"""


def load_postgres(url: str, users: int = 40) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(SCHEMA)
        for n in range(users):
            cur.execute(
                "INSERT INTO users (email, display_name, avatar, profile, created_at) VALUES "
                "(%s, %s, %s, %s, '2024-01-01 02:00:00+09'::timestamptz + %s * interval '1 hour')",
                (
                    f"Hero{n}@Example.com",
                    ["Ayaka 彩花", "Zoë", "O'Brien", "🐉 dragon-slayer", "tab\there"][n % 5] + f" #{n}",
                    bytes(range(256)) if n % 3 == 0 else None,
                    f'{{"level": {n}, "guild": {"null" if n % 4 else chr(34) + "北" + chr(34)}, "tags": ["a", "b"]}}',
                    n,
                ),
            )
        for n in range(25):
            cur.execute(
                "INSERT INTO quests (title, description, reward_points, tags, posted_by, due_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    f"Quest {n}: slay the bug",
                    None if n % 5 == 0 else "Line one\nline two, with ünïcode",
                    n * 10,
                    ["urgent", "backend"][: n % 3],
                    (n % users) + 1,
                    None if n % 2 else "2030-06-01T00:00:00Z",
                ),
            )
        for n in range(120):
            oid = None
            if n % 30 == 0:
                cur.execute("SELECT lo_from_bytea(0, %s)", (hashlib.sha256(str(n).encode()).digest() * 100,))
                oid = cur.fetchone()[0]  # type: ignore[index]
            cur.execute(
                "INSERT INTO submissions (quest_id, user_id, body, attachment_oid, score) VALUES (%s, %s, %s, %s, %s)",
                (
                    (n % 25) + 1,
                    (n % users) + 1,
                    f"Submission {n}" if n % 7 else None,
                    oid,
                    None if n % 4 else n / 3,
                ),
            )
        for n in range(60):
            cur.execute(
                "INSERT INTO rewards.ledger (user_id, points, reason, meta) VALUES (%s, %s, %s, %s)",
                (
                    (n % users) + 1,
                    n * 5 - 50,
                    "bonus" if n % 2 else None,
                    '{"source": "quest"}' if n % 3 else None,
                ),
            )
        cur.execute("SELECT setval('rewards.voucher_codes', 4242)")


def load_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    for n in range(30):
        client.set(f"session:{n:04d}".encode(), os.urandom(48), ex=3600 + n)
    client.set(b"binary:\x00\xff\x10key", bytes(range(256)))
    client.set("empty", b"")
    client.zadd("leaderboard", {f"user:{n}": n * 17 % 101 for n in range(50)})
    client.hset("quest:1", mapping={"title": "Slay the bug", "points": "100", "名前": "バグ退治"})
    client.rpush("queue:notifications", *[f"notify:{n}" for n in range(20)])
    client.sadd("online", *[f"user:{n}" for n in range(0, 40, 3)])
    for n in range(15):
        client.xadd("events", {"type": "submission", "n": str(n)})
    client.xgroup_create("events", "workers", id="0")
    other = redis.Redis.from_url(url.rsplit("/", 1)[0] + "/1")  # a db in the URL wins over db=
    other.set("cache:home", b"<html>cached</html>", px=600_000)
    other.hset("ratelimit:10.0.0.1", mapping={"count": "3"})


def make_files(root: Path) -> tuple[Path, Path]:
    """An uploads folder and a config folder with the awkward cases; returns both."""
    uploads, config = root / "uploads", root / "config"
    (uploads / "avatars").mkdir(parents=True)
    (uploads / "empty-folder").mkdir()
    (uploads / "avatars" / "hero-1.png").write_bytes(bytes(range(256)) * 64)
    (uploads / "avatars" / "冒険者.txt").write_text("日本語のファイル名\n", encoding="utf-8")
    (uploads / "empty.txt").write_bytes(b"")
    (uploads / "report.csv").write_text("id,points\n" + "".join(f"{n},{n * 3}\n" for n in range(500)))
    (uploads / "latest.png").symlink_to("avatars/hero-1.png")
    (uploads / "private.key").write_bytes(os.urandom(64))
    (uploads / "private.key").chmod(0o600)
    os.utime(uploads / "report.csv", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    config.mkdir(parents=True)
    (config / "app.env").write_text("QUESTBOARD_MODE=production\nSECRET_KEY_BASE=not-a-real-secret\n")
    (config / "nginx.conf").write_text("server { listen 80; }\n")
    (config / "run.sh").write_text("#!/bin/sh\necho run\n")
    (config / "run.sh").chmod(0o755)
    return uploads, config


def pg_dump_text(url: str) -> str:
    """A plain, deterministic dump for comparing two databases (the database name stripped)."""
    output = subprocess.run(
        [
            str(postgres_bindir() / "pg_dump"),
            "--no-owner",
            "--no-privileges",
            "--format=plain",
            "--dbname",
            url,
        ],
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8")
    # pg_dump 15.14+ brackets its output with \restrict/\unrestrict and a random key: not content.
    skip = ("-- Dumped", "\\restrict", "\\unrestrict")
    return "\n".join(line for line in output.splitlines() if not line.startswith(skip))


def large_objects(url: str) -> dict[int, str]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT oid, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid")
        return dict(cur.fetchall())


def _redis_value(client: redis.Redis, key: bytes) -> object:
    """A canonical value per type: DUMP payloads are not canonical (a set's internal order varies)."""
    kind = client.type(key)
    if kind == b"string":
        return client.get(key)
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"hash":
        return sorted(client.hgetall(key).items())
    if kind == b"set":
        return sorted(client.smembers(key))
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == b"stream":
        groups = [(g["name"], g["last-delivered-id"], g["pending"]) for g in client.xinfo_groups(key)]
        return client.xrange(key), groups
    raise AssertionError(f"unexpected Redis type {kind!r}")


def redis_snapshot(url: str, dbs: range = range(16)) -> dict[int, dict[bytes, tuple[bytes, object, bool]]]:
    """Per db, per key: its type, canonical value and whether it has a TTL."""
    snapshot = {}
    for db in dbs:
        client = redis.Redis.from_url(f"{url}/{db}")
        keys = {
            key: (client.type(key), _redis_value(client, key), client.pttl(key) > 0)
            for key in client.scan_iter(count=1000)
        }
        if keys:
            snapshot[db] = keys
    return snapshot


def tree_state(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """Everything a file restore must bring back, walked independently of the engine's own listing:
    relative path -> (kind, permission bits, mtime in ns, content or link target)."""
    state: dict[str, tuple[str, int, int, bytes]] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [".", *dirs, *files] if folder == str(root) else [*dirs, *files]:
            path = Path(folder) / name if name != "." else Path(folder)
            st = path.lstat()
            if path.is_symlink():
                kind, content = "symlink", os.readlink(path).encode()
            elif path.is_dir():
                kind, content = "dir", b""
            else:
                kind, content = "file", path.read_bytes()
            state[str(path.relative_to(root))] = (kind, st.st_mode & 0o7777, st.st_mtime_ns, content)
    return state
