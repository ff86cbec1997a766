"""Helpers of the listing tests: walking every page, the order Redis holds, and a
recorder of how many entries each ZRANGE of a listing asked for."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from utils.redis_queue import RedisTaskQueue, TaskPage, TaskState
from utils.redis_queue import walk as walk_module
from utils.redis_queue.queue import listing


async def all_pages(
    queue: RedisTaskQueue, state: TaskState, limit: int, **options: Any
) -> list[TaskPage]:
    pages: list[TaskPage] = []
    cursor = None
    while True:
        page = await queue.page_tasks(state, limit=limit, cursor=cursor, **options)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def entries_in(raw: Redis, keys: list[str], *, descending: bool) -> list[tuple[float, bytes]]:
    """Every (score, member) of the sorted sets, in Redis' order (or its reverse)."""
    rows: list[tuple[float, bytes]] = []
    for key in keys:
        rows.extend((float(s), m) for m, s in await raw.zrange(key, 0, -1, withscores=True))
    return sorted(rows, reverse=descending)


class Recorder:
    """Wraps the client a walk is given: records the span of every ZRANGE it sends and
    can run `hook` once after the walk's first round trip (to move tasks meanwhile)."""

    def __init__(self, redis: Any = None, hook: Any = None) -> None:
        self.redis = redis
        self.hook = hook
        self.spans: list[int] = []
        self.round_trips = 0

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> Recorder:
        """Record every walk that RedisTaskQueue's listing methods make."""
        recorder = cls()

        async def recorded(redis: Any, *args: Any, **kwargs: Any) -> Any:
            recorder.redis = redis
            return await walk_module.walk(recorder, *args, **kwargs)

        monkeypatch.setattr(listing, "walk", recorded)
        return recorder

    def pipeline(self, transaction: bool = False) -> _Pipe:
        return _Pipe(self, self.redis.pipeline(transaction=transaction))


class _Pipe:
    def __init__(self, owner: Recorder, pipe: Any) -> None:
        self.owner, self.pipe = owner, pipe

    async def __aenter__(self) -> _Pipe:
        await self.pipe.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.pipe.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def zrange(self, key: str, start: int, end: int, **options: Any) -> Any:
        self.owner.spans.append(end - start + 1)
        return self.pipe.zrange(key, start, end, **options)

    async def execute(self) -> Any:
        replies = await self.pipe.execute()
        self.owner.round_trips += 1
        if self.owner.hook is not None:
            hook, self.owner.hook = self.owner.hook, None
            await hook()
        return replies
