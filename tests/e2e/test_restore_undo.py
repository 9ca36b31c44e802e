"""The restore workflow is all or nothing (issue 10, points 3-5): a component that fails to stage after
PostgreSQL was staged leaves every target as it was, the failure path removes the staging database and
says what it undid, and a component without a target here is refused by name before anything."""

from __future__ import annotations

from dataclasses import replace

import psycopg2
import redis

from tests.dataset import pg_dump_text, redis_snapshot
from tests.e2e.conftest import HOSTNAME
from tests.offline import World


def _databases(url: str) -> list[str]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database ORDER BY datname")
        names = [row[0] for row in cur.fetchall()]
    conn.close()
    return names


def _change_after_backup(world: World) -> None:
    with psycopg2.connect(world.database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE after_backup (id int)")
    conn.close()
    redis.Redis(port=world.redis.port).set(b"after-backup", b"1")


def test_a_redis_stage_failure_after_postgres_was_staged_leaves_everything_as_it_was(world: World) -> None:
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    _change_after_backup(world)
    base = f"redis://127.0.0.1:{world.redis.port}"
    before = (pg_dump_text(world.database_url), redis_snapshot(base), _databases(world.database_url))
    client = redis.Redis(port=world.redis.port)
    used = int(client.info("memory")["used_memory"])
    # A Redis without room for the restored keys: its writes fail with OOM, as a full ElastiCache node's do.
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used + 1024))
    try:
        result = world.run("restore", {"backup": "latest", "only": ["postgres", "redis"]})
    finally:
        client.config_set("maxmemory", "0")
    assert result["status"] == "FAILED"
    history = world.client("stepfunctions").get_execution_history(executionArn=result["executionArn"])
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in history["events"] if "stateEnteredEventDetails" in e
    ]
    assert "StageComponent" in entered and "Swap" not in entered and "HandleFailure" in entered
    assert (pg_dump_text(world.database_url), redis_snapshot(base), _databases(world.database_url)) == before
    assert not [name for name in _databases(world.database_url) if "_restore_" in name]
    (alert,) = world.alerts()
    assert "postgres: " in alert["Message"], "the alert says what the failure path undid"
    assert f"{HOSTNAME}/locks/backup.json" not in world.objects(f"{HOSTNAME}/"), "the lock was given back"
    # Counted where the admin API's /metrics reads it (backup_restore_failure_total).
    summary = world.install().catalog_table().status_page(1).summary  # type: ignore[union-attr]
    assert summary["restore_failures"] == 1 and "restore_last_success" not in summary


def test_a_component_without_a_target_here_is_refused_by_name_before_anything_is_touched(
    world: World,
) -> None:
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    _change_after_backup(world)
    before = (pg_dump_text(world.database_url), _databases(world.database_url))
    world.settings = replace(world.settings, redis_secret_arn="")
    world.install()
    result = world.run("restore", {"backup": "latest", "only": ["postgres", "redis"]})
    assert result["status"] == "FAILED"
    assert result["error"] == "ConfigurationError"
    assert "no restore target configured for redis" in result["cause"]
    history = world.client("stepfunctions").get_execution_history(executionArn=result["executionArn"])
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in history["events"] if "stateEnteredEventDetails" in e
    ]
    assert "StageComponent" not in entered
    assert (pg_dump_text(world.database_url), _databases(world.database_url)) == before


def test_a_restore_that_cannot_fit_in_one_staging_invocation_is_refused_at_validate(world: World) -> None:
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    _change_after_backup(world)
    before = (pg_dump_text(world.database_url), _databases(world.database_url))
    # As if the staging function had 20 s: the fixed cost of a component alone is 30 s.
    world.settings = replace(world.settings, restore_stage_timeout_seconds=20)
    world.install()
    result = world.run("restore", {"backup": "latest"})
    assert result["status"] == "FAILED"
    assert result["error"] == "DeadlineExceededError", result.get("cause")
    assert "does not fit in one staging invocation (20 s)" in result["cause"]
    history = world.client("stepfunctions").get_execution_history(executionArn=result["executionArn"])
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in history["events"] if "stateEnteredEventDetails" in e
    ]
    assert "StageComponent" not in entered
    assert (pg_dump_text(world.database_url), _databases(world.database_url)) == before


def test_a_failure_after_swap_finishes_forwards_instead_of_undoing_part_of_the_restore(world: World) -> None:
    """Swap put PostgreSQL in place (its settle did not happen), then a later step failed: the failure
    path keeps the restored database and settles it, rather than swapping some components back."""
    from lambdas import restore_component, restore_failure, restore_resolve, restore_validate
    from lambdas.dependencies import dependencies
    from lambdas.models import RestoreState
    from lambdas.restore_support import options_for

    def call(module: object, event: dict[str, object]) -> dict[str, object]:
        from tests.lambda_runtime import FakeContext

        return dict(module.handler(event, FakeContext(module.__name__)))  # type: ignore[attr-defined]

    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    restored_dump = pg_dump_text(world.database_url)
    _change_after_backup(world)
    resolved = call(restore_resolve, {"backup": "latest", "only": ["postgres"]})
    validated = call(restore_validate, resolved)
    call(restore_component, {**resolved, "component": "postgres"})
    state = RestoreState.model_validate(resolved["restore"])
    target = dependencies().restore_target("postgres")
    assert target is not None
    swapped = target.swap_in(options_for(state))  # then the invocation "died" before settling

    result = call(
        restore_failure,
        {
            **resolved,
            "validated": validated,
            "swapped": {"components": {"postgres": swapped}},
            "error": {"Error": "States.Timeout"},
        },
    )
    assert result["undone"] == ["nothing undone: every component was restored; check the targets"]
    assert pg_dump_text(world.database_url) == restored_dump
    previous = f"{world.database_url.rsplit('/', 1)[1]}_pre_restore_{state.timestamp}"
    assert previous in _databases(world.database_url)
    with psycopg2.connect(world.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (previous,))
        assert cur.fetchone() == (True,), "settled: the previous copy is open for inspection"
    conn.close()


def test_a_restore_holds_the_lock_backups_take_and_waits_for_none(world: World) -> None:
    """Validate takes the shared lock: a restore while a backup (or another restore) runs is refused
    before anything is touched; a finished restore gives the lock back (a failed one: the test above)."""
    backup = world.run("backup", {"type": "full"})
    assert backup["status"] == "SUCCEEDED", backup.get("cause")
    _change_after_backup(world)
    before = (pg_dump_text(world.database_url), _databases(world.database_url))
    deps = world.install()
    token = deps.lock().acquire("a backup running now")
    refused = world.run("restore", {"backup": "latest"})
    assert (refused["status"], refused["error"]) == ("FAILED", "LockedError"), refused.get("cause")
    assert "a backup running now" in refused["cause"]
    assert (pg_dump_text(world.database_url), _databases(world.database_url)) == before
    assert deps.lock().release(token), "the refused restore left the other run's lock alone"

    restored = world.run("restore", {"backup": "latest", "targets": {"database": "lock_drill"}})
    assert restored["status"] == "SUCCEEDED", restored.get("cause")
    assert f"{HOSTNAME}/locks/backup.json" not in world.objects(f"{HOSTNAME}/")
