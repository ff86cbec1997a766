"""Reading a queue's Redis structures directly, to assert what the engine wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from utils.redis_queue import RedisTaskQueue
from utils.redis_queue.keys import QueueKeys

ZSETS = ("delayed", "processing", "completed", "failed", "cancelled")


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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _members(redis: Redis, key: str) -> list[str]:
    kind = _text(await redis.type(key))
    if kind == "zset":
        return [_text(m) for m in await redis.zrange(key, 0, -1)]
    if kind == "set":
        return [_text(m) for m in await redis.smembers(key)]
    return []


@dataclass
class QueueView:
    """Everything a queue holds, read directly: which structures list each id, every task
    record, the stats hash, records that are not hashes, the DLQ's time order (`dlq_at`)
    and every field of the per-minute history summed."""

    structures: dict[str, list[str]]
    records: dict[str, dict[str, str]]
    stats: dict[str, str]
    not_hashes: dict[str, str]
    dlq_order: list[str] = field(default_factory=list)
    history: dict[str, int] = field(default_factory=dict)
    heads: dict[str, float] = field(default_factory=dict)  # type -> best pending score
    ready: dict[str, float] | None = None  # the ready index, when whole ('' present)


async def read_queue(redis: Redis, keys: QueueKeys) -> QueueView:
    structures: dict[str, list[str]] = {}
    heads: dict[str, float] = {}
    for raw_type in await redis.smembers(keys.types):
        task_type = _text(raw_type)
        for task_id in await _members(redis, keys.pending(task_type)):
            structures.setdefault(task_id, []).append(f"pending:{task_type}")
        if _text(await redis.type(keys.pending(task_type))) == "zset":
            head = await redis.zrange(keys.pending(task_type), 0, 0, withscores=True)
            if head:
                heads[task_type] = head[0][1]
    ready: dict[str, float] | None = None
    if _text(await redis.type(keys.ready)) == "zset":
        index = {_text(m): s for m, s in await redis.zrange(keys.ready, 0, -1, withscores=True)}
        ready = index if "" in index else None
    for name in ZSETS:
        for task_id in await _members(redis, f"{keys.base}{name}"):
            structures.setdefault(task_id, []).append(name)
    for task_id in await _members(redis, keys.dlq):
        structures.setdefault(task_id, []).append("dead_letter")

    prefix = keys.task("")
    record_ids = [
        _text(k)[len(prefix) :] async for k in redis.scan_iter(match=f"{prefix}*", count=1000)
    ]
    records: dict[str, dict[str, str]] = {}
    not_hashes: dict[str, str] = {}
    async with redis.pipeline(transaction=False) as pipe:
        for task_id in record_ids:
            pipe.type(keys.task(task_id))
            pipe.hgetall(keys.task(task_id))
        replies = await pipe.execute(raise_on_error=False)
    for i, task_id in enumerate(record_ids):
        kind, flat = _text(replies[2 * i]), replies[2 * i + 1]
        if kind != "hash":
            not_hashes[task_id] = kind
            continue
        records[task_id] = {_text(k): _text(v) for k, v in flat.items()}
    stats = {_text(k): _text(v) for k, v in (await redis.hgetall(keys.stats)).items()}
    dlq_order = await _members(redis, keys.dlq_order)
    history: dict[str, int] = {}
    async for key in redis.scan_iter(match=keys.history(0)[:-1] + "*", count=1000):
        for name, value in (await redis.hgetall(key)).items():
            history[_text(name)] = history.get(_text(name), 0) + int(value)
    return QueueView(structures, records, stats, not_hashes, dlq_order, history, heads, ready)


def single_state_violations(view: QueueView) -> list[str]:
    """Invariant 1 over every task of a queue: each id is in exactly the structure its
    record's state names, a lease exists exactly while processing and never above the
    fencing counter, no structure lists an id without a record, and the DLQ's time order
    (`dlq_at`) holds exactly the ids of the DLQ set. And the ready index, when whole,
    lists every type with pending tasks at or below its best score."""
    out = [f"{task_id}: record is a {kind}" for task_id, kind in view.not_hashes.items()]
    if view.ready is not None:
        for task_type, head in view.heads.items():
            bound = view.ready.get(task_type)
            if bound is None or bound > head:
                out.append(f"ready index: {task_type} at {bound}, its best task at {head}")
    dead = {task_id for task_id, where in view.structures.items() if "dead_letter" in where}
    ordered = set(view.dlq_order)
    out += [f"{task_id}: in the dlq set but not in dlq_at" for task_id in dead - ordered]
    out += [f"{task_id}: in dlq_at but not in the dlq set" for task_id in ordered - dead]
    fence = int(view.stats.get("fence", "0"))
    for task_id in set(view.structures) | set(view.records):
        where = view.structures.get(task_id, [])
        record = view.records.get(task_id)
        if len(where) > 1:
            out.append(f"{task_id}: in {len(where)} structures {where}")
        if record is None:
            if where:
                out.append(f"{task_id}: in {where} without a task record")
            continue
        state = record.get("state", "")
        expected = f"pending:{record.get('type', '')}" if state == "pending" else state
        if not where:
            out.append(f"{task_id}: record in state {state!r} is in no structure")
        elif where[0] != expected:
            out.append(f"{task_id}: in {where[0]} but its record says {state!r}")
        if ("lease" in record) != (state == "processing"):
            out.append(f"{task_id}: state {state!r} with lease {record.get('lease')}")
        elif "lease" in record and int(record["lease"]) > fence:
            out.append(f"{task_id}: lease {record['lease']} above fence {fence}")
    return out


async def assert_every_task_in_one_state(raw: Redis, queue: RedisTaskQueue) -> QueueView:
    """single_state_violations() must find nothing; returns what was read."""
    view = await read_queue(raw, queue.keys)
    violations = single_state_violations(view)
    assert not violations, f"{len(violations)} violations, first: {violations[:5]}"
    return view
