"""The operator CLI end to end against real PostgreSQL and Redis: backup, list, verify, restore, refusals."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg2
import pytest
import redis

from questboard_backup.cli import build_parser, main
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.manifest import open_manifest, parse_time, seal_manifest
from questboard_backup.sources.files.component import tree_listing
from tests.dataset import large_objects, pg_dump_text, redis_snapshot, tree_state
from tests.integration.conftest import Deployment
from tests.servers import RedisServer, postgres_major, wait_while_running

REPO = Path(__file__).resolve().parents[2]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def full_backup(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    return json.loads(out)


def set_dirs(backup_dir: Path) -> list[Path]:
    return [
        p
        for tier in ("daily", "weekly", "monthly", "incremental")
        for p in (backup_dir / tier).glob("*")
        if p.is_dir()
    ]


def databases(url: str) -> set[str]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {row[0] for row in cur.fetchall()}


def change_the_targets(deployment: Deployment) -> dict[str, object]:
    """Change every target after the backup, so that a restore which went through, even partly, shows;
    returns what they hold now, databases of the server included (a staging or pre-restore copy)."""
    with psycopg2.connect(deployment.database_url) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM rewards.ledger WHERE id IN (SELECT id FROM rewards.ledger LIMIT 5)")
    redis.Redis.from_url(deployment.env["REDIS_URL"]).set(b"changed-after-the-backup", b"1")
    (deployment.uploads / "added-after-the-backup.txt").write_text("new")
    return {
        "postgres": pg_dump_text(deployment.database_url),
        "databases": databases(deployment.database_url),
        "redis": redis_snapshot(deployment.redis_base, range(16)),
        "files": tree_listing(deployment.uploads),
    }


def assert_untouched(deployment: Deployment, before: dict[str, object]) -> None:
    assert pg_dump_text(deployment.database_url) == before["postgres"]
    assert databases(deployment.database_url) == before["databases"]
    assert redis_snapshot(deployment.redis_base, range(16)) == before["redis"]
    assert tree_listing(deployment.uploads) == before["files"]


def test_a_full_backup_restores_into_fresh_targets_identically(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    began = datetime.now(UTC).replace(microsecond=0)
    result = full_backup(capsys)
    ended = datetime.now(UTC)
    backup_id = str(result["backup_id"])
    # questboard_{type}_{YYYYMMDD_HHMMSS}, the time in UTC
    assert re.fullmatch(r"questboard_full_\d{8}_\d{6}", backup_id), backup_id
    assert began <= datetime.strptime(backup_id[-15:], "%Y%m%d_%H%M%S").replace(tzinfo=UTC) <= ended
    (set_dir,) = set_dirs(deployment.backup_dir)
    assert set_dir.name == backup_id
    body = json.loads((set_dir / "manifest.json").read_text())["manifest"]
    assert (body["backup_id"], body["type"], body["hostname"]) == (backup_id, "full", "test-host")
    assert set_dir.parent.name == body["tier"]
    assert began <= parse_time(body["started_at"]) <= parse_time(body["finished_at"]) <= ended
    facts = {c["name"]: c["facts"] for c in body["components"]}
    assert facts["postgres"]["version"].startswith(f"{postgres_major()}.")
    assert (
        facts["redis"]["version"] == redis.Redis.from_url(deployment.env["REDIS_URL"]).info()["redis_version"]
    )
    log = next((deployment.backup_dir / "logs").glob("backup_*.log")).read_text()
    assert f"backup started id={backup_id}" in log and f"backup finished id={backup_id}" in log
    components = cast(dict[str, dict[str, Any]], result["components"])
    postgres = components["postgres"]
    # The largest tables' rows, dumped beside the main stream on two more: users (its email is citext,
    # an extension type) as a data-only archive, quests and submissions as binary COPY; the server's
    # roles on the last.
    parts = [f"postgres.part{n}.dump.zst.enc" for n in range(1, len(postgres["objects"]))]
    assert postgres["objects"] == ["postgres.dump.zst.enc", *parts] and len(parts) == 3
    assert facts["postgres"]["roles_part"] == 3
    assert sorted(p.name for p in set_dir.iterdir()) == sorted(
        [
            "manifest.json",
            *postgres["objects"],
            "redis.rdbx.zst.enc",
            "files.tar.zst.enc",
            "config.tar.zst.enc",
        ]
    )
    assert postgres["stored_bytes"] == sum((set_dir / name).stat().st_size for name in postgres["objects"])
    assert result["stored_bytes"] == sum(c["stored_bytes"] for c in components.values())
    assert list((deployment.backup_dir / "logs").glob("backup_*.log"))
    assert not list((deployment.backup_dir / "temp").iterdir())

    target_db = (
        deployment.database_url.rsplit("/", 1)[0] + "/" + deployment.database_url.rsplit("/", 1)[1] + "_copy"
    )
    restored_root = tmp_path / "restored"
    code, out, err = cli(
        capsys,
        "restore",
        backup_id,
        "--to-database-url",
        target_db,
        "--to-redis-url",
        f"{deployment.redis_base}/8",
        "--to-files-root",
        str(restored_root),
    )
    assert code == 0, err
    assert "complete" in out
    assert pg_dump_text(deployment.database_url) == pg_dump_text(target_db)
    assert large_objects(deployment.database_url) == large_objects(target_db)
    source, target = (
        redis_snapshot(deployment.redis_base, range(0, 8)),
        redis_snapshot(deployment.redis_base, range(8, 16)),
    )
    assert source and source == {db - 8: keys for db, keys in target.items()}
    for tree in (deployment.uploads, deployment.config):
        assert tree_state(tree) == tree_state(restored_root / tree.relative_to("/"))


def test_status_and_the_bare_restore_command_list_the_backup(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    backup_id = full_backup(capsys)["backup_id"]
    code, out, _ = cli(capsys, "status", "--json")
    status = json.loads(out)
    assert code == 0 and status["backups"] == 1 and status["last_success"]["id"] == backup_id
    assert status["running"] is None
    code, out, _ = cli(capsys, "restore")
    assert code == 0 and backup_id in out
    code, out, _ = cli(capsys, "list", "--json")
    assert [b["id"] for b in json.loads(out)["backups"]] == [backup_id]


def test_verify_reads_every_component_back(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    full_backup(capsys)
    code, out, err = cli(capsys, "verify", "latest", "--json")
    assert code == 0, err
    assert set(json.loads(out)["checked"]) == {"postgres", "redis", "files", "config"}


def test_the_compression_level_setting_changes_what_is_stored_and_any_level_restores(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = {}
    for level in ("-7", "9"):
        monkeypatch.setenv("BACKUP_COMPRESSION_LEVEL", level)
        backup = full_backup(capsys)
        stored[level] = {name: c["stored_bytes"] for name, c in backup["components"].items()}  # type: ignore[attr-defined]
        code, _out, err = cli(capsys, "verify", "latest", "--json")
        assert code == 0, err
        for folder in set_dirs(deployment.backup_dir):  # the next run may come in the same second
            shutil.rmtree(folder)
    # The fastest level stores more of the same data than level 9, component by component.
    assert all(stored["-7"][name] > stored["9"][name] for name in ("postgres", "redis", "files", "config"))


def test_disabled_backups_refuse_with_exit_zero_and_write_nothing(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_ENABLED", "false")
    code, out, _ = cli(capsys, "full")
    assert code == 0 and "disabled" in out
    assert not deployment.backup_dir.exists()


def test_a_missing_setting_is_named_before_any_work(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BACKUP_ENCRYPTION_KEY")
    code, _out, err = cli(capsys, "full")
    assert code == 2 and err.strip() == "error: BACKUP_ENCRYPTION_KEY is not set"
    assert not deployment.backup_dir.exists()


@pytest.mark.parametrize("variable", ["DATABASE_URL", "REDIS_URL"])
def test_an_unreachable_source_fails_cleanly_and_leaves_nothing(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    from tests.servers import free_port

    scheme = "postgresql" if variable == "DATABASE_URL" else "redis"
    monkeypatch.setenv(variable, f"{scheme}://user:pa55word@127.0.0.1:{free_port()}/0")
    code, _, err = cli(capsys, "full")
    assert code == 4, err
    assert err.count("\n") == 1 and "pa55word" not in err
    assert set_dirs(deployment.backup_dir) == []
    assert not any((deployment.backup_dir / "temp").iterdir())


def test_on_a_terminal_a_backup_says_nothing_but_its_result_and_a_failure_one_line(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI as an operator or cron runs it, in its own process: progress goes to the run log (and to
    stderr only with -v), a failure is one line on stderr, and the run log records it."""
    from tests.servers import free_port

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "questboard_backup.cli", *args],
            env={**os.environ, **deployment.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = run("full")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "questboard_full_" in done.stdout
    done = run("-v", "verify", "latest")
    assert done.returncode == 0 and "INFO questboard_backup." in done.stderr, done.stderr

    dead = f"postgresql://user:pa55word@127.0.0.1:{free_port()}/db"
    failed = run("full", DATABASE_URL=dead)
    assert failed.returncode == 4
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: cannot connect to PostgreSQL")
    assert "pa55word" not in failed.stderr and "Traceback" not in failed.stderr
    newest = max((deployment.backup_dir / "logs").glob("backup_*.log"), key=lambda p: p.stat().st_mtime_ns)
    last = newest.read_text().strip().splitlines()[-1]
    assert (
        "ERROR questboard_backup.runlog: run failed: SourceUnreachableError" in last
        and "pa55word" not in last
    )


def test_an_unwritable_backup_dir_fails_with_a_storage_error(
    deployment: Deployment,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BACKUP_DIR", str(blocker / "backups"))
    code, _, err = cli(capsys, "full")
    assert code == 5, err
    assert str(blocker) in err and err.count("\n") == 1


def _component_path(backup_dir: Path, object_name: str) -> Path:
    (set_dir,) = set_dirs(backup_dir)
    return set_dir / object_name


@pytest.mark.parametrize(
    "object_name",
    [
        "postgres.dump.zst.enc",
        "postgres.part1.dump.zst.enc",
        "redis.rdbx.zst.enc",
        "files.tar.zst.enc",
        "config.tar.zst.enc",
        "manifest.json",
    ],
)
def test_a_corrupted_byte_in_any_object_is_caught_before_restore_touches_anything(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], object_name: str, tmp_path: Path
) -> None:
    backup_id = str(full_backup(capsys)["backup_id"])
    path = _component_path(deployment.backup_dir, object_name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
    code, _, err = cli(capsys, "verify", backup_id)
    assert code == 6, err
    assert err.count("\n") == 1
    before = change_the_targets(deployment)
    code, _, err = cli(capsys, "restore", backup_id, "--to-files-root", str(tmp_path / "restored"))
    assert code == 6, err
    assert_untouched(deployment, before)
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").rglob("*.txt"))


def test_a_truncated_or_missing_component_fails_verification(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    backup_id = str(full_backup(capsys)["backup_id"])
    path = _component_path(deployment.backup_dir, "redis.rdbx.zst.enc")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    code, _, err = cli(capsys, "verify", backup_id)
    assert code == 6 and "redis" in err
    path.unlink()
    code, _, err = cli(capsys, "verify", backup_id)
    assert code == 6 and "missing" in err


def test_a_wrong_key_is_refused_and_nothing_is_restored(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backup_id = str(full_backup(capsys)["backup_id"])
    before = change_the_targets(deployment)
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", "some-other-key-entirely")
    code, _, err = cli(capsys, "restore", backup_id)
    assert code == 6 and "BACKUP_ENCRYPTION_KEY" in err
    assert "some-other-key-entirely" not in err
    assert_untouched(deployment, before)


def test_a_restore_whose_data_disagrees_with_the_manifest_exits_8_and_swaps_nothing_in(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """A set whose data and manifest disagree, though both authenticate (as a faulty dump would leave
    it): here a manifest re-sealed by the key's holder with one table's row count off by one."""
    backup_id = str(full_backup(capsys)["backup_id"])
    (set_dir,) = set_dirs(deployment.backup_dir)
    path = set_dir / "manifest.json"
    wrapper = PassphraseKeyWrapper(deployment.env["BACKUP_ENCRYPTION_KEY"])
    manifest, data_key = open_manifest(path.read_bytes(), wrapper, backup_id)
    postgres = manifest.component("postgres")
    facts = {**postgres.facts, "tables": {**postgres.facts["tables"], "rewards.ledger": 61}}
    forged = dataclasses.replace(
        manifest,
        components=tuple(
            dataclasses.replace(c, facts=facts) if c.name == "postgres" else c for c in manifest.components
        ),
    )
    path.write_bytes(seal_manifest(forged, data_key))
    assert cli(capsys, "verify", backup_id)[0] == 0  # every stream is sound: only a restore can tell

    before = change_the_targets(deployment)
    code, _, err = cli(capsys, "restore", backup_id)
    assert code == 8, err
    assert err.count("\n") == 1 and "rewards.ledger" in err
    assert_untouched(deployment, before)


def test_restore_in_place_keeps_the_previous_database_for_rollback(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    backup_id = str(full_backup(capsys)["backup_id"])
    with psycopg2.connect(deployment.database_url) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM rewards.ledger")
    redis.Redis.from_url(deployment.env["REDIS_URL"]).set(b"changed-after-the-backup", b"1")
    (deployment.uploads / "added-after-the-backup.txt").write_text("new")
    others = redis_snapshot(deployment.redis_base, range(16)), tree_listing(deployment.uploads)
    code, _, err = cli(capsys, "restore", backup_id, "--only", "postgres")
    assert code == 0, err
    # --only: Redis and the files were left as they are, changes since the backup included.
    assert (redis_snapshot(deployment.redis_base, range(16)), tree_listing(deployment.uploads)) == others
    with psycopg2.connect(deployment.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM rewards.ledger")
        assert cur.fetchone() == (60,)
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (deployment.database_url.rsplit("/", 1)[1] + "_pre_restore_%",),
        )
        assert len(cur.fetchall()) == 1


def test_restore_accepts_a_local_path_and_the_seeds_tar_gz_spelling(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    backup_id = str(full_backup(capsys)["backup_id"])
    (set_dir,) = set_dirs(deployment.backup_dir)
    for reference in (str(set_dir), f"{set_dir}.tar.gz", str(set_dir / "manifest.json")):
        code, out, err = cli(capsys, "verify", reference)
        assert code == 0 and backup_id in out, err
    code, _, err = cli(capsys, "verify", "/nonexistent/daily/questboard_full_20240101_020000.tar.gz")
    assert code == 7 and err.count("\n") == 1


def test_killing_a_backup_mid_run_leaves_no_backup_and_a_second_run_is_refused_meanwhile(
    deployment: Deployment, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The run is held twice: first on a lock pg_dump must wait for (its sources are checked by then);
    # then, with the Redis server stopped (SIGSTOP), that lock is released: the PostgreSQL component
    # streams through to its stored objects and the run hangs in the middle of the next component.
    temp = deployment.backup_dir / "temp"
    assert redis_server.process is not None
    blocker = psycopg2.connect(deployment.database_url)
    blocker.cursor().execute("BEGIN; LOCK TABLE quests IN ACCESS EXCLUSIVE MODE")
    process = subprocess.Popen(
        [sys.executable, "-m", "questboard_backup.cli", "full"],
        env={**os.environ, **deployment.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )

    try:
        wait_while_running(
            process, lambda: list(temp.glob("*/.*.partial")), "the backup to start writing", 60
        )
        redis_server.process.send_signal(signal.SIGSTOP)
        blocker.rollback()
        wait_while_running(
            process,
            lambda: list(temp.glob("*/postgres.part2.dump.zst.enc")) and list(temp.glob("*/.redis*.partial")),
            "the backup to store its PostgreSQL objects and go on",
            60,
        )
        assert sum(p.stat().st_size for p in temp.glob("*/postgres*.enc")) > 4096  # rows, not just headers
        code, _, err = cli(capsys, "full")
        assert code == 3 and "locked" in err
    finally:
        # Redis first: it is the session's server, and every later test needs it running.
        redis_server.process.send_signal(signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        blocker.rollback()
        blocker.close()
    code, out, _ = cli(capsys, "status", "--json")
    assert json.loads(out)["backups"] == 0
    assert set_dirs(deployment.backup_dir) == []
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    assert not any(temp.iterdir())
    code, out, _ = cli(capsys, "status", "--json")
    assert json.loads(out)["backups"] == 1


def test_backup_sh_is_a_thin_wrapper_with_help(deployment: Deployment) -> None:
    done = subprocess.run([str(REPO / "scripts" / "backup.sh"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("full", "incremental", "status", "restore", "verify"):
        assert command in done.stdout
    done = subprocess.run(
        [str(REPO / "scripts" / "backup.sh"), "restore", "--help"], capture_output=True, text=True
    )
    assert "--to-database-url" in done.stdout and "exit codes" in done.stdout
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"full", "incremental", "status", "list", "verify", "restore", "health"} <= set(commands)
    for command in commands:
        done = subprocess.run(
            [str(REPO / "scripts" / "backup.sh"), command, "--help"], capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stdout.startswith(f"usage: questboard-backup {command}"), command


def test_health_passes_after_a_backup_and_flags_an_old_one(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "health", "--json")
    assert code == 1 and "no backup has ever succeeded" in json.loads(out)["problems"]
    full_backup(capsys)
    code, out, _ = cli(capsys, "health", "--json")
    report = json.loads(out)
    assert code == 0 and report["healthy"] is True
    assert report["checks"]["postgres"] == report["checks"]["redis"] == "ok"
    code, out, _ = cli(capsys, "health", "--max-age-hours", "0")
    assert code == 1 and "RPO at risk" in out


def test_health_check_sh_reports_an_unreachable_database(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.servers import free_port

    env = {**os.environ, **deployment.env, "DATABASE_URL": f"postgresql://u:pw@127.0.0.1:{free_port()}/db"}
    done = subprocess.run(
        [str(REPO / "scripts" / "health-check.sh")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "PROBLEM: cannot connect to PostgreSQL" in done.stdout


def test_a_dead_runs_partial_files_in_temp_are_removed_by_the_next_backup(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    leftover = deployment.backup_dir / "temp" / "questboard_full_20200101_000000"
    leftover.mkdir(parents=True)
    (leftover / ".postgres.dump.zst.enc.partial").write_bytes(b"sealed bytes of a killed run")
    full_backup(capsys)
    assert not any((deployment.backup_dir / "temp").iterdir())


def test_verify_prints_the_roles_the_restore_target_must_have(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = full_backup(capsys)
    code, out, err = cli(capsys, "verify", str(backup["backup_id"]))
    assert code == 0, err
    manifest_path = deployment.backup_dir / str(backup["tier"]) / str(backup["backup_id"]) / "manifest.json"
    roles = json.loads(manifest_path.read_text())["manifest"]["components"][0]["facts"]["roles"]
    assert roles, "the manifest records the roles the database's objects belong to"
    assert f"postgres: roles: {', '.join(roles)}" in out
