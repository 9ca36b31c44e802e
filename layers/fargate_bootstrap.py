"""The command of the Fargate task that runs a dump or restore too long for Lambda (docs/fargate.md).

Standard library only: the container is a stock ``python:3.12-slim`` (arm64) image, pulled through an
ECR pull-through cache, with nothing built or installed. This script, passed inline as the container's
command (``python -c <this file>``), downloads the very assets CDK uploads for the Lambda functions
(the code zip and the two layer zips, from the CDK assets bucket through the S3 gateway endpoint),
signing each GET with SigV4 by hand with the task role's credentials (from the ECS container
credentials endpoint), unpacks them as Lambda does (layers into /opt, so /opt/python and /opt/bin
exist; the code into /var/task) and replaces itself with ``python -m lambdas.task_runner``.

Environment: ``QB_CODE_ASSET_URL`` (``s3://bucket/key`` of the code zip), ``QB_LAYER_URLS`` (the layer
zips' ``s3://`` URLs, comma-separated, in the functions' layer order), ``AWS_REGION``. Tests and local
runs may set ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (path-style then), ``QB_TASK_ROOT`` and
``QB_OPT_ROOT`` (instead of /var/task and /opt). Exit code 5, with one line on stderr, when it fails.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import posixpath
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

#: The ECS container credentials endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is a path on it).
ECS_CREDENTIALS_HOST = "http://169.254.170.2"
TASK_ROOT = "/var/task"
OPT_ROOT = "/opt"
#: The hash of an empty payload: what a GET's x-amz-content-sha256 says.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
ALGORITHM = "AWS4-HMAC-SHA256"
TIMEOUT_SECONDS = 30
CHUNK = 1 << 20
EXIT_BOOTSTRAP_FAILED = 5
#: Tries of each download (5xx answers and broken connections), the pause growing by this each time.
ATTEMPTS = 3
RETRY_DELAY_SECONDS = 0.5


class BootstrapError(Exception):
    """The task cannot start: no credentials, an asset that cannot be read or unpacked."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(access_key={self.access_key!r}, secret_key=***, token={'***' if self.token else None})"


def fetch_credentials(env: Mapping[str, str], host: str = ECS_CREDENTIALS_HOST) -> Credentials:
    """The credentials the AWS SDKs would use here, in their order: static ones in the environment,
    else the container credentials endpoint (ECS: ``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`` on
    ``host``; or ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` with ``AWS_CONTAINER_AUTHORIZATION_TOKEN``)."""
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return Credentials(
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
        )
    relative = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
    full = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
    if relative:
        url = host.rstrip("/") + "/" + relative.lstrip("/")
    elif full:
        url = full
    else:
        raise BootstrapError(
            "no credentials: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (ECS) nor "
            "AWS_CONTAINER_CREDENTIALS_FULL_URI nor AWS_ACCESS_KEY_ID is set"
        )
    request = urllib.request.Request(url)
    token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "")
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    if token and not relative:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            body = json.loads(response.read())
        return Credentials(body["AccessKeyId"], body["SecretAccessKey"], body.get("Token") or None)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BootstrapError(
            f"the container credentials endpoint gave no credentials: {type(error).__name__}"
        ) from None


def object_url(s3_url: str, region: str, endpoint: str = "") -> str:
    """The HTTPS URL of ``s3://bucket/key``: virtual-hosted on the regional S3 endpoint (which the S3
    gateway endpoint serves), or path-style on ``endpoint`` when one is given."""
    split = urllib.parse.urlsplit(s3_url)
    bucket, key = split.netloc, split.path.lstrip("/")
    if split.scheme != "s3" or not bucket or not key:
        raise BootstrapError(f"not an s3://bucket/key URL: {s3_url!r}")
    quoted = urllib.parse.quote(key, safe="/~")
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}/{quoted}"
    return f"https://{bucket}.s3.{region}.amazonaws.com/{quoted}"


def _sign(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def sigv4_get_request(
    url: str, region: str, credentials: Credentials, now: datetime.datetime
) -> urllib.request.Request:
    """A GET of ``url`` signed for S3 with AWS Signature Version 4 (headers: host, x-amz-date,
    x-amz-content-sha256 and, with temporary credentials, x-amz-security-token)."""
    split = urllib.parse.urlsplit(url)
    # S3 takes the path URI-encoded once, as sent: normalise it, then send what was signed.
    path = urllib.parse.quote(urllib.parse.unquote(split.path) or "/", safe="/~")
    pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
    query = "&".join(
        f"{urllib.parse.quote(name, safe='~')}={urllib.parse.quote(value, safe='~')}"
        for name, value in sorted(pairs)
    )
    moment = now.astimezone(datetime.UTC)
    amz_date, day = moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")
    headers = {"host": split.netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            "GET",
            path,
            query,
            "".join(f"{name}:{headers[name].strip()}\n" for name in sorted(headers)),
            signed,
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = _sign(("AWS4" + credentials.secret_key).encode("utf-8"), day)
    for part in (region, "s3", "aws4_request"):
        key = _sign(key, part)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    target = urllib.parse.urlunsplit((split.scheme, split.netloc, path, query, ""))
    request = urllib.request.Request(target, method="GET")
    for name, value in headers.items():
        request.add_header(name, value)
    request.add_header(
        "Authorization",
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}",
    )
    return request


def _s3_error(error: urllib.error.HTTPError) -> str:
    body = error.read(2048).decode("utf-8", "replace")
    code = body.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in body else ""
    return f"HTTP {error.code}" + (f" {code}" if code else "")


def download(
    s3_url: str, destination: Path, region: str, credentials: Credentials, endpoint: str = ""
) -> int:
    """Stream ``s3_url`` into ``destination``; returns its size in bytes. A 5xx answer or a broken
    connection is tried again (ATTEMPTS in all, each request signed anew); a 4xx is final."""
    url = object_url(s3_url, region, endpoint)
    for attempt in range(1, ATTEMPTS + 1):
        request = sigv4_get_request(url, region, credentials, datetime.datetime.now(datetime.UTC))
        try:
            with (
                urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response,
                destination.open("wb") as out,
            ):
                shutil.copyfileobj(response, out, CHUNK)
            return destination.stat().st_size
        except urllib.error.HTTPError as error:
            problem = _s3_error(error)
            if error.code < 500 or attempt == ATTEMPTS:
                raise BootstrapError(f"cannot download {s3_url}: {problem}") from None
        except OSError as error:
            problem = f"{type(error).__name__}: {error}"
            if attempt == ATTEMPTS:
                raise BootstrapError(f"cannot download {s3_url}: {problem}") from None
        print(f"fargate_bootstrap: {s3_url}: {problem}, trying again", file=sys.stderr, flush=True)
        time.sleep(RETRY_DELAY_SECONDS * attempt)  # backing off from a busy S3, not waiting for readiness
    raise AssertionError("not reached")


def _inside(dest: Path, name: str) -> Path:
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal in (".", "..") or normal.startswith("../"):
        raise BootstrapError(f"refusing a zip entry outside its folder: {name!r}")
    return dest.joinpath(*PurePosixPath(normal).parts)


def unpack(zip_path: Path, dest: Path) -> int:
    """Extract ``zip_path`` into ``dest`` as Lambda does: the Unix modes the zip records are kept (an
    executable stays executable; none recorded: 0644, folders 0755), symbolic links stay links, and no
    entry may land outside ``dest``. Returns the number of files."""
    count = 0
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            target = _inside(dest, info.filename)
            mode = (info.external_attr >> 16) if info.create_system == 3 else 0
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                target.chmod((mode & 0o777) or 0o755)
                continue
            link = archive.read(info).decode("utf-8") if stat.S_ISLNK(mode) else None
            if link is not None:  # checked before anything is made: nowhere outside
                _inside(dest, posixpath.join(posixpath.dirname(info.filename), link))
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()  # a later layer replaces an earlier one's file, as in /opt
            if link is not None:
                target.symlink_to(link)
                continue
            with archive.open(info) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            target.chmod((mode & 0o777) or 0o644)
            count += 1
    return count


def runner_environment(env: Mapping[str, str], task_root: str, opt_root: str) -> dict[str, str]:
    """The runner's environment, with the paths Lambda gives a function: the code and /opt/python on
    the import path, /opt/bin on PATH, /opt/lib after the system's libraries (as on Lambda)."""
    multiarch = getattr(sys.implementation, "_multiarch", "")
    system_libs = ["/usr/local/lib"] + ([f"/lib/{multiarch}", f"/usr/lib/{multiarch}"] if multiarch else [])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"

    def joined(*parts: str) -> str:
        return ":".join(part for part in parts if part)

    return {
        **env,
        "PYTHONPATH": joined(
            task_root,
            f"{opt_root}/python/lib/{version}/site-packages",
            f"{opt_root}/python",
            env.get("PYTHONPATH", ""),
        ),
        "PATH": joined(f"{opt_root}/bin", env.get("PATH", "/usr/local/bin:/usr/bin:/bin")),
        "LD_LIBRARY_PATH": joined(env.get("LD_LIBRARY_PATH", ""), *system_libs, f"{opt_root}/lib"),
        "BACKUP_PG_BIN_DIR": env.get("BACKUP_PG_BIN_DIR", f"{opt_root}/bin"),
    }


def prepare(env: Mapping[str, str]) -> dict[str, str]:
    """Download and unpack the layers and the code; returns the runner's environment."""
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    code = env.get("QB_CODE_ASSET_URL", "").strip()
    layers = [url.strip() for url in env.get("QB_LAYER_URLS", "").split(",") if url.strip()]
    if not region or not code:
        raise BootstrapError("AWS_REGION and QB_CODE_ASSET_URL must be set")
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or ""
    task_root, opt_root = env.get("QB_TASK_ROOT", TASK_ROOT), env.get("QB_OPT_ROOT", OPT_ROOT)
    credentials = fetch_credentials(env)
    with tempfile.TemporaryDirectory(prefix="qb-assets-") as work:
        # Layers first, in order (a later one overwrites an earlier one's files), then the code.
        assets = [(url, opt_root) for url in layers] + [(code, task_root)]
        for number, (url, root) in enumerate(assets):
            archive = Path(work) / f"asset{number}.zip"
            size = download(url, archive, region, credentials, endpoint)
            files = unpack(archive, Path(root))
            print(f"fargate_bootstrap: {url}: {size} bytes, {files} files", file=sys.stderr, flush=True)
    return runner_environment(env, task_root, opt_root)


def main() -> int:
    try:
        environment = prepare(os.environ)
    except (BootstrapError, OSError, zipfile.BadZipFile) as error:
        print(f"fargate_bootstrap: {error}", file=sys.stderr)
        return EXIT_BOOTSTRAP_FAILED
    task_root = environment.get("QB_TASK_ROOT", TASK_ROOT)
    os.chdir(task_root)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "lambdas.task_runner"], environment)
    return EXIT_BOOTSTRAP_FAILED  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main())
