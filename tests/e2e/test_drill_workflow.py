"""The monthly restore drill through the synthesized restore workflow, in drill mode, against real
PostgreSQL and Redis: the latest set into the stack's drill targets, checked with SQL, timed, cleaned
up; a drill aimed at production is refused; a failing drill is cleaned up and alerted on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from infra.constants import DRILL_INPUT
from tests.dataset import pg_dump_text, redis_snapshot, tree_state
from tests.e2e.test_workflows import emitted_metrics
from tests.offline import World


def production(world: World) -> tuple[object, ...]:
    base = f"redis://127.0.0.1:{world.redis.port}"
    return (
        pg_dump_text(world.database_url),
        redis_snapshot(base, range(0, 8)),
        tree_state(world.uploads),
        tree_state(world.config),
    )


def drill_leftovers(world: World, drill_database: str, scratch: Path) -> list[str]:
    """Anything a drill left: its database (or a staging or kept copy), keys in dbs 8+, scratch files."""
    found = []
    with psycopg2.connect(world.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (drill_database.replace("_", "\\_") + "%",),
        )
        found += [f"database {row[0]}" for row in cur.fetchall()]
    for db in range(8, 16):
        if redis.Redis(port=world.redis.port, db=db).dbsize():
            found.append(f"redis db {db}")
    found += [f"file {path}" for path in scratch.iterdir()]
    return found


@pytest.fixture
def drilling(world: World, tmp_path: Path) -> tuple[World, str, Path]:
    """A full backup taken, and the stack's drill settings: a database beside production's, Redis db 8
    (the backup's dbs 0 and 1 into 8 and 9), a scratch folder and one SQL check."""
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    drill_database = world.database_url.rsplit("/", 1)[1] + "_drill"
    scratch = tmp_path / "drills"
    scratch.mkdir()
    world.settings = replace(
        world.settings,
        drill_database=drill_database,
        drill_redis_db=8,
        drill_files_root=scratch,
        drill_checks=("SELECT count(*) = 25 FROM quests", "SELECT count(*) > 0 FROM users"),
    )
    world.install()
    return world, drill_database, scratch


def summary(world: World) -> dict[str, Any]:
    return dict(world.install().catalog_table().status_page(1).summary)  # type: ignore[union-attr]


def test_the_scheduled_drill_restores_checks_times_and_cleans_up(
    drilling: tuple[World, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    world, drill_database, scratch = drilling
    before = production(world)
    capsys.readouterr()
    result = world.run("restore", dict(DRILL_INPUT))
    assert result["status"] == "SUCCEEDED", result.get("cause")
    report = json.loads(result["output"])["report"]["drill"]
    assert report["drilled"] == ["postgres", "redis", "files", "config"] and report["not_drilled"] == []
    assert report["checks"] == ["ok: SELECT count(*) = 25 FROM quests", "ok: SELECT count(*) > 0 FROM users"]
    assert 0 < report["rto_seconds"] < 3600 and not report["over_target"]
    assert f"postgres: dropped database {drill_database}" in report["cleanup"]
    assert drill_leftovers(world, drill_database, scratch) == []
    assert production(world) == before
    emitted = emitted_metrics(capsys.readouterr().out)
    assert {"restore_drill_last_success_timestamp", "restore_drill_duration_seconds"} <= set(emitted)
    assert "restore_success_total" not in emitted  # a drill is not a restore of production
    recorded = summary(world)
    assert recorded["drill_last_success"] and recorded["drill_duration_seconds"] > 0
    assert not recorded.get("restore_last_success") and world.alerts() == []


def test_a_drill_whose_target_is_the_production_database_is_refused_and_alerted(
    drilling: tuple[World, str, Path],
) -> None:
    world, _, scratch = drilling
    production_db = world.database_url.rsplit("/", 1)[1]
    world.settings = replace(world.settings, drill_database=production_db)
    world.install()
    before = production(world)
    result = world.run("restore", dict(DRILL_INPUT))
    assert result["status"] == "FAILED"
    assert result["error"] == "ConfigurationError" and "is the production database" in result["cause"]
    assert production(world) == before
    assert drill_leftovers(world, production_db + "_restore", scratch) == []
    (alert,) = world.alerts()
    assert "restore drill of" in alert["Subject"] and "is the production database" in alert["Message"]
    assert summary(world)["drill_failures"] == 1


def test_a_drill_on_production_redis_dbs_is_refused(drilling: tuple[World, str, Path]) -> None:
    world, drill_database, scratch = drilling
    world.settings = replace(world.settings, drill_redis_db=1)  # the backup's dbs 0, 1 into 1, 2
    world.install()
    before = production(world)
    result = world.run("restore", dict(DRILL_INPUT))
    assert result["status"] == "FAILED" and "is the production instance" in result["cause"]
    assert production(world) == before
    assert drill_leftovers(world, drill_database, scratch) == []


def test_a_drill_whose_check_fails_is_cleaned_up_counted_and_alerted(
    drilling: tuple[World, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    world, drill_database, scratch = drilling
    world.settings = replace(world.settings, drill_checks=("SELECT count(*) = 999 FROM users",))
    world.install()
    before = production(world)
    capsys.readouterr()
    result = world.run("restore", dict(DRILL_INPUT))
    assert result["status"] == "FAILED"
    assert result["error"] == "RestoreVerificationError" and "count(*) = 999" in result["cause"]
    assert drill_leftovers(world, drill_database, scratch) == []
    assert production(world) == before
    assert "restore_drill_failure_total" in emitted_metrics(capsys.readouterr().out)
    (alert,) = world.alerts()
    assert "restore drill of" in alert["Subject"] and f"dropped database {drill_database}" in alert["Message"]
    assert summary(world)["drill_failures"] == 1


def test_a_drill_slower_than_the_rto_target_alerts(drilling: tuple[World, str, Path]) -> None:
    world, drill_database, scratch = drilling
    world.settings = replace(world.settings, drill_rto_seconds=0)  # every drill is over a 0 s target
    world.install()
    result = world.run("restore", dict(DRILL_INPUT))
    assert result["status"] == "SUCCEEDED", result.get("cause")
    assert json.loads(result["output"])["report"]["drill"]["over_target"] is True
    (alert,) = world.alerts()
    assert "RtoTargetExceeded" in alert["Subject"] and "over the 0 s RTO target" in alert["Message"]
    assert drill_leftovers(world, drill_database, scratch) == []


def test_a_drill_request_naming_its_own_targets_is_refused(drilling: tuple[World, str, Path]) -> None:
    world, _, _ = drilling
    before = production(world)
    result = world.run("restore", {**DRILL_INPUT, "targets": {"database": "elsewhere"}})
    assert result["status"] == "FAILED" and "drill targets" in result["cause"]
    assert production(world) == before
