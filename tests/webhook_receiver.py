"""A local HTTP server standing in for a Slack-compatible incoming webhook: it records every POST."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ReceivedPost:
    path: str
    content_type: str
    body: Any  # the JSON document posted


class WebhookReceiver:
    """Listens on 127.0.0.1 from construction (a connection before ``start`` waits in the backlog);
    answers every POST with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.posts: queue.Queue[ReceivedPost] = queue.Queue()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                posts.put(ReceivedPost(self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_post(self, timeout: float = 10) -> ReceivedPost:
        return self.posts.get(timeout=timeout)
