"""Redis faults (first cases of the fault suite): persistence across a crash, script cache
loss, and the startup warnings about settings that can lose tasks."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer
from utils.redis_queue import QueueError, RedisTaskQueue

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


@pytest.fixture
def aof_always_redis() -> Iterator[RedisServer]:
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_no_acknowledged_enqueue_is_lost_when_redis_is_killed_with_aof_always(
    aof_always_redis: RedisServer,
) -> None:
    queue = RedisTaskQueue(
        queue_name="durable", redis_url=aof_always_redis.url, socket_timeout=1, connect_timeout=1
    )
    await queue.connect()
    acknowledged = []
    for round_ in range(3):  # kill -9 and restart three times under a stream of enqueues
        for i in range(100):
            task_id = f"r{round_}-{i}"
            try:
                await queue.enqueue(task_id, "dev", {"i": i})
            except QueueError:
                continue  # not acknowledged: the caller knows it may be lost
            acknowledged.append(task_id)
            if i == 50:
                aof_always_redis.kill()
        aof_always_redis.start()
    assert len(acknowledged) >= 150
    for task_id in acknowledged:
        task = await queue.get_task(task_id)
        assert task is not None and task.state == "pending", task_id
    sizes = await queue.get_queue_size()
    assert sizes["pending"] == len(acknowledged)
    await queue.close()


async def test_scripts_reload_after_script_flush_and_after_a_restart(
    private_redis: RedisServer,
) -> None:
    queue = RedisTaskQueue(queue_name="reload", redis_url=private_redis.url, socket_timeout=2)
    await queue.connect()
    await queue.enqueue("a", "dev", {})
    await queue.redis.script_flush()
    await queue.enqueue("b", "dev", {})  # NOSCRIPT: loaded again, transparently
    private_redis.restart()  # no persistence: an empty server with an empty script cache
    await queue.enqueue("c", "dev", {})  # a stale pooled connection is replaced once
    task = await queue.dequeue("w", timeout=1)
    assert task is not None and task.task_id == "c"
    assert await queue.settle_many([]) == []
    await queue.complete_task("c", "ok")  # settle after a restart reloads too
    await queue.close()


async def test_connect_warns_about_eviction_and_missing_persistence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer("--maxmemory-policy", "allkeys-lru")
    server.start()
    try:
        queue = RedisTaskQueue(queue_name="warn", redis_url=server.url)
        with caplog.at_level(logging.WARNING, logger="agentic.queue"):
            await queue.connect()
        text = caplog.text
        assert "maxmemory-policy allkeys-lru" in text and "noeviction" in text
        assert "appendonly off" in text
        await queue.close()
    finally:
        server.cleanup()
