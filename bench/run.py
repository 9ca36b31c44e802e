"""`make bench`: backup and restore speed and memory against the raw tools, on the same data, same run.

Builds a PostgreSQL database of realistic, moderately compressible data (text from a vocabulary,
jsonb, timestamps, several tables) at two sizes, then times:
  raw dump      pg_dump -Fd -Z0 -j2 to local disk
  seed pipeline pg_dump | gzip | openssl enc -aes-256-cbc to a file (what the original guide's era did)
  backup        questboard-backup full (PostgreSQL only, local storage)
  raw restore   createdb, then pg_restore -j2 of the raw dump into it
  restore       questboard-backup restore --only postgres into a fresh database
in QB_BENCH_ROUNDS rounds (default 6: as often each step first), each tool back to back with its raw
counterpart, and reports the median of the rounds' ratios (the seed pipeline, run once, against the
backup's median) and the peak RSS of the backup and restore processes. Sizes: QB_BENCH_GB (default 1.35, about 1.1 GB on disk).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg2  # noqa: E402

from tests.servers import PostgresServer  # noqa: E402

TARGETS = {"backup/raw_dump": 1.2, "backup/seed_pipeline": 0.4, "restore/raw_restore": 1.15}
#: The ratios taken in each round, of two steps run back to back (their median is reported).
PAIRS = {"backup/raw_dump": ("backup", "raw_dump"), "restore/raw_restore": ("restore", "raw_restore")}
RSS_LIMIT_MB = 256

BUILD = """
CREATE TABLE words AS SELECT w FROM unnest(string_to_array(
 'quest board hero dragon slay bug reward guild level points submit review accept reject deadline
  forest castle tower dungeon sword shield potion map scroll treasure gold silver bronze knight mage
  archer healer rogue bard village city river mountain desert ocean island bridge gate key door
  the a of and to in for on with by at from is was be this that it as are have not but or',
 ' ')) AS w WHERE w <> '';
CREATE TABLE users (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text, profile jsonb,
  created_at timestamptz);
CREATE TABLE quests (id bigserial PRIMARY KEY, title text, description text, reward integer,
  posted_by bigint REFERENCES users(id), due_at timestamptz, meta jsonb);
CREATE TABLE submissions (id bigserial PRIMARY KEY, quest_id bigint REFERENCES quests(id),
  user_id bigint REFERENCES users(id), body text, score numeric(6,2), submitted_at timestamptz);
CREATE INDEX ON submissions (quest_id);
CREATE INDEX ON submissions (submitted_at);
"""


def build_database(url: str, gigabytes: float) -> int:
    # Text is built from a 130-word vocabulary with random choices: compresses like real prose (~3-4x).
    users = int(200_000 * gigabytes)
    quests = int(400_000 * gigabytes)
    submissions = int(2_300_000 * gigabytes)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(BUILD)
        cur.execute(
            "INSERT INTO users (email, name, profile, created_at) SELECT 'user' || g || '@example.com', "
            "'Hero ' || md5(g::text), jsonb_build_object('level', g % 100, 'guild', 'guild-' || (g % 50), "
            "'badges', jsonb_build_array('a', 'b', g % 7)), now() - g * interval '1 minute' "
            f"FROM generate_series(1, {users}) g"
        )
        cur.execute("CREATE TEMP TABLE vocab AS SELECT array_agg(w) AS a FROM words")
        pick = "(SELECT a FROM vocab)[1 + floor(random() * 130)::int]"
        text = lambda n: "concat_ws(' ', " + ", ".join([pick] * n) + ")"  # noqa: E731
        cur.execute(
            f"INSERT INTO quests (title, description, reward, posted_by, due_at, meta) SELECT {text(5)}, {text(60)}, "
            f"(random() * 1000)::int, 1 + (g % {users}), now() + g * interval '1 second', "
            f"jsonb_build_object('tags', jsonb_build_array({pick}, {pick}), 'difficulty', g % 5) "
            f"FROM generate_series(1, {quests}) g"
        )
        cur.execute(
            f"INSERT INTO submissions (quest_id, user_id, body, score, submitted_at) SELECT 1 + (g % {quests}), "
            f"1 + (g % {users}), {text(35)}, (random() * 100)::numeric(6,2), now() - g * interval '1 second' "
            f"FROM generate_series(1, {submissions}) g"
        )
        cur.execute("SELECT pg_database_size(current_database())")
        return int(cur.fetchone()[0])  # type: ignore[index]


def busy_core_seconds() -> float:
    """CPU time the whole machine has spent busy (all processes, PostgreSQL's included), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed(
    argv: list[str], settle: Callable[[], object], env: dict[str, str] | None = None, shell: bool = False
) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB, the largest process of its tree) and busy core-seconds of the machine.

    ``settle`` runs first, untimed: it writes back what earlier steps left to write, which would
    otherwise be written during this one, on its CPU and disk.
    """
    settle()
    start, busy = time.monotonic(), busy_core_seconds()
    process = subprocess.Popen(
        argv if not shell else argv[0],
        env=env,
        shell=shell,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds, cpu = time.monotonic() - start, busy_core_seconds() - busy
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"benchmark step failed: {argv[0] if shell else ' '.join(argv)}: {process.stderr.read().decode()[-500:] if process.stderr else ''}"
        )
    return seconds, usage.ru_maxrss / 1024, cpu


def pipeline_cpu(raw_dir: Path) -> float:
    """CPU seconds the engine's stream pipeline (zstd, encryption, SHA-256) needs for the raw dump's bytes
    alone, in this process: what a backup must spend beyond the dump itself, however it is scheduled."""
    from questboard_backup.pipeline import READ_SIZE, ComponentWriter

    class Discard:
        def write(self, data: bytes) -> int:
            return len(data)

    # As the backup compresses a PostgreSQL dump: on the writing thread, its streams being parallel.
    writer = ComponentWriter(Discard(), secrets.token_bytes(32), "bench/postgres", threads=0)
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    start = time.process_time()
    for path in sorted(raw_dir.iterdir()):
        with open(path, "rb", buffering=0) as data:
            while count := data.readinto(buffer):
                writer.write(view[:count])
    writer.finish()
    return time.process_time() - start


#: The CLI every benchmark runs.
CLI = str(REPO / ".venv" / "bin" / "questboard-backup")


def vacuum(url: str) -> None:
    """A database in service has been vacuumed: hint bits set, statistics known. Without this the first
    reader (whichever tool goes first) pays for setting them."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute("VACUUM ANALYZE")
    conn.close()


def settle_server(admin: Any) -> None:
    """The server's dirty buffers, then the page cache, written back: a building or restoring step
    leaves gigabytes of them, which a checkpoint spread over minutes (and the kernel) would otherwise
    write during the next steps."""
    admin.cursor().execute("CHECKPOINT")
    os.sync()


def cli_environment(url: str, backup_dir: Path, **extra: str) -> dict[str, str]:
    """The CLI's settings for a PostgreSQL-only backup of ``url`` to ``backup_dir``, with a fresh key."""
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": "",
        "BACKUP_FILES_PATHS": "",
        "BACKUP_CONFIG_PATHS": "",
        "BACKUP_DIR": str(backup_dir),
        "BACKUP_ENCRYPTION_KEY": secrets.token_urlsafe(24),
        "BACKUP_HOSTNAME": "bench",
        "BACKUP_S3_BUCKET": "",
        **extra,
    }


def run_size(pg: PostgresServer, gigabytes: float, work: Path, rounds: int) -> dict[str, Any]:
    """Every timing ``rounds`` times, the tool and its raw counterpart back to back; medians of the
    timings and of each round's ratio (peak RSS: the largest). One timing on this machine varies by
    about 10 %, and the background work that slows one round slows both of its steps."""
    name = f"bench_{str(gigabytes).replace('.', '_')}"
    admin = psycopg2.connect(pg.url())
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    print(f"building a {gigabytes} GB database ...", flush=True)
    size = build_database(pg.url(name), gigabytes)
    url = pg.url(name)
    vacuum(url)

    def settle() -> None:
        settle_server(admin)

    print(f"  database size {size / 1e9:.2f} GB", flush=True)
    env = cli_environment(url, work / "backups")
    cli = CLI
    samples: dict[str, list[float]] = {}

    def sample(what: str, seconds: float, rss: float, cpu: float, keep_rss: bool = True) -> None:
        samples.setdefault(what, []).append(seconds)
        samples.setdefault(f"{what}_cpu", []).append(cpu)
        if keep_rss:
            samples.setdefault(f"{what}_rss_mb", []).append(rss)

    results: dict[str, Any] = {"database_bytes": size}
    seed_out = work / f"{name}.seed.gz.enc"
    results["seed_pipeline"], _, _ = timed(
        [f"pg_dump -d '{url}' | gzip -6 | openssl enc -aes-256-cbc -pbkdf2 -pass pass:bench > '{seed_out}'"],
        settle,
        shell=True,
    )
    seed_out.unlink()
    raw_dir = work / f"{name}.raw"
    for round_number in range(rounds):
        shutil.rmtree(raw_dir, ignore_errors=True)
        shutil.rmtree(work / "backups", ignore_errors=True)
        # Each pair runs back to back, in alternate order from one round to the next: whatever slows a
        # round (background work on the machine) weighs on both, and neither always goes first.
        dumps = [
            lambda: sample(
                "raw_dump",
                *timed(["pg_dump", "-Fd", "-Z0", "-j2", "-f", str(raw_dir), "-d", url], settle),
                keep_rss=False,
            ),
            lambda: sample("backup", *timed([cli, "full"], settle, env)),
        ]
        for step in dumps if round_number % 2 == 0 else reversed(dumps):
            step()
        listing = json.loads(
            subprocess.run([cli, "list", "--json"], env=env, capture_output=True, check=True).stdout
        )
        backup_id = listing["backups"][0]["id"]
        results["backup_stored_bytes"] = listing["backups"][0]["stored_bytes"]
        for db in (f"{name}_raw_restore", f"{name}_restored"):
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

        def raw_restore() -> None:
            sample(
                "raw_restore",
                # The raw restore creates its database too, as the tool does (its staging database).
                *timed(
                    [
                        f"createdb --maintenance-db='{pg.url()}' {name}_raw_restore && "
                        f"pg_restore -j2 -d '{pg.url(f'{name}_raw_restore')}' '{raw_dir}'"
                    ],
                    settle,
                    shell=True,
                ),
                keep_rss=False,
            )
            # Dropped at once: autovacuum would otherwise work through the fresh copy during the next step.
            admin.cursor().execute(f"DROP DATABASE {name}_raw_restore WITH (FORCE)")

        def restore(backup_id: str = backup_id) -> None:
            sample(
                "restore",
                *timed(
                    [
                        cli,
                        "restore",
                        backup_id,
                        "--only",
                        "postgres",
                        "--to-database-url",
                        pg.url(f"{name}_restored"),
                    ],
                    settle,
                    env,
                ),
            )
            admin.cursor().execute(f"DROP DATABASE {name}_restored WITH (FORCE)")

        for step in (raw_restore, restore) if round_number % 2 == 0 else (restore, raw_restore):
            step()
        for ratio, (tool, raw) in PAIRS.items():
            samples.setdefault(ratio, []).append(samples[tool][-1] / samples[raw][-1])
        print(
            f"  round {round_number + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in samples.items()),
            flush=True,
        )
    results["raw_dump_bytes"] = sum(p.stat().st_size for p in raw_dir.iterdir())
    results["pipeline_cpu"] = pipeline_cpu(raw_dir)
    for what, values in samples.items():
        results[what] = max(values) if what.endswith("_rss_mb") else statistics.median(values)
    for ratio in PAIRS:
        results[ratio + "_rounds"] = samples[ratio]
    shutil.rmtree(raw_dir)
    shutil.rmtree(work / "backups")
    for db in (name, f"{name}_raw_restore", f"{name}_restored"):
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    admin.close()
    return results


def main() -> int:
    big = float(os.environ.get("QB_BENCH_GB", "1.35"))
    rounds = int(os.environ.get("QB_BENCH_ROUNDS", "6"))
    work = Path(tempfile.mkdtemp(prefix="qb-bench-"))
    pg = PostgresServer.in_new_folder()
    try:
        pg.start()
        runs = {size: run_size(pg, size, work, rounds) for size in (big / 4, big)}
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    small, large = runs[big / 4], runs[big]
    ratios = {
        "backup/raw_dump": large["backup/raw_dump"],
        "backup/seed_pipeline": large["backup"] / large["seed_pipeline"],
        "restore/raw_restore": large["restore/raw_restore"],
    }
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    print(f"\nmachine: {machine}")
    for _size, r in runs.items():
        print(
            f"database {r['database_bytes'] / 1e9:.2f} GB: raw dump {r['raw_dump']:.1f} s, seed pipeline "
            f"{r['seed_pipeline']:.1f} s, backup {r['backup']:.1f} s ({r['backup_stored_bytes'] / 1e6:.0f} MB stored), "
            f"raw restore {r['raw_restore']:.1f} s, restore {r['restore']:.1f} s, "
            f"peak RSS backup {r['backup_rss_mb']:.0f} MB, restore {r['restore_rss_mb']:.0f} MB"
        )
    for _size, r in runs.items():
        print(
            f"  busy core-seconds (whole machine): raw dump {r['raw_dump_cpu']:.1f}, backup {r['backup_cpu']:.1f} "
            f"(the stream pipeline alone needs {r['pipeline_cpu']:.1f} for the raw dump's bytes), raw restore {r['raw_restore_cpu']:.1f}, "
            f"restore {r['restore_cpu']:.1f}"
        )
    ok = True
    for name, ratio in ratios.items():
        met = ratio <= TARGETS[name]
        ok &= met
        seen = large.get(name + "_rounds", [])
        rounds_seen = f"  rounds: {' '.join(f'{r:.2f}' for r in seen)}, worst {max(seen):.2f}" if seen else ""
        print(
            f"{name:22} {ratio:5.2f}  (target <= {TARGETS[name]})  {'met' if met else 'MISSED'}{rounds_seen}"
        )
    for what in ("backup_rss_mb", "restore_rss_mb"):
        bounded = large[what] < RSS_LIMIT_MB and large[what] <= small[what] * 1.25 + 16
        ok &= bounded
        print(
            f"{what:22} {small[what]:.0f} MB -> {large[what]:.0f} MB  (target < {RSS_LIMIT_MB} MB, flat)  {'met' if bounded else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
