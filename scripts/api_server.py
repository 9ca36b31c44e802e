"""`make api`: the admin API offline, on 127.0.0.1:8080 by default, as it runs on AWS.

API Gateway's part is emulated from the synthesized stack (tests/api_gateway.py) in front of the real
authorizer and API function; behind them is the offline world (tests/offline.py): a moto server with
the synthesized state machines executed in-process, and real PostgreSQL and Redis with the sample
dataset. The token is ADMIN_TOKEN (generated and printed once when unset). Ctrl-C or SIGTERM stops it
all and removes its temporary folders.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shlex
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from questboard_backup.admin.tokens import TOKEN_PATTERN, new_token  # noqa: E402
from tests.api_gateway import (  # noqa: E402 - needs the repo on sys.path first
    MAX_BODY_BYTES,
    Function,
    Gateway,
    HttpRequest,
    HttpResponse,
    RestApi,
    gateway_error,
)
from tests.lambda_runtime import invoke_handler  # noqa: E402
from tests.local_api import FOLDERS, READY  # noqa: E402
from tests.offline import served_world  # noqa: E402
from tests.servers import wait_until  # noqa: E402

#: The readiness probe's User-Agent: its request is not logged.
PROBE_AGENT = "questboard-local-api-readiness-probe"


class BadToken(ValueError):
    """ADMIN_TOKEN is set but cannot be a token."""


def admin_token(environ: Mapping[str, str]) -> tuple[str, bool]:
    """ADMIN_TOKEN, or a fresh token when it is unset; and whether it was generated."""
    token = environ.get("ADMIN_TOKEN", "")
    if not token:
        return new_token(), True
    if not re.match(TOKEN_PATTERN, token):
        raise BadToken(
            "ADMIN_TOKEN must be 20-200 letters, digits, '_' or '-' (unset it to get one generated)"
        )
    return token, False


def invoke(function: Function, event: dict[str, Any]) -> tuple[Any, dict[str, str] | None]:
    return invoke_handler(function.handler, function.name, function.timeout_seconds, event)


class ApiRequestHandler(BaseHTTPRequestHandler):
    """Hands each request to the gateway; holds no more of a body than API Gateway accepts."""

    protocol_version = "HTTP/1.1"
    server_version = "questboard-local-api"
    gateway: Gateway  # set on the server's subclass

    def _read_body(self) -> bytes | None:
        """The body, or None when it is over API Gateway's limit (then read to its end and dropped)."""
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        pieces = self._chunks() if chunked else self._pieces(int(self.headers.get("Content-Length") or 0))
        kept, total = [], 0
        for piece in pieces:
            total += len(piece)
            if total <= MAX_BODY_BYTES:
                kept.append(piece)
        return b"".join(kept) if total <= MAX_BODY_BYTES else None

    def _pieces(self, length: int) -> Iterator[bytes]:
        while length > 0:
            piece = self.rfile.read(min(length, 1 << 16))
            if not piece:
                return
            length -= len(piece)
            yield piece

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1 << 16).strip():  # trailers, up to the blank line
                    pass
                return
            yield from self._pieces(size)
            self.rfile.readline()  # the chunk's CRLF

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "malformed Content-Length or chunk size")
            return
        if body is None:
            response = gateway_error(self.gateway.api, "REQUEST_TOO_LARGE", str(uuid.uuid4()))
        else:
            request = HttpRequest(
                method=self.command,
                target=self.path,
                headers=tuple(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
            )
            response = self.gateway.handle(request)
        self._write(response)

    def _write(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def __getattr__(self, name: str) -> Any:
        """``do_<METHOD>`` for every method, the unusual ones (TRACE, QUERY...) included: the gateway
        answers those the API has no method for as API Gateway does, never http.server's 501."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.headers.get("User-Agent") != PROBE_AGENT:
            super().log_request(code, size)


def _serving(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/", headers={"User-Agent": PROBE_AGENT})
        return connection.getresponse().status > 0
    except OSError:
        return False
    finally:
        connection.close()


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C must not cut the stopping of the servers short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _environment_lines(environment: dict[str, str]) -> list[str]:
    return [f"{name}={shlex.quote(value)}" for name, value in environment.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument(
        "--env-file", type=Path, help="also write API_URL and the operator's environment (KEY=value lines)"
    )
    args = parser.parse_args(argv)
    try:
        token, generated = admin_token(os.environ)
    except BadToken as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    handler: type[ApiRequestHandler] = type("Handler", (ApiRequestHandler,), {})
    try:
        server = ThreadingHTTPServer((args.host, args.port), handler)
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    server.daemon_threads = True
    port = int(server.server_address[1])
    probe_host = "127.0.0.1" if args.host in ("", "0.0.0.0") else args.host
    url = f"http://{probe_host}:{port}"
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        with served_world(token, on_step=lambda step: print(f"{step}...", flush=True)) as served:
            handler.gateway = Gateway(RestApi.from_template(served.world.template), invoke)
            thread = threading.Thread(target=server.serve_forever, name="api-server", daemon=True)
            thread.start()
            try:
                wait_until(lambda: _serving(probe_host, port), f"the admin API on {url}")
                environment = {"API_URL": url, **served.environment}
                if args.env_file:
                    args.env_file.write_text("\n".join(_environment_lines(environment)) + "\n")
                print("\nto verify a downloaded set (`scripts/backup.sh verify <folder>`), export:")
                print(
                    "".join(f"  export {line}\n" for line in _environment_lines(served.environment)), end=""
                )
                if generated:
                    print(
                        "\nADMIN_TOKEN was not set; this run's token (shown once), export it to call the API:"
                    )
                    print(f"  export ADMIN_TOKEN={token}")
                print(f'\ntry: curl -H "Authorization: Bearer $ADMIN_TOKEN" {url}/api/admin/backup/status')
                print(f"{FOLDERS} {' '.join(str(folder) for folder in served.folders)}")
                print(f"{READY} {url}", flush=True)
                threading.Event().wait()  # until Ctrl-C or SIGTERM
            finally:
                server.shutdown()
                server.server_close()
    except KeyboardInterrupt:
        print("stopped: servers stopped, temporary folders removed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
