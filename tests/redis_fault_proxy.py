"""A TCP proxy in front of a real Redis that loses the reply to a chosen command, to see what the engine's
real redis-py client (its retries included) does when a connection breaks after the server ran it.

Commands and replies are forwarded as they came (RESP2, pipelines included). ``drop_reply(b"SWAPDB")``
lets the next such command reach Redis, which runs it, and then closes the client's connection instead
of sending the reply: what a network cut or a failover between request and reply does. With
``then_cut=True`` every connection is closed from then on, as if the network stayed down. Point a
component at ``proxy.url(db)``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from types import TracebackType


def _end(buf: bytes, at: int) -> int | None:
    """Where the RESP2 value starting at ``at`` ends, None while it is incomplete."""
    line_end = buf.find(b"\r\n", at)
    if line_end < 0:
        return None
    kind, head, after = buf[at : at + 1], buf[at + 1 : line_end], line_end + 2
    if kind in (b"+", b"-", b":"):
        return after
    if kind == b"$":
        size = int(head)
        end = after if size < 0 else after + size + 2
        return end if len(buf) >= end else None
    if kind == b"*":
        position: int | None = after
        for _ in range(max(int(head), 0)):
            assert position is not None
            position = _end(buf, position)
            if position is None:
                return None
        return position
    raise ValueError(f"not RESP2: {buf[at : at + 20]!r}")


def _name(command: bytes) -> bytes:
    """The command name of a RESP2 array of bulk strings (what redis-py sends)."""
    first = command.index(b"\r\n") + 2
    start = command.index(b"\r\n", first) + 2
    return command[start : command.index(b"\r\n", start)].upper()


class RedisFaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._drops: dict[bytes, int] = {}
        self._cut_after_drop = False
        self._cut = False
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        #: Replies lost on purpose, by command name.
        self.dropped: list[bytes] = []
        self._acceptor = threading.Thread(target=self._accept, name="redis-fault-proxy")

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/{db}"

    def drop_reply(self, command: bytes, times: int = 1, then_cut: bool = False) -> None:
        with self._lock:
            self._drops[command.upper()] = times
            self._cut_after_drop = then_cut

    def __enter__(self) -> RedisFaultProxy:
        self._acceptor.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        with self._lock:
            self._cut = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._close_all()
        self._acceptor.join()
        for thread in self._threads:
            thread.join()
        for sock in self._sockets:
            sock.close()

    def _close_all(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                client.close()
                continue
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._sockets |= {client, upstream}
            flags: deque[bytes | None] = deque()
            for target in (self._commands, self._replies):
                thread = threading.Thread(target=target, args=(client, upstream, flags), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _commands(self, client: socket.socket, upstream: socket.socket, flags: deque[bytes | None]) -> None:
        buf = b""
        while data := _recv(client):
            buf += data
            while (end := _end(buf, 0)) is not None:
                command, buf = buf[:end], buf[end:]
                name = _name(command)
                with self._lock:
                    drop = self._drops.get(name, 0) > 0
                    if drop:
                        self._drops[name] -= 1
                # Queued before it is sent, so the reply always finds its flag.
                flags.append(name if drop else None)
                try:
                    upstream.sendall(command)
                except OSError:
                    return
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)

    def _replies(self, client: socket.socket, upstream: socket.socket, flags: deque[bytes | None]) -> None:
        buf = b""
        while data := _recv(upstream):
            buf += data
            while (end := _end(buf, 0)) is not None:
                reply, buf = buf[:end], buf[end:]
                dropped = flags.popleft()
                if dropped is not None:
                    with self._lock:
                        self.dropped.append(dropped)
                        self._cut = self._cut or self._cut_after_drop
                        cut = self._cut
                    for sock in (client, upstream):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    if cut:
                        self._close_all()
                    return
                try:
                    client.sendall(reply)
                except OSError:
                    return
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""
