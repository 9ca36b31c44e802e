"""The local admin API (`make api`) run as a subprocess, and the guide's three calls against it: start a
full backup, poll status until it is done, get the download URLs and fetch every object with plain
HTTP into ``<folder>/<tier>/<id>/``, which `scripts/backup.sh verify` then checks. Used by `make demo`
and tests/integration/test_local_api.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
#: What scripts/api_server.py prints, with its URL, once it accepts connections: its last line.
READY = "admin API listening on"
#: What it prints, with the folders, just before.
FOLDERS = "temporary folders (removed on exit):"
START_TIMEOUT = 180.0


@dataclass
class LocalApi:
    url: str
    token: str
    #: What `backup.sh verify` needs for the sets this API's world makes (AWS_ENDPOINT_URL...).
    environment: dict[str, str]
    output: list[str]
    #: The server's exit status, once it has stopped.
    returncode: int | None = None

    def log(self, lines: int = 40) -> str:
        return "".join(self.output[-lines:])

    def temporary_folders(self) -> list[Path]:
        line = next(line for line in self.output if line.startswith(FOLDERS))
        return [Path(folder) for folder in line.removeprefix(FOLDERS).split()]


def _read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name: shlex.split(value)[0] if value else "" for name, value in pairs}


@contextlib.contextmanager
def local_api(token: str, work: Path, timeout: float = START_TIMEOUT) -> Iterator[LocalApi]:
    """scripts/api_server.py on a free port with ADMIN_TOKEN=``token``, once it has printed its ready
    line; stopped with SIGTERM (as Ctrl-C would) on exit."""
    env_file = work / "api.env"
    environment = {**os.environ, "ADMIN_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "BACKUP_ENV_FILE"):
        environment.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "api_server.py"), "--port", "0", "--env-file", str(env_file)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    ready = threading.Event()
    url: list[str] = []

    def drain() -> None:  # keeps reading, so the server never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith(READY):
                url.append(line.split()[-1])
                ready.set()
        ready.set()  # the server ended before it was ready

    reader = threading.Thread(target=drain, name="local-api-output", daemon=True)
    reader.start()
    try:
        if not ready.wait(timeout) or not url:
            raise RuntimeError(
                f"the local API did not start within {timeout:.0f} s:\n{''.join(output[-40:])}"
            )
        environment = _read_env_file(env_file)
        environment.pop("API_URL", None)
        running = LocalApi(url[0], token, environment, output)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=10)
    running.returncode = process.returncode


Echo = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


@dataclass
class AdminClient:
    """The guide's calls, each echoed as the curl command that does the same."""

    url: str
    token: str
    echo: Echo = _quiet

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        describe: Callable[[requests.Response], str] = lambda response: response.text[:300],
    ) -> requests.Response:
        command = ["curl", "-s"] + (["-X", method] if method != "GET" else [])
        command += ["-H", '"Authorization: Bearer $ADMIN_TOKEN"']
        if body is not None:
            command += ["-H", "'Content-Type: application/json'", "-d", shlex.quote(json.dumps(body))]
        self.echo(f"$ {' '.join(command)} {self.url}{path}")
        response = requests.request(
            method,
            f"{self.url}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            json=body,
            timeout=60,
        )
        self.echo(f"  {response.status_code} {describe(response)}")
        return response

    def start_backup(self, kind: str = "full") -> dict[str, Any]:
        response = self.call("POST", "/api/admin/backup", {"type": kind})
        if response.status_code != 202:
            raise RuntimeError(f"starting a backup answered {response.status_code}: {response.text}")
        return dict(response.json())

    def wait_until_done(self, backup_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The status once ``backup_id`` is no longer running (polled every second until ``timeout``)."""
        deadline = time.monotonic() + timeout
        echo, self.echo = self.echo, _quiet  # one echo for the whole poll, not one per call
        echo(f"$ curl -s -H \"Authorization: Bearer $ADMIN_TOKEN\" {self.url}/api/admin/backup/status"
             "   # until running is null")  # fmt: skip
        try:
            while True:
                response = self.call("GET", "/api/admin/backup/status")
                if response.status_code != 200:
                    raise RuntimeError(f"status answered {response.status_code}: {response.text}")
                status = dict(response.json())
                running = status.get("running") or {}
                if running.get("backup_id") != backup_id:
                    last = {
                        kind: (status["last_success"].get(kind) or {}).get("id")
                        for kind in ("full", "incremental")
                    }
                    echo(f"  200 running: null, last_success: {json.dumps(last)}")
                    return status
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{backup_id} still running after {timeout:.0f} s (step {running.get('step')})"
                    )
                time.sleep(1.0)  # the poll interval, bounded by the deadline
        finally:
            self.echo = echo

    def download(self, backup_path: str, into: Path) -> Path:
        """Fetch every object of the set with plain HTTP into ``into/<tier>/<id>/``; returns that folder."""
        response = self.call(
            "POST", "/api/admin/backup/download-url", {"backupPath": backup_path}, describe=_download_summary
        )
        if response.status_code != 200:
            raise RuntimeError(f"download-url answered {response.status_code}: {response.text}")
        urls = response.json()
        folder = into / urls["folder"]
        folder.mkdir(parents=True, exist_ok=True)
        for item in urls["files"]:
            self.echo(f"$ curl -s -o {folder / item['name']} '<url of {item['name']}>'")
            with requests.get(item["url"], stream=True, timeout=60) as got:
                got.raise_for_status()
                with (folder / item["name"]).open("wb") as file:
                    for chunk in got.iter_content(1 << 16):
                        file.write(chunk)
        return folder


def _download_summary(response: requests.Response) -> str:
    try:
        body = response.json()
        return f"folder {body['folder']}, {len(body['files'])} presigned URLs valid {body['expires_in']} s"
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def verify(
    folder: Path, environment: dict[str, str], echo: Echo = _quiet
) -> subprocess.CompletedProcess[str]:
    """`scripts/backup.sh verify <folder>` with the local API's environment (moto's KMS)."""
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in environment.items())
    echo(f"$ {assignments} scripts/backup.sh verify {folder}")
    done = subprocess.run(
        [str(REPO / "scripts" / "backup.sh"), "verify", str(folder)],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )
    echo("  " + (done.stdout or done.stderr).strip().replace("\n", "\n  "))
    return done
