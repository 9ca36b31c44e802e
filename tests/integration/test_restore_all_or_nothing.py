"""A restore is all or nothing (issue 10, point 4): every component is staged and checked before any
is swapped in, and a failure in any component's stage or swap, or a kill that leaves a swap half done,
leaves PostgreSQL, Redis, the uploads and the config exactly as they were, with no staging left.

The failures are injected by a wrapper around the real components, which does the real step first
and then fails, the worst moment: the step's work exists and must be taken back by the engine."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
import redis

from questboard_backup.address import timestamp
from questboard_backup.catalog import list_backups
from questboard_backup.errors import DeadlineExceededError
from questboard_backup.operations import backup_now
from questboard_backup.restore import (
    load_checked_manifest,
    run_restore,
    stage_component,
    swap_in_all,
    undo_all,
)
from questboard_backup.settings import Settings
from questboard_backup.sources.base import Component, RestoreOptions
from questboard_backup.wiring import Wiring
from tests.dataset import pg_dump_text, redis_snapshot, tree_state
from tests.integration.conftest import Deployment

COMPONENTS = ("postgres", "redis", "files", "config")


class InjectedFailure(Exception):
    pass


class FailsAfter:
    """A real component whose ``step`` raises once the real step has done its work."""

    def __init__(self, real: Component, step: str | None) -> None:
        self._real, self._step = real, step
        self.name = real.name

    def __getattr__(self, attribute: str) -> Any:
        method = getattr(self._real, attribute)
        if attribute != self._step:
            return method

        def failing(*args: Any, **kwargs: Any) -> Any:
            method(*args, **kwargs)
            raise InjectedFailure(f"{self.name} {attribute} failed")

        return failing


def _wiring() -> Wiring:
    return Wiring(Settings.from_env(os.environ))


def _targets(wiring: Wiring, failing: tuple[str, str] | None = None) -> dict[str, Component]:
    real = wiring.restore_targets(wiring.endpoints(), COMPONENTS)
    assert set(real) == set(COMPONENTS)
    return {
        name: FailsAfter(component, failing[1] if failing and failing[0] == name else None)  # type: ignore[misc]
        for name, component in real.items()
    }


def _change_everything(deployment: Deployment) -> None:
    """After the backup: a restore now changes every target, so an undone one shows."""
    with psycopg2.connect(deployment.database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE after_backup (id int)")
        cur.execute("INSERT INTO after_backup VALUES (1)")
    conn.close()
    client = redis.Redis.from_url(f"{deployment.redis_base}/0")
    client.set(b"written-after-backup", b"1")
    client.delete(*list(client.scan_iter(count=1000))[:5])
    (deployment.uploads / "after-backup.txt").write_text("new upload")
    next(path for path in deployment.config.rglob("*") if path.is_file()).write_text("edited config")


def _state(deployment: Deployment) -> dict[str, Any]:
    parents = {deployment.uploads.parent, deployment.config.parent}
    with psycopg2.connect(deployment.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database ORDER BY datname")
        databases = [row[0] for row in cur.fetchall()]
    conn.close()
    return {
        "postgres": pg_dump_text(deployment.database_url),
        "databases": databases,
        "redis": redis_snapshot(deployment.redis_base),
        "uploads": tree_state(deployment.uploads),
        "config": tree_state(deployment.config),
        # Beside the targets: no staging folder, no rollback copy left by a restore that failed.
        "beside": sorted(path.name for folder in parents for path in folder.iterdir()),
    }


def _backed_up(deployment: Deployment) -> tuple[Wiring, Any]:
    wiring = _wiring()
    backup_now(wiring, "full")
    (entry,) = list_backups(wiring.local_storage())
    _change_everything(deployment)
    return wiring, entry


def _options() -> RestoreOptions:
    return RestoreOptions(timestamp=timestamp(datetime.now(UTC)))


@pytest.mark.parametrize("step", ["stage", "swap_in"])
@pytest.mark.parametrize("component", COMPONENTS)
def test_a_failure_in_any_components_stage_or_swap_leaves_every_target_as_it_was(
    deployment: Deployment, component: str, step: str
) -> None:
    wiring, entry = _backed_up(deployment)
    before = _state(deployment)
    with pytest.raises(InjectedFailure, match=f"{component} {step} failed"):
        run_restore(entry, wiring.passphrase_wrapper(), _targets(wiring, (component, step)), _options())
    assert _state(deployment) == before


def test_without_failures_every_component_is_swapped_in(deployment: Deployment) -> None:
    wiring, entry = _backed_up(deployment)
    before = _state(deployment)
    report = run_restore(entry, wiring.passphrase_wrapper(), _targets(wiring), _options())
    assert list(report["components"]) == ["postgres", "redis", "files", "config"]
    after = _state(deployment)
    for name in ("postgres", "redis", "uploads", "config"):
        assert after[name] != before[name], f"{name} was not restored"


def test_no_swap_starts_with_too_little_time_left_and_nothing_is_swapped(deployment: Deployment) -> None:
    wiring, entry = _backed_up(deployment)
    before = _state(deployment)
    targets = _targets(wiring)
    options = _options()
    for name, target in targets.items():
        manifest, key = load_checked_manifest(entry, wiring.passphrase_wrapper())
        stage_component(entry, manifest, key, manifest.component(name), target, options)
    with pytest.raises(DeadlineExceededError, match="less than 60 s left"):
        swap_in_all(targets, options, time_left=lambda: 59.0)
    assert _state(deployment) == before


def test_a_swap_killed_half_way_is_undone_by_another_process(deployment: Deployment) -> None:
    """The workflow's Swap invocation dies after two components swapped in: the failure path, with
    components built afresh (another process), puts every target back and removes all staging."""
    wiring, entry = _backed_up(deployment)
    before = _state(deployment)
    options = _options()
    first = _targets(wiring)
    manifest, key = load_checked_manifest(entry, wiring.passphrase_wrapper())
    for name, target in first.items():
        stage_component(entry, manifest, key, manifest.component(name), target, options)
    first["postgres"].swap_in(options)
    first["redis"].swap_in(options)
    assert _state(deployment) != before  # the kill: no settle, no undo in this "process"
    undone = undo_all(_targets(_wiring()), options)
    assert undone, "the failure path reports what it undid"
    assert _state(deployment) == before


@pytest.mark.parametrize(
    ("redis_url", "only", "code", "says"),
    [
        (None, ["--only", "postgres,redis"], 2, "no restore target configured for redis"),
        ("nothing listening", [], 4, "redis"),  # restored after PostgreSQL, checked before it
    ],
    ids=["no target", "unreachable target"],
)
def test_every_target_is_checked_before_any_is_touched(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str | None,
    only: list[str],
    code: int,
    says: str,
) -> None:
    from questboard_backup.cli import main
    from tests.servers import free_port

    assert main(["full", "--json"]) == 0
    capsys.readouterr()
    _change_everything(deployment)
    before = _state(deployment)
    if redis_url is None:
        monkeypatch.delenv("REDIS_URL")
    else:
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["restore", "latest", *only]) == code
    error = capsys.readouterr().err
    assert says in error.lower() and len(error.strip().splitlines()) == 1
    assert _state(deployment) == before


def test_a_cli_restore_stopped_by_sigterm_undoes_itself(deployment: Deployment) -> None:
    """`timeout`, a closed SSH session or systemd stop the restore with SIGTERM: it undoes what it
    staged, exits 130 with one line, and the targets are as they were."""
    import signal
    import subprocess
    import sys

    from questboard_backup.cli import main
    from tests.servers import wait_while_running

    assert main(["full", "--json"]) == 0
    _change_everything(deployment)
    before = _state(deployment)
    database = deployment.database_url.rsplit("/", 1)[1]

    def staging_exists() -> bool:
        with psycopg2.connect(deployment.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname LIKE %s", (f"{database}_restore_%",))
            found = cur.fetchone() is not None
        conn.close()
        return found

    process = subprocess.Popen(
        [sys.executable, "-m", "questboard_backup.cli", "restore", "latest"],
        env={**os.environ, **deployment.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_while_running(process, staging_exists, "the restore to create its staging database", 60)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert len(err.decode().strip().splitlines()) == 1, err
    assert _state(deployment) == before
