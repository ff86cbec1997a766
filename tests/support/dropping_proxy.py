"""A TCP proxy in front of a real Redis that can drop a connection after Redis ran a
command but before its reply reaches the client: the one moment when redis-py's automatic
retry sends the command a second time."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

__all__ = ["DroppingProxy"]


class DroppingProxy:
    """`async with DroppingProxy(port) as proxy:` then connect to `proxy.url`;
    `proxy.drop_reply_to(marker)` arms it: the next request containing `marker` is
    forwarded, Redis answers, and the proxy closes the client's connection instead of
    passing the answer on."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.dropped = 0
        self._armed: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_reply_to(self, marker: bytes, times: int = 1) -> None:
        self._armed.extend([marker] * times)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        for pump in list(self._pumps):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        drop = asyncio.Event()
        pumps = [
            asyncio.create_task(self._requests(reader, up_writer, drop)),
            asyncio.create_task(self._replies(up_reader, writer, drop)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._pumps.discard(pump)
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await w.wait_closed()

    async def _requests(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, drop: asyncio.Event
    ) -> None:
        while chunk := await reader.read(65536):
            for marker in self._armed:
                if marker in chunk:
                    self._armed.remove(marker)
                    drop.set()
                    break
            up.write(chunk)
            await up.drain()

    async def _replies(
        self, up: asyncio.StreamReader, writer: asyncio.StreamWriter, drop: asyncio.Event
    ) -> None:
        while chunk := await up.read(65536):
            if drop.is_set():  # Redis ran it and answered: the client never hears of it
                self.dropped += 1
                return
            writer.write(chunk)
            await writer.drain()
