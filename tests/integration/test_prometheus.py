"""Real Prometheus parts (Debian's packages, installed by `make test`): a Prometheus server scrapes the
local admin API's `/metrics` with a bearer token and node_exporter's textfile collector; after a backup
through the API, its HTTP API returns the new `backup_last_success_timestamp`. A Pushgateway receives
the CLI's push, and a second push replaces the host's series instead of adding to them."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import requests

from questboard_backup.host_metrics import MetricsState, export
from tests.integration.conftest import Deployment
from tests.local_api import AdminClient, local_api
from tests.servers import free_port, wait_until


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    raise AssertionError(f"{names[0]} is missing: make test installs it from Debian's packages")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def _serving(command: list[str], ready_url: str, what: str) -> Iterator[None]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _answers(ready_url) or process.poll() is not None, what, 60)
        assert process.poll() is None, process.communicate()[1]
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def _query(prometheus: str, expression: str) -> list[dict]:  # type: ignore[type-arg]
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=10).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_prometheus_scrapes_the_api_with_a_bearer_token_and_the_textfile_and_sees_a_new_backup(
    tmp_path: Path,
) -> None:
    token = "qbb_prom_" + secrets.token_urlsafe(24)
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    # The textfile as a cron host's CLI writes it after a run (the same state and export it calls).
    cron_dir = tmp_path / "cron-backups"
    cron_dir.mkdir()
    MetricsState(cron_dir).record_backup("full", False, datetime.now(UTC), 3.0, 0)
    export(cron_dir, "cron-host", str(textfiles / "questboard_backup.prom"), "")
    node_port, prom_port = free_port(), free_port()
    (tmp_path / "api").mkdir()
    with local_api(token, tmp_path / "api") as api:
        (tmp_path / "token").write_text(token)
        config = tmp_path / "prometheus.yml"
        host, port = api.url.removeprefix("http://").split(":")
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: questboard-backup-api\n"
            "    metrics_path: /metrics\n"
            f"    authorization: {{type: Bearer, credentials_file: {tmp_path / 'token'}}}\n"
            f"    static_configs: [{{targets: ['{host}:{port}']}}]\n"
            "  - job_name: node\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]\n"
        )
        node = [_binary("prometheus-node-exporter", "node_exporter"), f"--web.listen-address=127.0.0.1:{node_port}",
                "--collector.disable-defaults", "--collector.textfile",
                f"--collector.textfile.directory={textfiles}"]  # fmt: skip
        prometheus = [_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{prom_port}"]  # fmt: skip
        url = f"http://127.0.0.1:{prom_port}"
        with (
            _serving(node, f"http://127.0.0.1:{node_port}/metrics", "node_exporter"),
            _serving(prometheus, f"{url}/-/ready", "Prometheus"),
        ):
            wait_until(lambda: _query(url, 'up{job="questboard-backup-api"} == 1'), "the API scrape", 60)
            textfile_failures = 'backup_failure_total{job="node",hostname="cron-host",type="full"} == 1'
            wait_until(lambda: _query(url, textfile_failures), "the CLI's textfile through node_exporter", 60)
            client = AdminClient(api.url, token)
            started = client.start_backup("full")
            client.wait_until_done(started["backup_id"])
            wanted = 'backup_last_success_timestamp{job="questboard-backup-api",type="full"}'
            wait_until(lambda: _query(url, wanted), "the new backup in Prometheus", 60)
            (sample,) = _query(url, wanted)
            status = client.call("GET", "/api/admin/backup/status").json()
            assert status["last_success"]["full"]["id"] == started["backup_id"]
            finished = datetime.fromisoformat(
                status["last_success"]["full"]["finished_at"].replace("Z", "+00:00")
            )
            assert float(sample["value"][1]) == finished.timestamp()
            # A wrong token: the scrape fails (up == 0), nothing is exposed.
            (tmp_path / "token").write_text("qbb_wrong_" + secrets.token_urlsafe(24))
            wait_until(lambda: _query(url, 'up{job="questboard-backup-api"} == 0'), "the refused scrape", 60)


def test_the_cli_pushes_to_a_pushgateway_and_a_second_push_replaces_the_hosts_series(
    deployment: Deployment, tmp_path: Path
) -> None:
    port = free_port()
    gateway = [_binary("prometheus-pushgateway", "pushgateway"), f"--web.listen-address=127.0.0.1:{port}",
               f"--persistence.file={tmp_path / 'push.db'}"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **deployment.env, "BACKUP_PUSHGATEWAY_URL": url}
    host = deployment.env["BACKUP_HOSTNAME"]
    with _serving(gateway, f"{url}/-/ready", "the Pushgateway"):
        first = subprocess.run([sys.executable, "-m", "questboard_backup.cli", "full"], env=env,
                               capture_output=True, text=True)  # fmt: skip
        assert first.returncode == 0, first.stderr
        pushed = requests.get(f"{url}/metrics", timeout=10).text
        line = f'backup_last_success_timestamp{{hostname="{host}",instance="{host}",job="questboard-backup",type="full"}}'
        assert line in pushed, pushed[:2000]
        failed = subprocess.run([sys.executable, "-m", "questboard_backup.cli", "full"],
                                env={**env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
                                capture_output=True, text=True)  # fmt: skip
        assert failed.returncode == 4
        pushed = requests.get(f"{url}/metrics", timeout=10).text
        series = [row for row in pushed.splitlines() if row.startswith("backup_failure_total{")]
        assert series == [
            f'backup_failure_total{{hostname="{host}",instance="{host}",job="questboard-backup",type="full"}} 1',
            f'backup_failure_total{{hostname="{host}",instance="{host}",job="questboard-backup",type="incremental"}} 0',
        ], series
        groups = requests.get(f"{url}/api/v1/metrics", timeout=10).json()["data"]
        assert len(groups) == 1  # one group per host: replaced, not piled up
