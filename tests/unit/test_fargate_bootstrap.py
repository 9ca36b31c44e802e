"""layers/fargate_bootstrap.py, the Fargate task's stdlib-only command: its hand-made SigV4 GETs are
accepted by S3 (the moto server, with IAM authentication switched on, so a wrong signature, secret or
session token is refused) and are byte for byte what botocore's own S3 signer makes; credentials come
from the ECS container credentials endpoint; zips unpack as Lambda unpacks them (modes kept, nothing
outside); and the whole script, passed inline as ``python -c``, downloads the code and layers and
starts ``python -m lambdas.task_runner`` from /var/task with /opt/python and /opt/bin in reach."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import stat
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from layers import fargate_bootstrap as bootstrap
from layers.fargate_bootstrap import BootstrapError, Credentials
from tests.fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
#: The CDK bootstrap's assets bucket, as it is named.
ASSETS_BUCKET = f"cdk-hnb659fds-assets-{ACCOUNT}-{REGION}"
OTHER_BUCKET = "qb-not-for-the-task"
#: A key S3 and SigV4 encode: spaces, plus, tilde, equals, non-ASCII.
AWKWARD_KEY = "assets/a b+c~d=é (1).zip"


def _admin(name: str, endpoint: str) -> Any:
    return boto3.client(
        name,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@contextlib.contextmanager
def iam_enforced(endpoint: str) -> Iterator[None]:
    """Every request to the moto server authenticated (signature, key, session token) and authorised by
    IAM until the block ends; then as before (the server is shared by the session)."""

    def reset(count: str) -> str:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would be parsed away by the server
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])

    previous = reset("0")
    try:
        yield
    finally:
        reset(previous)


@dataclass
class TaskRole:
    """A role that may read the assets bucket only, and the temporary credentials of a session of it
    (what the ECS credentials endpoint hands a task)."""

    credentials: Credentials
    endpoint: str
    objects: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, body: bytes, bucket: str = ASSETS_BUCKET) -> str:
        _admin("s3", self.endpoint).put_object(Bucket=bucket, Key=key, Body=body)
        self.objects[key] = body
        return f"s3://{bucket}/{key}"


@pytest.fixture
def task_role(moto_server: str) -> Iterator[TaskRole]:
    s3 = _admin("s3", moto_server)
    for bucket in (ASSETS_BUCKET, OTHER_BUCKET):
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    iam = _admin("iam", moto_server)
    name = f"qb-task-{threading.get_ident() % 100000}-{id(s3) % 100000}"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{ASSETS_BUCKET}/*"}
        ],
    }
    iam.put_role_policy(RoleName=name, PolicyName="assets", PolicyDocument=json.dumps(policy))
    session = _admin("sts", moto_server).assume_role(RoleArn=arn, RoleSessionName="task")["Credentials"]
    yield TaskRole(
        Credentials(session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"]), moto_server
    )
    iam.delete_role_policy(RoleName=name, PolicyName="assets")
    iam.delete_role(RoleName=name)


# SigV4 against S3


def test_a_signed_get_with_the_task_roles_session_is_accepted_and_anything_else_refused(
    task_role: TaskRole, tmp_path: Path
) -> None:
    plain = task_role.put("0123abcd.zip", b"the code asset" * 1000)
    awkward = task_role.put(AWKWARD_KEY, b"awkward key")
    elsewhere = task_role.put("secret.zip", b"not for the task", bucket=OTHER_BUCKET)
    good = task_role.credentials
    with iam_enforced(task_role.endpoint):
        for url, key in ((plain, "0123abcd.zip"), (awkward, AWKWARD_KEY)):
            out = tmp_path / "got.zip"
            assert bootstrap.download(url, out, REGION, good, task_role.endpoint) == len(
                task_role.objects[key]
            )
            assert out.read_bytes() == task_role.objects[key]
        # moto checks what AWS checks: the signature, the session token, then the role's policy.
        refused = {
            "403 SignatureDoesNotMatch": Credentials(good.access_key, good.secret_key + "x", good.token),
            "400 InvalidToken": Credentials(good.access_key, good.secret_key, f"{good.token}x"),
        }
        for answer, credentials in refused.items():
            with pytest.raises(BootstrapError, match=f"HTTP {answer}$"):
                bootstrap.download(plain, tmp_path / "no.zip", REGION, credentials, task_role.endpoint)
        with pytest.raises(BootstrapError, match="HTTP 403 AccessDenied"):
            bootstrap.download(elsewhere, tmp_path / "no.zip", REGION, good, task_role.endpoint)


def test_a_busy_s3_is_tried_again_and_a_refusal_is_final(task_role: TaskRole, tmp_path: Path) -> None:
    url = task_role.put("f00d.zip", b"layer" * 100)
    got = tmp_path / "got.zip"
    with FaultProxy(task_role.endpoint) as proxy, iam_enforced(task_role.endpoint):
        is_get = lambda request: request.operation == "GetObject"  # noqa: E731
        proxy.fail(is_get, times=2)  # 503 SlowDown twice, then S3 answers
        assert bootstrap.download(url, got, REGION, task_role.credentials, proxy.url) == 500
        assert got.read_bytes() == b"layer" * 100
        assert proxy.statuses(is_get) == [503, 503, 200]  # each try signed anew: S3 took the third
        proxy.fail(is_get, times=None)
        with pytest.raises(BootstrapError, match=r"f00d.zip: HTTP 503 SlowDown$"):
            bootstrap.download(url, got, REGION, task_role.credentials, proxy.url)
        assert proxy.statuses(is_get)[3:] == [503] * bootstrap.ATTEMPTS
        proxy.heal()
        proxy.fail(is_get, times=None, status=403, code="AccessDenied")
        with pytest.raises(BootstrapError, match=r"HTTP 403 AccessDenied$"):
            bootstrap.download(url, got, REGION, task_role.credentials, proxy.url)
        assert proxy.statuses(is_get)[3 + bootstrap.ATTEMPTS :] == [403]


@pytest.mark.parametrize(
    ("url", "token"),
    [
        (f"https://{ASSETS_BUCKET}.s3.{REGION}.amazonaws.com/0123abcd.zip", "session-token"),
        (bootstrap.object_url(f"s3://{ASSETS_BUCKET}/{AWKWARD_KEY}", REGION), None),
        ("http://127.0.0.1:5000/bucket/key%20with%20space?versionId=3%2F4&b=x y&a=", "t"),
    ],
)
def test_the_signature_is_the_one_botocores_s3_signer_computes(url: str, token: str | None) -> None:
    credentials = Credentials("ASIAQBTESTKEY0000000", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token)
    now = datetime.datetime(2026, 12, 3, 5, 6, 7, tzinfo=datetime.UTC)
    ours = bootstrap.sigv4_get_request(url, "eu-west-1", credentials, now)
    authorization = str(ours.get_header("Authorization"))
    # What a verifier does (moto, as S3): the headers we signed, the time we sent, botocore's signer.
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {name: value for name, value in ours.header_items() if name.lower() in signed}
    request = AWSRequest(method="GET", url=ours.full_url, headers=headers)
    request.context["timestamp"] = "20261203T050607Z"
    auth = S3SigV4Auth(
        BotoCredentials(credentials.access_key, credentials.secret_key, token), "s3", "eu-west-1"
    )
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    assert authorization.endswith(f"Signature={expected}")
    scope = "20261203/eu-west-1/s3/aws4_request"
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, ")
    assert sorted(signed) == signed and {"host", "x-amz-date", "x-amz-content-sha256"} <= set(signed)
    assert ("x-amz-security-token" in signed) == bool(token)


def test_an_asset_url_is_virtual_hosted_on_aws_and_path_style_on_an_endpoint() -> None:
    assert (
        bootstrap.object_url("s3://cdk-assets/abc.zip", "eu-west-1")
        == "https://cdk-assets.s3.eu-west-1.amazonaws.com/abc.zip"
    )
    assert bootstrap.object_url("s3://b/a b.zip", "eu-west-1", "http://127.0.0.1:9/") == (
        "http://127.0.0.1:9/b/a%20b.zip"
    )
    for bad in ("https://b/k", "s3://bucket", "s3:///key"):
        with pytest.raises(BootstrapError, match="not an s3://bucket/key URL"):
            bootstrap.object_url(bad, "eu-west-1")


# Credentials


class _Endpoint(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server: CredentialsEndpoint = self.server  # type: ignore[assignment]
        server.seen.append((self.path, self.headers.get("Authorization")))
        body = server.body.encode()
        self.send_response(server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CredentialsEndpoint(ThreadingHTTPServer):
    """The ECS container credentials endpoint, on 127.0.0.1 instead of 169.254.170.2."""

    def __init__(self, body: dict[str, Any] | str, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _Endpoint)
        self.body = body if isinstance(body, str) else json.dumps(body)
        self.status = status
        self.seen: list[tuple[str, str | None]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> CredentialsEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)


ROLE_CREDENTIALS = {
    "AccessKeyId": "ASIAQBTASKROLE000000",
    "SecretAccessKey": "task-secret",
    "Token": "task-session-token",
    "Expiration": "2026-12-03T12:00:00Z",
    "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/qb-task",
}


def test_credentials_come_from_the_ecs_endpoint_at_the_relative_uri() -> None:
    relative = "/v2/credentials/0b1c2d3e-task"
    with CredentialsEndpoint(ROLE_CREDENTIALS) as endpoint:
        got = bootstrap.fetch_credentials(
            {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": relative}, host=endpoint.url
        )
    assert got == Credentials("ASIAQBTASKROLE000000", "task-secret", "task-session-token")
    assert endpoint.seen == [(relative, None)]
    assert "task-secret" not in repr(got) and "task-session-token" not in repr(got)


def test_a_full_uri_gets_the_authorization_token_and_static_keys_come_first(tmp_path: Path) -> None:
    with CredentialsEndpoint(ROLE_CREDENTIALS) as endpoint:
        env = {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{endpoint.url}/creds",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": "t0k",
        }
        assert bootstrap.fetch_credentials(env).access_key == "ASIAQBTASKROLE000000"
        token_file = tmp_path / "token"
        token_file.write_text("from-file\n")
        del env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        bootstrap.fetch_credentials({**env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file)})
        static = {**env, "AWS_ACCESS_KEY_ID": "AKIASTATIC", "AWS_SECRET_ACCESS_KEY": "s"}
        assert bootstrap.fetch_credentials(static) == Credentials("AKIASTATIC", "s", None)
    assert endpoint.seen == [("/creds", "t0k"), ("/creds", "from-file")]


@pytest.mark.parametrize(
    ("body", "status"), [("not json", 200), ({"Code": "Forbidden"}, 403), ({"x": 1}, 200)]
)
def test_an_endpoint_without_credentials_is_one_line_that_quotes_nothing(
    body: dict[str, Any] | str, status: int
) -> None:
    with CredentialsEndpoint(body, status) as endpoint, pytest.raises(BootstrapError) as raised:
        bootstrap.fetch_credentials({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/x"}, host=endpoint.url)
    assert "gave no credentials" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(BootstrapError, match="no credentials"):
        bootstrap.fetch_credentials({})


# Unpacking


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    """A zip whose entries record Unix modes (as CDK's asset zips do); mode 0: none recorded."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(2026, 12, 3, 0, 0, 0))
            if mode:
                info.create_system = 3
                info.external_attr = mode << 16
            else:
                info.create_system = 0
            archive.writestr(info, body)
    return buffer.getvalue()


def test_unpack_keeps_modes_and_links_as_lambda_does(tmp_path: Path) -> None:
    archive = tmp_path / "layer.zip"
    archive.write_bytes(
        _zip(
            [
                ("bin/", b"", stat.S_IFDIR | 0o755),
                ("bin/pg_dump", b"#!/bin/sh\necho dump\n", stat.S_IFREG | 0o755),
                ("lib/libpq.so.5", b"ELF", stat.S_IFREG | 0o644),
                ("lib/libpq.so", b"libpq.so.5", stat.S_IFLNK | 0o777),
                ("python/module.py", b"X = 1\n", 0),
            ]
        )
    )
    opt = tmp_path / "opt"
    assert bootstrap.unpack(archive, opt) == 3
    assert stat.S_IMODE((opt / "bin" / "pg_dump").stat().st_mode) == 0o755
    assert stat.S_IMODE((opt / "lib" / "libpq.so.5").stat().st_mode) == 0o644
    assert stat.S_IMODE((opt / "python" / "module.py").stat().st_mode) == 0o644
    assert (opt / "lib" / "libpq.so").is_symlink() and (opt / "lib" / "libpq.so").read_bytes() == b"ELF"
    assert subprocess.run([str(opt / "bin" / "pg_dump")], capture_output=True, check=True).stdout == b"dump\n"
    # A later layer's file replaces an earlier one's, as layers do in /opt.
    archive.write_bytes(_zip([("bin/pg_dump", b"#!/bin/sh\necho newer\n", stat.S_IFREG | 0o750)]))
    bootstrap.unpack(archive, opt)
    assert (
        subprocess.run([str(opt / "bin" / "pg_dump")], capture_output=True, check=True).stdout == b"newer\n"
    )
    assert stat.S_IMODE((opt / "bin" / "pg_dump").stat().st_mode) == 0o750


@pytest.mark.parametrize(
    ("name", "body", "mode"),
    [
        ("../outside.txt", b"x", 0),
        ("/etc/outside.txt", b"x", 0),
        ("bin/../../outside.txt", b"x", 0),
        ("lib/escape", b"../../outside.txt", stat.S_IFLNK | 0o777),
        ("lib/absolute", b"/etc/passwd", stat.S_IFLNK | 0o777),
    ],
)
def test_unpack_refuses_an_entry_or_link_outside_its_folder(
    tmp_path: Path, name: str, body: bytes, mode: int
) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip([(name, body, mode)]))
    dest = tmp_path / "a" / "opt"
    with pytest.raises(BootstrapError, match="outside its folder"):
        bootstrap.unpack(archive, dest)
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["a", "evil.zip", "opt"]


# The whole command


STUB_RUNNER = """
import json, os, shutil, subprocess, sys
import qb_layer_marker
pg_dump = shutil.which("pg_dump")
print(json.dumps({
    "runner": __file__,
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "marker": qb_layer_marker.__file__,
    "pg_dump": pg_dump,
    "pg_dump_says": subprocess.run([pg_dump], capture_output=True, text=True).stdout.strip(),
    "ld_library_path": os.environ["LD_LIBRARY_PATH"],
    "pg_bin_dir": os.environ["BACKUP_PG_BIN_DIR"],
    "handler": os.environ.get("QB_TASK_HANDLER"),
}))
"""


def test_the_inline_command_fetches_the_assets_and_starts_the_runner_as_lambda_would(
    task_role: TaskRole, tmp_path: Path
) -> None:
    """The stub stands for the code asset: its ``lambdas/task_runner.py`` reports where it runs."""
    code = task_role.put(
        "c0de.zip",
        _zip(
            [
                ("lambdas/__init__.py", b"", 0o100644),
                ("lambdas/task_runner.py", STUB_RUNNER.encode(), 0o100644),
            ]
        ),
    )
    python_layer = task_role.put("9f1e.zip", _zip([("python/qb_layer_marker.py", b"", 0o100644)]))
    pg_layer = task_role.put(
        "a6b7.zip", _zip([("bin/pg_dump", b"#!/bin/sh\necho from-the-layer\n", 0o100755)])
    )
    task_root, opt = tmp_path / "var" / "task", tmp_path / "opt"
    with CredentialsEndpoint(
        {
            "AccessKeyId": task_role.credentials.access_key,
            "SecretAccessKey": task_role.credentials.secret_key,
            "Token": task_role.credentials.token,
        }
    ) as endpoint:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "AWS_REGION": REGION,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{endpoint.url}/v2/credentials",
            "AWS_ENDPOINT_URL_S3": task_role.endpoint,
            "QB_CODE_ASSET_URL": code,
            "QB_LAYER_URLS": f"{python_layer}, {pg_layer}",
            "QB_TASK_ROOT": str(task_root),
            "QB_OPT_ROOT": str(opt),
            "QB_TASK_HANDLER": "backup_dump",
        }
        source = (REPO / "layers" / "fargate_bootstrap.py").read_text(encoding="utf-8")
        with iam_enforced(task_role.endpoint):
            done = subprocess.run(
                [sys.executable, "-c", source],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["runner"] == str(task_root / "lambdas" / "task_runner.py")
    assert report["argv"][0] == report["runner"]  # run as python -m lambdas.task_runner
    assert report["cwd"] == str(task_root)
    assert report["marker"] == str(opt / "python" / "qb_layer_marker.py")
    assert report["pg_dump"] == str(opt / "bin" / "pg_dump") and report["pg_dump_says"] == "from-the-layer"
    assert report["ld_library_path"].endswith(f":{opt}/lib") and report["pg_bin_dir"] == f"{opt}/bin"
    assert report["handler"] == "backup_dump"
    assert task_role.credentials.secret_key not in done.stderr + done.stdout


def test_the_command_says_in_one_line_why_it_cannot_start(task_role: TaskRole, tmp_path: Path) -> None:
    source = (REPO / "layers" / "fargate_bootstrap.py").read_text(encoding="utf-8")
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": task_role.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": task_role.credentials.secret_key,
        "AWS_SESSION_TOKEN": str(task_role.credentials.token),
        "AWS_ENDPOINT_URL": task_role.endpoint,
        "QB_CODE_ASSET_URL": f"s3://{ASSETS_BUCKET}/missing.zip",
        "QB_TASK_ROOT": str(tmp_path / "task"),
        "QB_OPT_ROOT": str(tmp_path / "opt"),
    }
    with iam_enforced(task_role.endpoint):
        done = subprocess.run(
            [sys.executable, "-c", source], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == bootstrap.EXIT_BOOTSTRAP_FAILED
    assert done.stderr.strip().splitlines() == [
        f"fargate_bootstrap: cannot download s3://{ASSETS_BUCKET}/missing.zip: HTTP 404 NoSuchKey"
    ]
