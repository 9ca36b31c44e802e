"""A fault-injecting HTTP proxy in front of the moto server, to see what the engine's real S3 client does
when S3 misbehaves (botocore's retries included: the faults arrive as HTTP responses, below them).

Every request is forwarded to the upstream as it came (method, path, query, headers with Host, body;
only hop-by-hop headers such as Connection and Expect stay behind, and a chunked body is sent with its
length) and the upstream's answer is sent back, unless the test told the proxy otherwise:

- ``fail(predicate, times=N)`` answers the first N matching requests (or every one, ``times=None``)
  with an S3 XML error (503 SlowDown by default) and forwards nothing;
- ``hold(predicate)`` parks matching requests until released (forwarded) or dropped (connection closed).

Everything the proxy answered is recorded in ``seen``, so a test can prove its faults were hit. Point
a client at it the way an operator would: ``AWS_ENDPOINT_URL=proxy.url``.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

WAIT = 30.0
#: Headers that belong to one hop (client-proxy or proxy-upstream), never forwarded.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"}
#: Request headers the proxy sets itself, from the body it read.
_BODY_FRAMING = {"content-length", "transfer-encoding"}
_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "AccessDenied": "Access Denied",
}
_RESPONSES = {status.value: status.phrase for status in HTTPStatus}


@dataclass(frozen=True)
class Request:
    """One request as the proxy received it (path-style S3: ``/bucket/key``)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.target).path)

    @property
    def query(self) -> dict[str, str]:
        parsed = parse_qs(urlsplit(self.target).query, keep_blank_values=True)
        return {name: values[0] for name, values in parsed.items()}

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").partition("/")[0]

    @property
    def key(self) -> str:
        return self.path.lstrip("/").partition("/")[2]

    @property
    def part_number(self) -> int:
        return int(self.query.get("partNumber", "0"))

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    @property
    def operation(self) -> str:
        """The S3 operation, for the ones the engine uses (else METHOD, e.g. ``GET``)."""
        method, query, key = self.method, self.query, self.key
        if method == "PUT" and "partNumber" in query:
            return "UploadPart"
        if method == "POST" and "uploads" in query:
            return "CreateMultipartUpload"
        if method == "POST" and "uploadId" in query:
            return "CompleteMultipartUpload"
        if method == "DELETE" and "uploadId" in query:
            return "AbortMultipartUpload"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        if method == "GET" and not key:
            return "ListMultipartUploads" if "uploads" in query else "ListObjects"
        if key and method in ("PUT", "GET") and "tagging" in query:
            return "PutObjectTagging" if method == "PUT" else "GetObjectTagging"
        if key and method == "PUT":
            return "CopyObject" if self.header("x-amz-copy-source") else "PutObject"
        if key:
            return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)
        return method


Predicate = Callable[[Request], bool]


@dataclass(frozen=True)
class Seen:
    """A request and what the proxy answered: the upstream's status, a fault's, or 0 when dropped."""

    request: Request
    status: int
    faulted: bool


@dataclass
class Fault:
    predicate: Predicate
    times: int | None  # None: every matching request
    status: int
    code: str
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass
class Hold:
    predicate: Predicate
    held: list[Request] = field(default_factory=list)  # every request it parked, in order
    _released: threading.Event = field(default_factory=threading.Event)
    _forward: bool = True

    def release(self, forward: bool = True) -> None:
        """Let the held requests (and later matching ones) go on: forwarded, or dropped unanswered."""
        self._forward = forward
        self._released.set()


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        split = urlsplit(upstream)
        assert split.scheme == "http" and split.hostname and split.port, upstream
        self._upstream = (split.hostname, split.port)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._holds: list[Hold] = []
        self._seen: list[Seen] = []
        self._sockets: set[socket.socket] = set()
        self._request_ids = itertools.count(1)
        self._stopping = False
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fault-proxy")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving, drop held requests and close every client connection; returns once every
        request thread has ended, so nothing reaches the upstream afterwards."""
        with self._lock:
            self._stopping = True
            holds, sockets = list(self._holds), list(self._sockets)
        for hold in holds:
            hold.release(forward=False)
        self._server.shutdown()
        for sock in sockets:  # idle keep-alive connections would keep their threads waiting
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the request threads
        self._thread.join(WAIT)

    # What tests call.

    def fail(
        self, predicate: Predicate, *, times: int | None = 1, status: int = 503, code: str = "SlowDown"
    ) -> Fault:
        """Answer the first ``times`` requests matching ``predicate`` (every one for None) with an S3
        error; earlier rules are consulted first."""
        fault = Fault(predicate, times, status, code)
        with self._lock:
            self._faults.append(fault)
        return fault

    def hold(self, predicate: Predicate) -> Hold:
        """Park every request matching ``predicate`` until the hold is released."""
        hold = Hold(predicate)
        with self._lock:
            self._holds.append(hold)
        return hold

    def heal(self) -> None:
        """No more faults; held requests are dropped (their clients are gone or have given up)."""
        with self._lock:
            holds, self._holds, self._faults = list(self._holds), [], []
        for hold in holds:
            hold.release(forward=False)

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def statuses(self, predicate: Predicate) -> list[int]:
        """What the proxy answered to each request matching ``predicate``, in order."""
        return [seen.status for seen in self.seen if predicate(seen.request)]

    # The request threads.

    def _decide(self, request: Request) -> Fault | Hold | None:
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.predicate(request):
                    fault.hits += 1
                    return fault
            for hold in self._holds:
                if not hold._released.is_set() and hold.predicate(request):
                    hold.held.append(request)
                    return hold
        return None

    def _record(self, request: Request, status: int, faulted: bool) -> None:
        with self._lock:
            self._seen.append(Seen(request, status, faulted))

    def _error_body(self, request: Request, code: str) -> bytes:
        request_id = f"QBFAULT{next(self._request_ids):08d}"
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(_MESSAGES.get(code, code))}</Message>"
            f"<Resource>{escape(request.path)}</Resource><RequestId>{request_id}</RequestId></Error>"
        ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins them
    block_on_close = True
    request_queue_size = 64

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)  # port 0: the kernel picks a free one, no race


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects
    timeout = WAIT
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        with self.server.proxy._lock:
            self.server.proxy._sockets.add(self.connection)
            stopping = self.server.proxy._stopping
        if stopping:  # accepted just before stop() looked: end it as stop() ends the others
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with self.server.proxy._lock:
            self.server.proxy._sockets.discard(self.connection)
        if self._upstream is not None:
            self._upstream.close()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests assert on `seen`
        pass

    def _body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()  # read whatever the answer, so the connection stays usable
        request = Request(self.command, self.path, tuple(self.headers.items()))
        decision = proxy._decide(request)
        if isinstance(decision, Hold):
            decision._released.wait()
            if not decision._forward:
                proxy._record(request, 0, False)
                self.close_connection = True
                return
        if isinstance(decision, Fault):
            payload = proxy._error_body(request, decision.code)
            headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(payload)))]
            answer = (decision.status, _RESPONSES.get(decision.status, ""), headers, payload)
        else:
            answer = self._forward(body)
        # Recorded before the client has its answer, so what a client saw is in `seen` once it returns.
        proxy._record(request, answer[0], isinstance(decision, Fault))
        self._reply(*answer)

    def _send_upstream(self, body: bytes) -> http.client.HTTPResponse:
        reused = self._upstream is not None
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*self.server.proxy._upstream, timeout=WAIT)
        upstream = self._upstream
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP | _BODY_FRAMING:
                    upstream.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            return upstream.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            upstream.close()
            self._upstream = None
            if not reused:
                raise
            return self._send_upstream(body)  # the upstream had closed the idle connection: a new one

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        response = self._send_upstream(body)
        payload = response.read()
        if response.will_close and self._upstream is not None:
            self._upstream.close()
            self._upstream = None
        headers = []
        for name, value in response.getheaders():
            lowered = name.lower()
            if lowered in _HOP_BY_HOP or (lowered in _BODY_FRAMING and self.command != "HEAD"):
                continue  # Content-Length is set from what was read (the upstream may send chunks)
            headers.append((name, value))
        if self.command != "HEAD" and response.status not in (204, 304):
            headers.append(("Content-Length", str(len(payload))))
        return response.status, response.reason, headers, payload

    def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
