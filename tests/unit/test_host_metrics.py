"""The cron host's metrics state: increments from processes running at once are never lost, and the
textfile is replaced whole."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

from questboard_backup.host_metrics import MetricsState, write_textfile
from questboard_backup.metrics import render

RUNS = 25


def _fail_many(backup_dir: str) -> None:
    state = MetricsState(Path(backup_dir))
    for _ in range(RUNS):
        state.record_backup("incremental", False, datetime.now(UTC), 1.0, 0)


def test_failures_counted_by_processes_at_once_all_count(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_fail_many, args=(str(tmp_path),)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    metrics = MetricsState(tmp_path).metrics("host")
    assert metrics.failures == {"incremental": 4 * RUNS}
    assert b'backup_failure_total{hostname="host",type="incremental"} 100.0' in render(metrics)


def test_the_textfile_is_replaced_whole_and_readable_by_node_exporter(tmp_path: Path) -> None:
    target = tmp_path / "collector" / "questboard_backup.prom"
    write_textfile(target, b"first\n")
    write_textfile(target, b"second\n")
    assert target.read_bytes() == b"second\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [path.name for path in target.parent.iterdir()] == ["questboard_backup.prom"]
