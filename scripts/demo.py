"""`make demo`: back up a throwaway Quest Board and restore it elsewhere, then prove the copies identical.

Starts PostgreSQL and Redis on free ports, loads the sample dataset, runs `questboard-backup full`,
restores into a second database, Redis logical dbs 8+ and a second folder, compares, and stops all.
Then the guide's three admin API calls against `make api` (the offline stack): start a full backup,
poll its status, download it with plain HTTP, and `backup.sh verify` the download.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg2  # noqa: E402

from questboard_backup.admin.tokens import new_token  # noqa: E402
from questboard_backup.sources.files.component import tree_listing  # noqa: E402
from tests.dataset import (  # noqa: E402 - needs the repo on sys.path first
    large_objects,
    load_postgres,
    load_redis,
    make_files,
    pg_dump_text,
    redis_snapshot,
)
from tests.local_api import AdminClient, local_api, verify  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402


def run(cli: list[str], env: dict[str, str]) -> str:
    print(f"$ questboard-backup {' '.join(cli)}")
    done = subprocess.run(
        [str(REPO / "scripts" / "backup.sh"), *cli], env=env, capture_output=True, text=True
    )
    print("  " + done.stdout.strip().replace("\n", "\n  "))
    if done.returncode != 0:
        raise SystemExit(
            f"demo failed: questboard-backup {cli[0]} exited {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout


def admin_api_calls(work: Path) -> bool:
    """The guide's three calls against the admin API served offline (`make api`): start a full backup,
    poll its status until it is done, get its download URLs and fetch them into a folder; then verify
    that folder as an operator would."""
    print("\nthe admin API, offline (`make api`: the same authorizer and handler as on AWS):")
    work.mkdir(parents=True)
    token = new_token()
    try:
        with local_api(token, work) as api:
            print(f"$ export ADMIN_TOKEN={token}")
            client = AdminClient(api.url, token, echo=print)
            started = client.start_backup("full")
            status = client.wait_until_done(started["backup_id"])
            if (status["last_success"]["full"] or {}).get("id") != started["backup_id"]:
                print(f"  the backup did not succeed: last failure {status['last_failure']['full']}")
                return False
            folder = client.download(started["backup_id"], work / "downloads")
            return verify(folder, api.environment, echo=print).returncode == 0
    except RuntimeError as error:  # the API did not start, or a call was refused
        print(f"  {error}")
        return False


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="questboard-demo-"))
    pg = PostgresServer.in_new_folder()
    rd = RedisServer(work / "redis")
    try:
        print(f"starting throwaway PostgreSQL and Redis (work folder {work})")
        pg.start()
        rd.start()
        admin = psycopg2.connect(pg.url())
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE questboard")
        load_postgres(pg.url("questboard"))
        load_redis(rd.url(0))
        uploads, config = make_files(work / "app")
        env = {
            **os.environ,
            "DATABASE_URL": pg.url("questboard"),
            "REDIS_URL": rd.url(0),
            "BACKUP_FILES_PATHS": str(uploads),
            "BACKUP_CONFIG_PATHS": str(config),
            "BACKUP_DIR": str(work / "backups"),
            "BACKUP_HOSTNAME": "demo",
            "BACKUP_ENCRYPTION_KEY": secrets.token_urlsafe(32),
            "BACKUP_S3_BUCKET": "",
        }
        run(["full"], env)
        run(["status"], env)
        restored = work / "restored"
        run(
            [
                "restore",
                "latest",
                "--to-database-url",
                pg.url("questboard_restored"),
                "--to-redis-url",
                rd.url(8),
                "--to-files-root",
                str(restored),
            ],
            env,
        )

        checks = {
            "PostgreSQL schema and data (pg_dump)": pg_dump_text(pg.url("questboard"))
            == pg_dump_text(pg.url("questboard_restored")),
            "PostgreSQL large objects": large_objects(pg.url("questboard"))
            == large_objects(pg.url("questboard_restored")),
        }
        base = f"redis://127.0.0.1:{rd.port}"
        source, target = redis_snapshot(base, range(0, 8)), redis_snapshot(base, range(8, 16))
        checks["Redis keys, values and TTLs (db 0,1 -> 8,9)"] = source == {
            db - 8: keys for db, keys in target.items()
        }
        checks["uploads folder"] = tree_listing(uploads) == tree_listing(restored / uploads.relative_to("/"))
        checks["config folder"] = tree_listing(config) == tree_listing(restored / config.relative_to("/"))
        print("\nsummary:")
        for what, same in checks.items():
            print(f"  {'identical' if same else 'DIFFERENT':9}  {what}")
        if not all(checks.values()):
            print("demo FAILED: the restored copy differs")
            return 1
        if not admin_api_calls(work / "api"):
            print("demo FAILED: the admin API's download did not verify")
            return 1
        print("demo passed: the backup restored into fresh targets is identical to the source")
        return 0
    finally:
        rd.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
