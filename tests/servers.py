"""Throwaway PostgreSQL and Redis servers on free ports, for the tests, the demo and the benchmark.

Each server lives in its own temporary folder, listens on 127.0.0.1 only, and is waited for (never
slept for) until it answers.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bindir() -> Path:
    """The newest PostgreSQL server binaries: $PG_BINDIR, else Debian's /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found (install Debian's postgresql or set PG_BINDIR)")


def postgres_major() -> int:
    """The major version of the server binaries the suite runs (15 from ``postgres (PostgreSQL) 15.18``)."""
    output = subprocess.run(
        [str(postgres_bindir() / "postgres"), "--version"], capture_output=True, check=True, text=True
    ).stdout
    return int(output.split(")")[1].strip().split(".")[0])


def wait_until(condition: Callable[[], object], what: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def wait_while_running(
    process: subprocess.Popen[bytes],
    condition: Callable[[], object],
    what: str,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Wait until ``condition`` while ``process`` is still running: fail with its output if it ends first."""
    wait_until(lambda: condition() or process.poll() is not None, what, timeout)
    assert process.poll() is None, process.communicate()


def _wait_until(check: object, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as error:  # noqa: BLE001 - anything means "not ready yet"
            last = error
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {READY_TIMEOUT}s: {last}")


@dataclass
class PostgresServer:
    root: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"
    #: With a password, TCP connections need it (scram-sha-256); without, every connection is trusted.
    password: str = ""

    @classmethod
    def in_new_folder(cls, password: str = "") -> PostgresServer:
        """A server in a fresh folder under /tmp, which the 'postgres' user can reach when we are root
        (pytest's own temporary folders are private to root)."""
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="qb-pg-"))
        root.chmod(0o755)
        return cls(root, password=password)

    def __post_init__(self) -> None:
        self.bindir = postgres_bindir()
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"

    def _run_as_owner(self, args: list[str]) -> None:
        # initdb/postgres refuse to run as root: drop to the folder's owner when we are root.
        preexec = None
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwnam("postgres") if _has_user("postgres") else None
            if owner is None:
                raise RuntimeError("running as root needs a 'postgres' system user")
            uid, gid = owner.pw_uid, owner.pw_gid
            for path in (self.root, self.data, self.socket_dir):
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, uid, gid)

            def preexec() -> None:
                os.setgid(gid)
                os.setuid(uid)

        subprocess.run(args, check=True, capture_output=True, preexec_fn=preexec)

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        auth = ["-A", "trust"]
        if self.password:
            password_file = self.root / "password"
            password_file.write_text(self.password + "\n")
            password_file.chmod(0o644)  # read by initdb as the 'postgres' user; a throwaway server
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"]
        self._run_as_owner(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                *auth,
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run_as_owner(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "-l",
                str(self.root / "server.log"),
                "start",
            ]
        )
        _wait_until(self._ready, f"PostgreSQL on port {self.port}")
        return self

    def _ready(self) -> bool:
        import psycopg2

        psycopg2.connect(self.url("postgres"), connect_timeout=2).close()
        return True

    def url(self, database: str = "postgres") -> str:
        """The server's URL, with the password (percent-encoded) when it has one."""
        from urllib.parse import quote

        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run_as_owner(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
                )
        shutil.rmtree(self.root, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class RedisServer:
    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: Further ``--directive value`` arguments, e.g. ``["--rename-command", "CONFIG", ""]``.
    extra_args: list[str] = field(default_factory=list)
    #: With a password, every client must AUTH with it (requirepass).
    password: str = ""

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found (install Debian's redis-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--databases",
                "16",
                "--logfile",
                str(self.root / "redis.log"),
                *(["--requirepass", self.password] if self.password else []),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until(self._ready, f"Redis on port {self.port}")
        return self

    def _ready(self) -> bool:
        import redis

        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        return bool(redis.Redis(port=self.port, password=self.password or None, socket_timeout=2).ping())

    def url(self, db: int = 0) -> str:
        """The server's URL, with the password (percent-encoded) when it has one."""
        from urllib.parse import quote

        secret = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None
