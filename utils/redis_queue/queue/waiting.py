"""Waiting for work: blocking in Redis on the wake-up keys of the types served (on a
partitioned queue, on every partition's at once), and what claims across partitions
last saw of each (PartitionHeads)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..connection import BLOCK_SLICE_SECONDS
from ..errors import QueueError
from ..keys import QueueKeys, validate_task_types
from .client import MIN_BLOCK
from .gate import Gate
from .partitions import PartitionHeads, WakeWaiters

__all__ = ["Waiting"]


class Waiting(Gate):
    _waiters: WakeWaiters | None = None

    def _partition_heads(self) -> PartitionHeads:
        if self._heads is None:
            self._heads = PartitionHeads(self.partitions)
        return self._heads

    async def wait_for_work(
        self,
        task_types: Iterable[str] | None,
        seconds: float,
        known_types: Iterable[str] = (),
    ) -> None:
        """Block in Redis until work of these types may be ready, or `seconds` pass.
        With task_types None (every type), it watches the `known_types` a claim reported
        plus the key that announces new types. Returns early on a wake-up token; the
        caller then claims."""
        types = validate_task_types(task_types) if task_types is not None else None
        known = list(known_types)

        def wake_keys(keys: QueueKeys) -> list[str]:
            if types is not None:
                return [keys.wake(t) for t in types]
            return [keys.wake(), *(keys.wake(t) for t in known)]

        wait = max(MIN_BLOCK, min(seconds, BLOCK_SLICE_SECONDS))
        try:
            if self.partitions == 1:
                async with self._blocking_command():
                    await self._blocking_client.blpop(wake_keys(self.keys), timeout=wait)
                return
            for index in await self._wake_waiters().wait(self.layout.parts, wake_keys, wait):
                self._partition_heads().stale(index)
                self._gate_woken()
        except QueueError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            for keys in self.layout.parts:
                await self._repair_wake_keys(wake_keys(keys))

    def _wake_waiters(self) -> WakeWaiters:
        if self._waiters is None:
            self._waiters = WakeWaiters(self._blpop, self._hand_back, one_call=not self.cluster)
        return self._waiters

    async def _blpop(self, keys: list[str], seconds: float) -> Any:
        async with self._blocking_command():
            return await self._blocking_client.blpop(keys, timeout=seconds)

    async def _hand_back(self, wake_key: str) -> None:
        async with self._command():
            await self.redis.lpush(wake_key, "1")

    async def close(self) -> None:
        waiters, self._waiters, self._heads = self._waiters, None, None
        if waiters is not None:
            await waiters.close()
        await super().close()

    async def _repair_wake_keys(self, wake_keys: list[str]) -> None:
        """Wake keys carry no data: one that something overwrote is deleted (the
        scripts push a fresh token to it when work arrives)."""
        async with self._command():
            for key in wake_keys:
                if await self.redis.type(key) not in (b"list", b"none"):
                    await self.redis.delete(key)
