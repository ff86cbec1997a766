"""Reading a queue's Redis structures directly, to assert what the engine wrote."""

from __future__ import annotations

from redis.asyncio import Redis

from utils.redis_queue import RedisTaskQueue


async def structures_holding(raw: Redis, queue: RedisTaskQueue, task_id: str) -> set[str]:
    """Names of the state structures that contain `task_id`."""
    k = queue.keys
    found = set()
    for raw_type in await raw.smembers(k.types):
        if await raw.zscore(k.pending(raw_type.decode()), task_id) is not None:
            found.add("pending")
    for name, key in (
        ("delayed", k.delayed),
        ("processing", k.processing),
        ("completed", k.completed),
        ("failed", k.failed),
        ("cancelled", k.cancelled),
    ):
        if await raw.zscore(key, task_id) is not None:
            found.add(name)
    if await raw.sismember(k.dlq, task_id):
        found.add("dead_letter")
    return found


async def assert_single_state(raw: Redis, queue: RedisTaskQueue, task_id: str, state: str) -> None:
    """Invariant 1: the id is in exactly the structure of its state, and the hash agrees."""
    stored = await raw.hget(queue.keys.task(task_id), "state")
    assert stored is not None and stored.decode() == state, f"hash state {stored!r} != {state}"
    assert await structures_holding(raw, queue, task_id) == {state}
    has_lease = await raw.hexists(queue.keys.task(task_id), "lease")
    assert has_lease == (state == "processing"), "a lease exists exactly while processing"


async def queue_keys_dump(raw: Redis, queue: RedisTaskQueue) -> dict[bytes, bytes | None]:
    """Every key of the queue with its serialized value, to show nothing changed."""
    out = {}
    async for key in raw.scan_iter(match=f"{queue.keys.base}*", count=1000):
        out[key] = await raw.dump(key)
    return out


async def command_calls(raw: Redis, command: str) -> int:
    stats = await raw.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0
