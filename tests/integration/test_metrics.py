"""The Prometheus metrics: the admin API's `/metrics` from the catalog (read scope), the cron host's
textfile, and counters that only grow, across fresh handler containers and separate CLI processes.
Every exposition passes `promtool check metrics` (Debian's prometheus package, which `make test`
installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Deployment
from tests.integration.test_admin_api import Api, Context, _error
from tests.integration.test_admin_api import api as api

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(promtool).exists(), "promtool is missing: make test installs Debian's prometheus package"
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def scrape(api: Api, token: str = "read") -> str:
    answer = api.call("GET", "/metrics", token=token, raw=True)
    assert answer.status == 200, answer.body
    return str(answer.body)


def test_the_api_exposes_the_guides_four_metrics_from_the_catalog_for_a_read_token(api: Api) -> None:
    text = scrape(api)
    promtool_check(text)
    found = samples(text)
    host = ("hostname", "api-host")
    full = (host, ("type", "full"))
    newest = api.call("GET", f"/api/admin/backup/{api.ids[2]}").body
    finished = __import__("datetime").datetime.fromisoformat(newest["finished_at"].replace("Z", "+00:00"))
    assert found[("backup_last_success_timestamp", tuple(sorted(full)))] == finished.timestamp()
    assert found[("backup_size_bytes", tuple(sorted(full)))] == newest["stored_bytes"]
    assert ("backup_duration_seconds", tuple(sorted(full))) in found
    assert found[("backup_failure_total", tuple(sorted(full)))] == 0
    assert found[("backup_running", (host,))] == 0
    assert found[("backup_sets", tuple(sorted((host, ("tier", "monthly")))))] == 1
    assert not [name for name, _ in found if name.endswith("_created")]
    _error(api.call("GET", "/metrics", token=None, raw=True), 401)


def test_failures_counted_by_two_fresh_handler_containers_add_up_in_the_scrape(api: Api) -> None:
    """Each failure path invocation runs in a container of its own (fresh dependencies, as after a cold
    start); the counter lives in the catalog (an atomic ADD), so the scrape sees every failure."""
    from lambdas import backup_failure
    from lambdas import dependencies as deps_module
    from lambdas.dependencies import Dependencies

    def failures() -> float:
        return samples(scrape(api))[
            ("backup_failure_total", (("hostname", "api-host"), ("type", "incremental")))
        ]

    before = failures()
    settings, clients = deps_module.dependencies().settings, deps_module.dependencies().client
    for number in range(2):
        deps_module.install(Dependencies(settings, clients=clients))  # a new container
        backup_failure.handler(
            {"type": "incremental", "backup_id": f"questboard_incremental_2024010{number + 1}_080000",
             "error": {"Error": "SourceUnreachableError", "Cause": "redis down"}},
            Context("failure"),
        )  # fmt: skip
    deps_module.install(Dependencies(settings, clients=clients))
    assert failures() == before + 2


def _cli(deployment: Deployment, textfile: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **deployment.env, "BACKUP_METRICS_TEXTFILE": str(textfile), **env}
    return subprocess.run([sys.executable, "-m", "questboard_backup.cli", *args], env=environment,
                          capture_output=True, text=True)  # fmt: skip


def test_the_cron_host_textfile_counts_failures_across_cli_processes_and_keeps_the_last_success(
    deployment: Deployment, tmp_path: Path
) -> None:
    textfile = tmp_path / "textfile" / "questboard_backup.prom"
    ok = _cli(deployment, textfile, "full")
    assert ok.returncode == 0, ok.stderr
    first = samples(textfile.read_text())
    host = deployment.env["BACKUP_HOSTNAME"]
    full = tuple(sorted((("hostname", host), ("type", "full"))))
    assert first[("backup_last_success_timestamp", full)] > 0 and first[("backup_size_bytes", full)] > 0
    assert first[("backup_failure_total", full)] == 0
    assert first[("backup_dir_free_bytes", (("hostname", host),))] > 0
    broken = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    for _ in range(2):  # two separate processes, each a failure
        failed = _cli(deployment, textfile, "full", **broken)
        assert failed.returncode == 4, failed.stderr
    text = textfile.read_text()
    promtool_check(text)
    after = samples(text)
    assert after[("backup_failure_total", full)] == 2
    # A failure does not move the last success; it moves the last attempt.
    assert after[("backup_last_success_timestamp", full)] == first[("backup_last_success_timestamp", full)]
    assert after[("backup_last_attempt_timestamp", full)] >= first[("backup_last_attempt_timestamp", full)]
    assert not list(textfile.parent.glob(".*"))  # written atomically: no temporary file left


def test_a_bad_textfile_setting_is_refused_by_name(deployment: Deployment, tmp_path: Path) -> None:
    done = _cli(deployment, tmp_path / "metrics.txt", "full")
    assert done.returncode == 2 and "BACKUP_METRICS_TEXTFILE" in done.stderr


def test_a_pushgateway_that_answers_garbage_is_a_warning_and_the_backup_still_succeeds(
    deployment: Deployment, tmp_path: Path
) -> None:
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_garbage() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(b"this is not HTTP\r\n\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        done = _cli(deployment, tmp_path / "m" / "q.prom", "full", BACKUP_PUSHGATEWAY_URL=url)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert "metrics not exported" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "m" / "q.prom").exists()


def test_a_pushgateway_url_with_a_password_is_refused_without_quoting_it(
    deployment: Deployment, tmp_path: Path
) -> None:
    done = _cli(
        deployment, tmp_path / "q.prom", "full", BACKUP_PUSHGATEWAY_URL="http://user:s3cret@127.0.0.1:9091"
    )
    assert done.returncode == 2 and "BACKUP_PUSHGATEWAY_URL" in done.stderr and "s3cret" not in done.stderr
