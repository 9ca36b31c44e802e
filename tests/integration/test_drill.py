"""Restore drills from the CLI (`backup.sh drill`) against real PostgreSQL and Redis: the latest set is
restored into the drill targets, checked with SQL, timed and cleaned up; production is never touched;
a drill aimed at production is refused; a failing or slow drill alerts and still cleans up."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest
import redis

from questboard_backup.cli import main
from tests.dataset import pg_dump_text, redis_snapshot, tree_state
from tests.integration.conftest import Deployment
from tests.webhook_receiver import WebhookReceiver


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def production_state(deployment: Deployment) -> tuple[object, ...]:
    return (
        pg_dump_text(deployment.database_url),
        redis_snapshot(f"{deployment.redis_base}/0"),
        tree_state(deployment.uploads),
        tree_state(deployment.config),
    )


def databases_like(deployment: Deployment, stem: str) -> set[str]:
    with psycopg2.connect(deployment.pg.url()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (stem.replace("_", "\\_") + "%",)
        )
        return {row[0] for row in cur.fetchall()}


def production_rows(deployment: Deployment) -> int:
    with psycopg2.connect(deployment.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM quests)"
            " + (SELECT count(*) FROM submissions) + (SELECT count(*) FROM rewards.ledger)"
        )
        counted = cur.fetchone()
    assert counted is not None
    return int(counted[0])


def textfile_value(path: Path, name: str) -> float:
    for line in path.read_text().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {path}")


@pytest.fixture
def drill_env(
    deployment: Deployment,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> dict[str, str]:
    """A full backup taken, and the drill targets: a database beside production's, Redis dbs from 8 up
    on the production server, a scratch folder, two SQL checks and the metrics textfile."""
    code, _, err = cli(capsys, "full")
    assert code == 0, err
    checks = tmp_path / "drill-checks.sql"
    checks.write_text(
        "# every quest and user is back\nSELECT count(*) = 25 FROM quests\n\n-- and they join\n"
        "SELECT count(*) > 0 FROM quests q JOIN users u ON u.id = q.posted_by\n"
    )
    env = {
        "BACKUP_DRILL_DATABASE": deployment.database_url.rsplit("/", 1)[1] + "_drill",
        "BACKUP_DRILL_REDIS_URL": f"{deployment.redis_base}/8",
        "BACKUP_DRILL_FILES_ROOT": str(tmp_path / "drills"),
        "BACKUP_DRILL_CHECKS_FILE": str(checks),
        "BACKUP_METRICS_TEXTFILE": str(tmp_path / "textfile" / "questboard_backup.prom"),
    }
    (tmp_path / "drills").mkdir()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_a_drill_restores_the_latest_set_checks_it_times_it_and_cleans_up(
    deployment: Deployment, drill_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = production_state(deployment)
    code, out, err = cli(capsys, "drill", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["status"] == "ok"
    assert report["drilled"] == ["postgres", "redis", "files", "config"] and report["not_drilled"] == []
    # The restore ran for real: rows and keys counted in the drill targets, both checks answered true.
    assert report["components"]["postgres"]["rows"] == production_rows(deployment)
    assert {db["to"] for db in report["components"]["redis"]["dbs"].values()} == {8, 9}
    assert len(report["checks"]) == 2 and all(line.startswith("ok: ") for line in report["checks"])
    assert 0 < report["rto_seconds"] < report["rto_target_seconds"] == 3600 and not report["over_target"]
    # Cleaned up: no drill database (nor a staging or kept copy of it), drill dbs empty, no scratch folder.
    drill_database = drill_env["BACKUP_DRILL_DATABASE"]
    assert databases_like(deployment, drill_database) == set()
    assert f"postgres: dropped database {drill_database}" in report["cleanup"]
    assert redis.Redis.from_url(f"{deployment.redis_base}/8").dbsize() == 0
    assert redis.Redis.from_url(f"{deployment.redis_base}/9").dbsize() == 0
    assert list(Path(drill_env["BACKUP_DRILL_FILES_ROOT"]).iterdir()) == []
    # Production untouched, and the measured RTO exported for Prometheus.
    assert production_state(deployment) == before
    textfile = Path(drill_env["BACKUP_METRICS_TEXTFILE"])
    assert textfile_value(textfile, "restore_drill_duration_seconds") == pytest.approx(
        report["rto_seconds"], abs=1e-3
    )
    assert textfile_value(textfile, "restore_drill_last_success_timestamp") > 0
    assert textfile_value(textfile, "restore_drill_failure_total") == 0


@pytest.mark.parametrize(
    ("setting", "value", "problem"),
    [
        ("BACKUP_DRILL_DATABASE", "{production_db}", "is the production database"),
        ("BACKUP_DRILL_REDIS_URL", "{redis}/0", "is the production instance"),
        # Another spelling of the same server, and a db range that overlaps production's db 1.
        ("BACKUP_DRILL_REDIS_URL", "{redis_by_name}/1", "is the production instance"),
        ("BACKUP_DRILL_FILES_ROOT", "{uploads}/drills", "lies in production's"),
        ("BACKUP_DRILL_FILES_ROOT", "/", "must be a scratch folder, not /"),
    ],
)
def test_a_drill_aimed_at_production_is_refused_in_one_line_and_changes_nothing(
    deployment: Deployment,
    drill_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    value: str,
    problem: str,
) -> None:
    monkeypatch.setenv(
        setting,
        value.format(
            production_db=deployment.database_url.rsplit("/", 1)[1],
            redis=deployment.redis_base,
            redis_by_name=deployment.redis_base.replace("127.0.0.1", "localhost"),
            uploads=deployment.uploads,
        ),
    )
    before = production_state(deployment)
    code, out, err = cli(capsys, "drill")
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1 and problem in err and "Traceback" not in err
    assert production_state(deployment) == before
    assert databases_like(deployment, drill_env["BACKUP_DRILL_DATABASE"]) == set()
    assert redis.Redis.from_url(f"{deployment.redis_base}/8").dbsize() == 0


def test_a_drill_whose_check_fails_cleans_up_counts_the_failure_and_alerts(
    deployment: Deployment,
    drill_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    webhook: WebhookReceiver,
) -> None:
    checks = tmp_path / "failing-checks.sql"
    checks.write_text("SELECT count(*) = 25 FROM quests\nSELECT count(*) = 999 FROM users\n")
    monkeypatch.setenv("BACKUP_DRILL_CHECKS_FILE", str(checks))
    monkeypatch.setenv("BACKUP_ALERT_WEBHOOK_URL", f"{webhook.url}/drill-hook")
    before = production_state(deployment)
    code, out, err = cli(capsys, "drill")
    assert code == 8, out + err
    assert len(err.strip().splitlines()) == 1 and "count(*) = 999 FROM users" in err and "not true" in err
    assert databases_like(deployment, drill_env["BACKUP_DRILL_DATABASE"]) == set()
    assert redis.Redis.from_url(f"{deployment.redis_base}/8").dbsize() == 0
    assert list(Path(drill_env["BACKUP_DRILL_FILES_ROOT"]).iterdir()) == []
    assert production_state(deployment) == before
    assert textfile_value(Path(drill_env["BACKUP_METRICS_TEXTFILE"]), "restore_drill_failure_total") == 1
    post = webhook.next_post()
    assert "restore drill" in post.body["text"] and "count(*) = 999" in post.body["text"]


def test_a_drill_slower_than_the_rto_target_exits_9_and_alerts(
    deployment: Deployment,
    drill_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    webhook: WebhookReceiver,
) -> None:
    # A target of 0 s: every drill is over it (the alert path, without waiting an hour).
    monkeypatch.setenv("BACKUP_DRILL_RTO_SECONDS", "0")
    monkeypatch.setenv("BACKUP_ALERT_WEBHOOK_URL", f"{webhook.url}/drill-hook")
    code, out, err = cli(capsys, "drill", "--json")
    assert code == 9, err
    report = json.loads(out)
    assert report["status"] == "over_target" and report["over_target"]
    assert databases_like(deployment, drill_env["BACKUP_DRILL_DATABASE"]) == set()
    post = webhook.next_post()
    assert "over the 0 s RTO target" in post.body["text"]


def test_components_without_a_drill_target_are_not_drilled_and_no_target_at_all_is_refused(
    deployment: Deployment,
    drill_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BACKUP_DRILL_REDIS_URL")
    monkeypatch.delenv("BACKUP_DRILL_FILES_ROOT")
    before = production_state(deployment)
    code, out, err = cli(capsys, "drill", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["drilled"] == ["postgres"] and report["not_drilled"] == ["redis", "files", "config"]
    assert production_state(deployment) == before
    monkeypatch.delenv("BACKUP_DRILL_DATABASE")
    monkeypatch.delenv("BACKUP_DRILL_CHECKS_FILE")
    code, out, err = cli(capsys, "drill")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no drill target is configured" in err


@pytest.mark.parametrize(
    ("setting", "value", "problem"),
    [
        ("BACKUP_DRILL_DATABASE", "bad name; DROP", "BACKUP_DRILL_DATABASE must be a database name"),
        ("BACKUP_DRILL_REDIS_URL", "http://x", "BACKUP_DRILL_REDIS_URL must be a redis:// or rediss:// URL"),
        ("BACKUP_DRILL_FILES_ROOT", "relative/dir", "BACKUP_DRILL_FILES_ROOT must be an absolute path"),
        (
            "BACKUP_DRILL_CHECKS_FILE",
            "/nonexistent/checks.sql",
            "BACKUP_DRILL_CHECKS_FILE /nonexistent/checks.sql",
        ),
        ("BACKUP_DRILL_RTO_SECONDS", "soon", "BACKUP_DRILL_RTO_SECONDS must be a whole number"),
    ],
)
def test_bad_drill_settings_are_refused_in_one_line(
    deployment: Deployment,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    value: str,
    problem: str,
) -> None:
    monkeypatch.setenv(setting, value)
    code, out, err = cli(capsys, "drill")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and problem in err
