"""`make bench-drill`: the restore drill's measured RTO against the raw tools, on the same data, same run.

Builds the PostgreSQL database of bench/run.py (QB_BENCH_GB, default 1.35: about 1.1 GB on disk), takes
one full backup with the CLI, then in QB_BENCH_ROUNDS rounds (default 3), back to back in alternating
order:
  raw restore   createdb, then pg_restore -j2 of a pg_dump -Fd -Z0 -j2 dump (no decryption, no checks)
  drill         questboard-backup drill: the latest set into a drill database, verified (row counts),
                one SQL smoke check, timed from start to verified (the RTO it reports), then dropped
and reports the median of the drill's RTO, its ratio to the raw restore, and the database size a
1-hour RTO allows at the measured throughput (docs/dr-runbook.md quotes it).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg2  # noqa: E402

from bench.run import CLI, build_database, cli_environment, settle_server, vacuum  # noqa: E402
from tests.servers import PostgresServer  # noqa: E402

#: The drill restores, verifies, checks and drops: at most this much slower than a bare pg_restore.
TARGET_RATIO = 1.5
RTO_SECONDS = 3600


def main() -> int:
    gigabytes = float(os.environ.get("QB_BENCH_GB", "1.35"))
    rounds = int(os.environ.get("QB_BENCH_ROUNDS", "3"))
    work = Path(tempfile.mkdtemp(prefix="qb-bench-drill-"))
    pg = PostgresServer.in_new_folder()
    try:
        pg.start()
        result = measure(pg, gigabytes, rounds, work)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratio = result["drill_rto"] / result["raw_restore"]
    per_gb = result["drill_rto"] / (result["database_bytes"] / 1e9)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    print(f"\nmachine: {machine}")
    print(
        f"database {result['database_bytes'] / 1e9:.2f} GB: raw restore {result['raw_restore']:.1f} s, "
        f"drill RTO {result['drill_rto']:.1f} s ({per_gb:.0f} s per GB), drill wall time with cleanup "
        f"{result['drill_wall']:.1f} s"
    )
    print(f"  a 1-hour RTO allows about {RTO_SECONDS / per_gb:.0f} GB of PostgreSQL at this throughput")
    met = ratio <= TARGET_RATIO
    rounds_seen = " ".join(f"{r:.2f}" for r in result["ratios"])
    print(
        f"drill/raw_restore      {ratio:5.2f}  (target <= {TARGET_RATIO})  {'met' if met else 'MISSED'}  rounds: {rounds_seen}"
    )
    return 0 if met else 1


def measure(pg: PostgresServer, gigabytes: float, rounds: int, work: Path) -> dict[str, object]:
    name = "bench_drill"
    admin = psycopg2.connect(pg.url())
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    print(f"building a {gigabytes} GB database ...", flush=True)
    size = build_database(pg.url(name), gigabytes)
    url = pg.url(name)
    vacuum(url)
    checks = work / "checks.sql"
    checks.write_text("SELECT count(*) > 0 FROM submissions\n")
    env = cli_environment(
        url, work / "backups", BACKUP_DRILL_DATABASE=f"{name}_drill", BACKUP_DRILL_CHECKS_FILE=str(checks)
    )
    cli = CLI
    subprocess.run([cli, "full"], env=env, check=True, capture_output=True)
    raw_dir = work / "raw"
    subprocess.run(["pg_dump", "-Fd", "-Z0", "-j2", "-f", str(raw_dir), "-d", url], check=True)

    def settle() -> None:
        settle_server(admin)

    raw: list[float] = []
    rto: list[float] = []
    wall: list[float] = []
    ratios: list[float] = []

    def raw_restore() -> None:
        settle()
        started = time.monotonic()
        subprocess.run(
            f"createdb --maintenance-db='{pg.url()}' {name}_raw && pg_restore -j2 -d '{pg.url(f'{name}_raw')}' '{raw_dir}'",
            shell=True,
            check=True,
        )
        raw.append(time.monotonic() - started)
        admin.cursor().execute(f"DROP DATABASE {name}_raw WITH (FORCE)")

    def drill() -> None:
        settle()
        started = time.monotonic()
        done = subprocess.run([cli, "drill", "--json"], env=env, capture_output=True, text=True, check=False)
        wall.append(time.monotonic() - started)
        if done.returncode != 0:
            raise SystemExit(f"drill failed: {done.stderr.strip()}")
        rto.append(float(json.loads(done.stdout)["rto_seconds"]))

    for number in range(rounds):
        for step in (raw_restore, drill) if number % 2 == 0 else (drill, raw_restore):
            step()
        ratios.append(rto[-1] / raw[-1])
        print(f"  round {number + 1}: raw restore {raw[-1]:.1f} s, drill RTO {rto[-1]:.1f} s", flush=True)
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()
    return {
        "database_bytes": size,
        "raw_restore": statistics.median(raw),
        "drill_rto": statistics.median(rto),
        "drill_wall": statistics.median(wall),
        "ratios": ratios,
    }


if __name__ == "__main__":
    sys.exit(main())
