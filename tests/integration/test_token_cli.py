"""`backup.sh token create|list|revoke` against Secrets Manager (a moto server over HTTP): the token is
printed once and never stored; names and scopes are listed; a revoked token no longer identifies;
bad input is one line, a non-zero exit, and changes nothing."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import boto3
import pytest

from questboard_backup.admin.tokens import Caller, TokenDocument
from tests.integration.test_scripts import SCRIPTS, script_env


@pytest.fixture
def secret(moto_server: str) -> str:
    client = boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    return str(
        client.create_secret(Name=f"tokens-{secrets.token_hex(4)}", SecretString='{"tokens": []}')["ARN"]
    )


def _stored(moto_server: str, secret: str) -> str:
    client = boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    return str(client.get_secret_value(SecretId=secret)["SecretString"])


def _token(
    tmp_path: Path, moto_server: str, *args: str, secret: str = ""
) -> subprocess.CompletedProcess[str]:
    env = script_env(
        tmp_path,
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        BACKUP_DIR=str(tmp_path / "backups"),
    )
    if secret:
        env["BACKUP_API_TOKENS_SECRET"] = secret
    return subprocess.run(
        [str(SCRIPTS / "backup.sh"), "token", *args], env=env, capture_output=True, text=True
    )


def test_create_prints_the_token_once_list_shows_names_revoke_removes(
    tmp_path: Path, moto_server: str, secret: str
) -> None:
    created = _token(tmp_path, moto_server, "create", "ci", "--scope", "admin", "--json", secret=secret)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]
    stored = _stored(moto_server, secret)
    assert token not in stored
    assert TokenDocument.parse(stored).identify(token) == Caller("ci", "admin")
    assert _token(tmp_path, moto_server, "create", "grafana", secret=secret).returncode == 0
    listed = _token(tmp_path, moto_server, "list", secret=secret)
    assert listed.returncode == 0 and "ci" in listed.stdout and "admin" in listed.stdout
    assert "grafana" in listed.stdout and "read" in listed.stdout and token not in listed.stdout
    revoked = _token(tmp_path, moto_server, "revoke", "ci", secret=secret)
    assert revoked.returncode == 0, revoked.stderr
    document = TokenDocument.parse(_stored(moto_server, secret))
    assert document.identify(token) is None and document.names() == ["grafana"]


@pytest.mark.parametrize(
    ("args", "code", "problem"),
    [
        (("create",), 2, "needs a NAME"),
        (("create", "bad name"), 2, "token name"),
        (("create", "grafana"), 2, "exists"),
        (("revoke", "nobody"), 7, "no token named 'nobody'"),
    ],
)
def test_bad_token_commands_say_why_in_one_line_and_change_nothing(
    tmp_path: Path, moto_server: str, secret: str, args: tuple[str, ...], code: int, problem: str
) -> None:
    assert _token(tmp_path, moto_server, "create", "grafana", secret=secret).returncode == 0
    before = _stored(moto_server, secret)
    done = _token(tmp_path, moto_server, *args, secret=secret)
    assert done.returncode == code, done.stderr
    assert problem in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert _stored(moto_server, secret) == before


def test_without_the_secret_setting_the_command_names_it(tmp_path: Path, moto_server: str) -> None:
    done = _token(tmp_path, moto_server, "list")
    assert done.returncode == 2 and "BACKUP_API_TOKENS_SECRET is not set" in done.stderr
