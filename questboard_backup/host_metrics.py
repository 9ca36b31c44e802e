"""A cron host's metrics: persisted state, node_exporter's textfile and the Pushgateway.

Each run (backup or restore, success or failure) updates ``BACKUP_DIR/metrics/state.json`` under an
exclusive lock: counters are read, incremented and written back while the lock is held, so two CLI
processes never lose an increment and a counter never goes back. After the update the whole
exposition is written atomically (a temporary file in the same folder, then a rename) to
``BACKUP_METRICS_TEXTFILE`` for node_exporter's textfile collector, and PUT to the Pushgateway at
``BACKUP_PUSHGATEWAY_URL`` under ``job="questboard-backup", instance=<hostname>``: a PUT replaces the
host's whole group, so its series replace each other instead of piling up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from questboard_backup.metrics import CONTENT_TYPE, BackupMetrics, LastRun, render
from questboard_backup.redaction import redact_text

logger = logging.getLogger(__name__)

PUSH_JOB = "questboard-backup"
PUSH_TIMEOUT_SECONDS = 10


class MetricsState:
    """The host's counters and last results, in ``{backup_dir}/metrics/state.json``."""

    def __init__(self, backup_dir: Path) -> None:
        self.backup_dir = backup_dir
        self.folder = backup_dir / "metrics"
        self.path = self.folder / "state.json"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The state's exclusive lock (one updater or exporter at a time, across processes)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Owner-only, whatever the umask, like everything else under BACKUP_DIR.
        descriptor = os.open(self.folder / "state.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with self.lock():
            try:
                state = json.loads(self.path.read_text()) if self.path.exists() else {}
            except ValueError:
                logger.warning("metrics state %s was unreadable; counters start again from it", self.path)
                state = {}
            yield state
            fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".state.")
            with os.fdopen(fd, "w") as out:
                json.dump(state, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)

    def record_backup(
        self, kind: str, ok: bool, finished: datetime, seconds: float, stored_bytes: int
    ) -> None:
        with self._locked() as state:
            state.setdefault("last_attempt", {})[kind] = finished.timestamp()
            if ok:
                state.setdefault("last_success", {})[kind] = {
                    "finished": finished.timestamp(),
                    "seconds": seconds,
                    "stored_bytes": stored_bytes,
                }
            else:
                failures = state.setdefault("failures", {})
                failures[kind] = int(failures.get(kind, 0)) + 1

    def record_restore(self, ok: bool, at: datetime) -> None:
        self._record_run("restore", ok, at)

    def record_drill(self, ok: bool, at: datetime, seconds: float) -> None:
        self._record_run("drill", ok, at, {"drill_duration_seconds": seconds})

    def _record_run(self, kind: str, ok: bool, at: datetime, also: dict[str, float] | None = None) -> None:
        """``{kind}_last_success`` (and ``also``) on success, one more ``{kind}_failures`` otherwise."""
        with self._locked() as state:
            if ok:
                state[f"{kind}_last_success"] = at.timestamp()
                state.update(also or {})
            else:
                state[f"{kind}_failures"] = int(state.get(f"{kind}_failures", 0)) + 1

    def metrics(self, hostname: str) -> BackupMetrics:
        state = json.loads(self.path.read_text()) if self.path.exists() else {}
        usage = shutil.disk_usage(self.backup_dir) if self.backup_dir.exists() else None
        return BackupMetrics(
            hostname=hostname,
            last_success={
                kind: LastRun(float(run["finished"]), float(run["seconds"]), int(run["stored_bytes"]))
                for kind, run in state.get("last_success", {}).items()
            },
            last_attempt={kind: float(moment) for kind, moment in state.get("last_attempt", {}).items()},
            failures={kind: int(count) for kind, count in state.get("failures", {}).items()},
            dir_space=(usage.free, usage.total) if usage else None,
            restore_last_success=state.get("restore_last_success"),
            restore_failures=int(state.get("restore_failures", 0)),
            drill_last_success=state.get("drill_last_success"),
            drill_duration=state.get("drill_duration_seconds"),
            drill_failures=int(state.get("drill_failures", 0)),
        )


def write_textfile(path: Path, exposition: bytes) -> None:
    """``path`` replaced atomically: node_exporter never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as out:
        out.write(exposition)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def push(url: str, hostname: str, exposition: bytes) -> None:
    """PUT the exposition as the host's group: what the previous push said is replaced."""
    base = url.rstrip("/")
    target = f"{base}/metrics/job/{PUSH_JOB}/instance/{urllib.parse.quote(hostname, safe='')}"
    request = urllib.request.Request(
        target, data=exposition, method="PUT", headers={"Content-Type": CONTENT_TYPE}
    )
    with urllib.request.urlopen(request, timeout=PUSH_TIMEOUT_SECONDS) as response:
        response.read()


def export(backup_dir: Path, hostname: str, textfile: str, pushgateway: str) -> None:
    """Write the textfile and push, as configured, holding the state's lock: exports are serialized
    and each renders the state as it is then, so a slower run never puts an older count back. Any
    failure is a warning (its message redacted), never the run's outcome."""
    if not textfile and not pushgateway:
        return
    state = MetricsState(backup_dir)
    try:
        with state.lock():
            exposition = render(state.metrics(hostname))
            if textfile:
                write_textfile(Path(textfile), exposition)
            if pushgateway:
                push(pushgateway, hostname, exposition)
    except Exception as error:  # noqa: BLE001 - metrics never decide a run's outcome
        logger.warning("metrics not exported: %s", redact_text(f"{type(error).__name__}: {error}"))
