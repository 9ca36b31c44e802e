"""`make api` (scripts/api_server.py) as an operator runs it, on a free port: the stack's authorizer and
API function behind the local API Gateway, over the offline world. The guide's calls work with curl's
plain HTTP, and the downloaded set verifies with `backup.sh verify` and the printed environment."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from questboard_backup.admin.tokens import new_token
from tests.local_api import REPO, AdminClient, LocalApi, local_api, verify

STATUS = "/api/admin/backup/status"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApi]:
    with local_api(new_token(), tmp_path_factory.mktemp("local-api")) as running:
        yield running


def get(api: LocalApi, path: str, header: str | None = None) -> requests.Response:
    return requests.get(f"{api.url}{path}", headers={"Authorization": header} if header else {}, timeout=60)


def test_a_call_without_a_token_is_401_in_the_apis_error_shape(api: LocalApi) -> None:
    answer = get(api, STATUS)

    assert answer.status_code == 401
    assert answer.json() == {"error": {"code": "UNAUTHORIZED", "message": "Unauthorized"}}
    assert answer.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("header", [f"Bearer {new_token()}", "Bearer not-a-token", "Basic YWRtaW46YWRtaW4="])
def test_a_wrong_token_is_401(api: LocalApi, header: str) -> None:
    answer = get(api, STATUS, header)

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHORIZED"


def test_the_admin_token_in_the_query_string_is_not_a_token(api: LocalApi) -> None:
    answer = get(api, f"{STATUS}?token={api.token}&access_token={api.token}")

    assert answer.status_code == 401


def test_the_admin_token_reads_the_status(api: LocalApi) -> None:
    answer = get(api, STATUS, f"Bearer {api.token}")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["hostname"] == "questboard"
    assert body["enabled"] is True
    assert set(body["next_runs"]) == {"full", "incremental"}


def test_an_unknown_path_is_403_missing_authentication_token(api: LocalApi) -> None:
    answer = get(api, "/api/admin/restore", f"Bearer {api.token}")

    assert answer.status_code == 403
    assert answer.json() == {
        "error": {"code": "MISSING_AUTHENTICATION_TOKEN", "message": "Missing Authentication Token"}
    }


def test_a_body_outside_the_stacks_model_is_400_and_starts_nothing(api: LocalApi) -> None:
    answer = requests.post(
        f"{api.url}/api/admin/backup",
        json={"type": "daily"},
        headers={"Authorization": f"Bearer {api.token}"},
        timeout=60,
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BAD_REQUEST_BODY"
    assert get(api, STATUS, f"Bearer {api.token}").json()["running"] is None


def test_a_chunked_body_is_read_and_validated_like_any_other(api: LocalApi) -> None:
    answer = requests.post(
        f"{api.url}/api/admin/backup",
        data=iter([b'{"type": ', b'"daily"}']),  # a generator: requests sends it chunked
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
        timeout=60,
    )

    assert answer.status_code == 400
    assert "'daily' is not one of" in answer.json()["error"]["message"]


def test_a_body_over_ten_megabytes_is_413(api: LocalApi) -> None:
    answer = requests.post(
        f"{api.url}/api/admin/backup",
        data=b"x" * (10 * 1024 * 1024 + 1),
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
        timeout=60,
    )

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "REQUEST_TOO_LARGE"


@dataclass
class Download:
    backup_id: str
    status: dict[str, Any]
    folder: Path
    root: Path


@pytest.fixture(scope="module")
def download(api: LocalApi, tmp_path_factory: pytest.TempPathFactory) -> Download:
    """The guide's three calls: start a full backup, poll status until it is done, fetch its download
    URLs with plain HTTP into ``<root>/<tier>/<id>/``."""
    client = AdminClient(api.url, api.token)
    started = client.start_backup("full")
    status = client.wait_until_done(started["backup_id"])
    root = tmp_path_factory.mktemp("downloads")
    return Download(started["backup_id"], status, client.download(started["backup_id"], root), root)


def test_the_guides_calls_back_up_and_download_a_set_that_verifies(api: LocalApi, download: Download) -> None:
    verified = verify(download.folder, api.environment)

    assert download.status["last_success"]["full"]["id"] == download.backup_id
    tier = download.status["last_success"]["full"]["tier"]
    assert download.folder.relative_to(download.root).parts == (tier, download.backup_id)
    assert "manifest.json" in {path.name for path in download.folder.iterdir()}
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{download.backup_id} verified" in verified.stdout


def test_verifying_the_download_needs_the_printed_environment_to_reach_moto_kms(
    api: LocalApi, download: Download
) -> None:
    unreachable = {**api.environment, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}

    refused = verify(download.folder, unreachable)

    assert set(api.environment) == {
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "BACKUP_KMS_KEY_ID",
    }
    assert refused.returncode != 0
    assert "KMS" in refused.stderr


def test_a_malformed_admin_token_is_refused_in_one_line_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "api_server.py"), "--port", "0"],
        env={"ADMIN_TOKEN": "short!", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: ADMIN_TOKEN must be")
    assert "short!" not in done.stderr


def test_sigterm_stops_the_servers_and_removes_the_temporary_folders(tmp_path: Path) -> None:
    with local_api(new_token(), tmp_path) as running:
        folders = running.temporary_folders()
        assert folders and all(folder.is_dir() for folder in folders)

    assert running.returncode == 0, running.log()
    assert not [folder for folder in folders if folder.exists()]
    assert "stopped: servers stopped" in running.log()
