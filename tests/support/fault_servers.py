"""Private redis-server processes to crash, freeze, restart and reconfigure.

FaultRedis keeps its port and data directory across restarts (RedisServer does), and adds
the persistence modes of the fault cases and the ways to take Redis away for a while:
SIGKILL (then start again: a crash), SIGSTOP/SIGCONT (a hang: clients time out), stop and
start (connections refused), and CLIENT PAUSE (writes held by the server).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Literal

from redis.asyncio import Redis

from tests.support.redis_server import RedisServer

Persistence = Literal["always", "everysec", "none"]


def persistence_args(mode: Persistence) -> list[str]:
    if mode == "none":
        return ["--appendonly", "no", "--save", ""]
    return ["--appendonly", "yes", "--appendfsync", mode, "--save", ""]


class FaultRedis(RedisServer):
    def __init__(self, persistence: Persistence = "none", *extra_args: str) -> None:
        super().__init__(*persistence_args(persistence), *extra_args)
        self.persistence = persistence
        self.faults = 0  # faults injected into this server

    def crash(self) -> None:
        """SIGKILL: no shutdown, no final write."""
        self.faults += 1
        self.kill()

    async def crash_and_restart(self, down_seconds: float = 0.0) -> None:
        self.crash()
        await asyncio.sleep(down_seconds)  # the outage itself
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        assert self.proc is not None
        self.faults += 1
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def freeze_for(self, seconds: float) -> None:
        self.freeze()
        try:
            await asyncio.sleep(seconds)  # the outage itself
        finally:
            self.thaw()

    async def client(self) -> Redis:
        return Redis.from_url(self.url, socket_timeout=5)

    async def pause_clients(self, seconds: float, mode: str = "ALL") -> None:
        """CLIENT PAUSE: the server holds every client's commands (or writes) for a while."""
        self.faults += 1
        admin = await self.client()
        try:
            await admin.client_pause(int(seconds * 1000), all=mode == "ALL")
        finally:
            await admin.aclose()

    async def info(self, section: str) -> dict[str, object]:
        admin = await self.client()
        try:
            return dict(await admin.info(section))
        finally:
            await admin.aclose()
