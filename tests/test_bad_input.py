"""Bad input gets a typed error (utils/redis_queue/errors.py) and changes nothing in Redis.

Every test that expects a refusal snapshots all keys of the queue (SCAN MATCH over the
queue's hash-tagged prefix, each key's type, DUMP and whether it has a TTL) before and
after, and asserts the two are equal. Corrupt records and structures are written by hand
with a raw client; Redis outages use a server of the test's own (`private_redis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer, free_port
from tests.support.state import assert_single_state
from utils.redis_queue import (
    CorruptQueue,
    InvalidPriority,
    InvalidQueueName,
    InvalidTaskError,
    InvalidTaskId,
    InvalidTaskType,
    PayloadTooLarge,
    QueueError,
    RedisTaskQueue,
    RedisUnavailable,
    SerializationError,
    TaskNotFound,
    TaskNotProcessing,
    TaskPriority,
    TaskState,
    TaskStateError,
)

QueueFactory = Callable[..., RedisTaskQueue]
Snapshot = dict[bytes, tuple[bytes, bytes | None, bool]]

ODD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("x" * 10_000, id="10kB"),
    pytest.param("a{b", id="open-brace"),
    pytest.param("a}b", id="close-brace"),
    pytest.param("{a}", id="hash-tag"),
    pytest.param("a*", id="star"),
    pytest.param("a?", id="question-mark"),
    pytest.param("a[b", id="bracket"),
    pytest.param("a b", id="space"),
    pytest.param("a\nb", id="newline"),
    pytest.param("ab\n", id="trailing-newline"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("task\U0001f600", id="emoji"),
    pytest.param("../x", id="dot-dot-slash"),
    pytest.param("a/b", id="slash"),
    pytest.param(" a", id="leading-space"),
    pytest.param(42, id="not-a-string"),
    pytest.param(None, id="none"),
]


async def snapshot(raw: Redis, queue: RedisTaskQueue) -> Snapshot:
    """Every key of the queue: its type, its serialized value and whether it expires."""
    out: Snapshot = {}
    async for key in raw.scan_iter(match=f"agentic:{{{queue.queue_name}}}:*", count=1000):
        out[key] = (await raw.type(key), await raw.dump(key), await raw.pttl(key) > 0)
    return out


async def populate(queue: RedisTaskQueue) -> None:
    """A queue with a task in every state: p1/p2 pending, r1 processing (leased by this
    instance), c1 completed, d1 dead-lettered, l1 delayed, x1 cancelled."""
    for task_id in ("c1", "d1", "r1"):
        await queue.enqueue(task_id, "dev", {"id": task_id}, priority=TaskPriority.HIGH)
    for task_id in ("c1", "d1", "r1"):
        task = await queue.dequeue("w", timeout=1)
        assert task is not None and task.task_id == task_id
    await queue.complete_task("c1", {"ok": True})
    await queue.fail_task("d1", "Invalid task", retry=False)
    await queue.enqueue("p1", "dev", {"id": "p1"})
    await queue.enqueue("p2", "dev", {"id": "p2"})
    await queue.enqueue("l1", "dev", {"id": "l1"}, delay=60)
    await queue.enqueue("x1", "dev", {"id": "x1"})
    assert await queue.cancel("x1") == TaskState.CANCELLED


async def assert_refused_without_writes(
    raw: Redis,
    queue: RedisTaskQueue,
    error: type[BaseException],
    call: Callable[[], Awaitable[Any]],
) -> BaseException:
    """`call` raises `error` and leaves every key of the queue exactly as it was."""
    before = await snapshot(raw, queue)
    raised: Exception | None = None
    try:
        await call()
    except Exception as exc:
        raised = exc
    after = await snapshot(raw, queue)
    changed = sorted(
        k.decode() for k in before.keys() | after.keys() if before.get(k) != after.get(k)
    )
    assert isinstance(raised, error) and not changed, (
        f"expected {error.__name__} and no writes; got {raised!r}; keys changed: {changed}"
    )
    return raised


async def _blob(raw: Redis, key: str, name: str) -> str | None:
    """A chunked blob field (`name`, `name.1`, ...) of a task hash, joined."""
    fields = {k.decode(): v.decode() for k, v in (await raw.hgetall(key)).items()}
    if name not in fields:
        return None
    parts, i = [fields[name]], 1
    while f"{name}.{i}" in fields:
        parts.append(fields[f"{name}.{i}"])
        i += 1
    return "".join(parts)


async def _priority_field(raw: Redis, key: str) -> str:
    for name in ("prio", "priority"):
        if await raw.hexists(key, name):
            return name
    raise AssertionError(f"no priority field in {await raw.hgetall(key)!r}")


# -- priorities ---------------------------------------------------------------------------


@pytest.mark.parametrize("priority", [7, -1, "urgent", 1.5, True, None, "", 4])
async def test_unknown_priority_is_rejected_with_invalid_priority(
    queue: RedisTaskQueue, raw_redis: Redis, priority: Any
) -> None:
    await populate(queue)
    await assert_refused_without_writes(
        raw_redis, queue, InvalidPriority, lambda: queue.enqueue("new", "dev", {}, priority)
    )
    assert await raw_redis.exists(queue.keys.task("new")) == 0


async def test_priority_names_and_enum_members_are_accepted(queue: RedisTaskQueue) -> None:
    await queue.enqueue("by-name", "dev", {}, priority="critical")
    await queue.enqueue("by-enum", "dev", {}, priority=TaskPriority.LOW)
    assert (await queue.get_task("by-name")).priority == 3  # type: ignore[union-attr]
    assert (await queue.get_task("by-enum")).priority == 0  # type: ignore[union-attr]


# -- payloads and results -----------------------------------------------------------------


class _Opaque:
    pass


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"tags": {"a", "b"}}, id="set-value"),
        pytest.param({"obj": _Opaque()}, id="object-value"),
        pytest.param({"x": float("nan")}, id="nan"),
        pytest.param({"x": float("inf")}, id="inf"),
        pytest.param({"raw": b"bytes"}, id="bytes-value"),
        pytest.param({"deep": [{"deeper": {1, 2}}]}, id="nested-set"),
        pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
        pytest.param(["not", "a", "dict"], id="list"),
        pytest.param("just a string", id="str"),
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param(b'{"a": 1}', id="bytes"),
        pytest.param({"a", "b"}, id="set"),
    ],
)
async def test_payload_that_is_not_a_json_object_is_a_serialization_error(
    queue: RedisTaskQueue, raw_redis: Redis, payload: Any
) -> None:
    await populate(queue)
    await assert_refused_without_writes(
        raw_redis, queue, SerializationError, lambda: queue.enqueue("new", "dev", payload)
    )


async def test_payload_over_max_payload_bytes_is_too_large(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(max_payload_bytes=1000)
    await queue.connect()
    await populate(queue)
    # {"x":"…"} is 8 bytes of JSON around the string
    await queue.enqueue("at-limit", "dev", {"x": "a" * 992})
    assert (await queue.get_task("at-limit")).payload == {"x": "a" * 992}  # type: ignore[union-attr]

    await assert_refused_without_writes(
        raw_redis,
        queue,
        PayloadTooLarge,
        lambda: queue.enqueue("over", "dev", {"x": "a" * 993}),
    )
    # measured as JSON bytes: each "é" is six bytes (\u00e9) on the wire
    await assert_refused_without_writes(
        raw_redis, queue, PayloadTooLarge, lambda: queue.enqueue("wide", "dev", {"x": "é" * 200})
    )


@pytest.mark.parametrize(
    "result",
    [
        pytest.param({"a", "b"}, id="set"),
        pytest.param(_Opaque(), id="object"),
        pytest.param(float("nan"), id="nan"),
        pytest.param({"raw": b"bytes"}, id="bytes"),
    ],
)
async def test_non_json_result_is_refused_and_the_task_stays_processing(
    queue: RedisTaskQueue, raw_redis: Redis, result: Any
) -> None:
    await populate(queue)
    before = await queue.get_task("r1")

    await assert_refused_without_writes(
        raw_redis, queue, SerializationError, lambda: queue.complete_task("r1", result)
    )

    assert await queue.get_task("r1") == before
    await assert_single_state(raw_redis, queue, "r1", "processing")
    # the worker still holds its lease and can report a proper result
    await queue.complete_task("r1", {"fixed": True})
    assert await queue.wait_for_result("r1", timeout=1) == {"fixed": True}


async def test_oversized_result_is_refused_and_the_task_stays_processing(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(max_payload_bytes=1000)
    await queue.connect()
    await populate(queue)
    await assert_refused_without_writes(
        raw_redis, queue, PayloadTooLarge, lambda: queue.complete_task("r1", {"x": "a" * 2000})
    )
    await assert_single_state(raw_redis, queue, "r1", "processing")


# -- identifiers --------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", [*ODD_NAMES, pytest.param("a" * 201, id="201-chars")])
async def test_odd_task_ids_are_rejected_by_every_method(
    queue: RedisTaskQueue, raw_redis: Redis, task_id: Any
) -> None:
    await populate(queue)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: queue.enqueue(task_id, "dev", {}),
        lambda: queue.enqueue_many([{"task_id": task_id, "task_type": "dev", "payload": {}}]),
        lambda: queue.get_task(task_id),
        lambda: queue.complete_task(task_id, {}),
        lambda: queue.fail_task(task_id, "boom"),
        lambda: queue.cancel(task_id),
        lambda: queue.retry_dlq_task(task_id),
        lambda: queue.extend_lease(task_id),
        lambda: queue.release_task(task_id),
        lambda: queue.wait_for_result(task_id, timeout=1),
    ]
    for call in calls:
        await assert_refused_without_writes(raw_redis, queue, InvalidTaskId, call)


async def test_task_id_limits_are_inclusive(queue: RedisTaskQueue, raw_redis: Redis) -> None:
    longest = "a" * 200
    await queue.enqueue(longest, "dev", {})
    await queue.enqueue("a:b@c.d-e_f", "dev", {})
    await assert_single_state(raw_redis, queue, longest, "pending")
    await assert_single_state(raw_redis, queue, "a:b@c.d-e_f", "pending")


@pytest.mark.parametrize("task_type", [*ODD_NAMES, pytest.param("a:b", id="colon")])
async def test_odd_task_types_are_rejected(
    queue: RedisTaskQueue, raw_redis: Redis, task_type: Any
) -> None:
    await populate(queue)
    await assert_refused_without_writes(
        raw_redis, queue, InvalidTaskType, lambda: queue.enqueue("new", task_type, {})
    )
    await assert_refused_without_writes(
        raw_redis, queue, InvalidTaskType, lambda: queue.claim("w", 1, task_types=[task_type])
    )


@pytest.mark.parametrize("name", [*ODD_NAMES, pytest.param("a:b", id="colon")])
def test_odd_queue_names_are_rejected_at_construction(redis_url: str, name: Any) -> None:
    with pytest.raises(InvalidQueueName):
        RedisTaskQueue(queue_name=name, redis_url=redis_url)
    with pytest.raises(InvalidQueueName):
        RedisTaskQueue(queue_name="fine", redis_url=redis_url, key_prefix=name)


async def test_ids_that_look_like_keys_stay_inside_the_task_namespace(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    # queue "a" + id "b:c" and queue "a:b" + id "c" would both be "...a:b:c" without
    # the hash tag; a queue name cannot contain ':' at all
    with pytest.raises(InvalidQueueName):
        RedisTaskQueue(queue_name=f"{queue.queue_name}:b")
    tricky = ["b:c", "stats", "pending:dev", "dlq", "wake", "processing", "task:x"]
    for task_id in tricky:
        await queue.enqueue(task_id, "dev", {"id": task_id})

    base = f"agentic:{{{queue.queue_name}}}:"
    keys = {k.decode() async for k in raw_redis.scan_iter(match=f"{base}*", count=1000)}
    assert {k for k in keys if k.startswith(f"{base}task:")} == {f"{base}task:{t}" for t in tricky}
    assert await raw_redis.type(queue.keys.stats) == b"hash"
    assert await raw_redis.type(queue.keys.pending("dev")) == b"zset"
    assert await raw_redis.smembers(queue.keys.types) == {b"dev"}
    assert await raw_redis.exists(queue.keys.dlq, queue.keys.processing) == 0
    claimed = [t.task_id for t in await queue.claim("w", len(tricky))]
    assert claimed == tricky
    assert await raw_redis.zcard(queue.keys.processing) == len(tricky)


# -- enqueue_many is all or nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"task_id": "bad id", "task_type": "dev", "payload": {}}, InvalidTaskId),
        ({"task_id": "bad", "task_type": "de v", "payload": {}}, InvalidTaskType),
        ({"task_id": "bad", "task_type": "dev", "payload": {}, "priority": 9}, InvalidPriority),
        ({"task_id": "bad", "task_type": "dev", "payload": {"s": {1}}}, SerializationError),
        ({"task_id": "bad", "task_type": "dev", "payload": [1]}, SerializationError),
        ({"task_id": "bad", "task_type": "dev", "payload": {"x": "a" * 2000}}, PayloadTooLarge),
    ],
    ids=["id", "type", "priority", "not-json", "not-a-dict", "too-large"],
)
@pytest.mark.parametrize("good_count", [3, 600], ids=["one-chunk", "two-chunks"])
async def test_enqueue_many_with_one_bad_task_enqueues_nothing(
    make_queue: QueueFactory,
    raw_redis: Redis,
    bad: dict[str, Any],
    error: type[Exception],
    good_count: int,
) -> None:
    queue = make_queue(max_payload_bytes=1000)
    await queue.connect()
    await populate(queue)
    tasks = [
        {"task_id": f"g{i}", "task_type": "dev", "payload": {"i": i}} for i in range(good_count)
    ]
    tasks.append(bad)
    await assert_refused_without_writes(raw_redis, queue, error, lambda: queue.enqueue_many(tasks))
    assert await raw_redis.exists(queue.keys.task("g0")) == 0


async def test_enqueue_many_is_all_or_nothing_across_its_500_task_chunks(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await populate(queue)
    # the 600th task's key is held by something else: enqueue.lua refuses that chunk
    await raw_redis.set(queue.keys.task("g599"), "not a hash")
    tasks = [{"task_id": f"g{i}", "task_type": "dev", "payload": {"i": i}} for i in range(600)]

    await assert_refused_without_writes(
        raw_redis, queue, CorruptQueue, lambda: queue.enqueue_many(tasks)
    )

    assert await raw_redis.exists(queue.keys.task("g0")) == 0
    assert await raw_redis.zscore(queue.keys.pending("dev"), "g0") is None


# -- unknown ids and wrong states ------------------------------------------------------------


async def test_unknown_task_id_is_task_not_found_and_writes_nothing(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await populate(queue)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: queue.complete_task("ghost", {"ok": 1}),
        lambda: queue.fail_task("ghost", "boom"),
        lambda: queue.fail_task("ghost", "boom", retry=False),
        lambda: queue.cancel("ghost"),
        lambda: queue.retry_dlq_task("ghost"),
        lambda: queue.extend_lease("ghost"),
        lambda: queue.release_task("ghost"),
        lambda: queue.wait_for_result("ghost", timeout=1),
    ]
    for call in calls:
        error = await assert_refused_without_writes(raw_redis, queue, TaskNotFound, call)
        assert error.task_id == "ghost"  # type: ignore[attr-defined]
    before = await snapshot(raw_redis, queue)
    assert await queue.get_task("ghost") is None
    assert await snapshot(raw_redis, queue) == before


@pytest.mark.parametrize(
    ("task_id", "state"),
    [
        ("p1", "pending"),
        ("l1", "delayed"),
        ("c1", "completed"),
        ("d1", "dead_letter"),
        ("x1", "cancelled"),
    ],
)
async def test_settling_a_task_that_is_not_processing_is_refused_and_changes_nothing(
    queue: RedisTaskQueue, make_queue: QueueFactory, raw_redis: Redis, task_id: str, state: str
) -> None:
    await populate(queue)
    operator = make_queue()  # holds no lease on anything
    await operator.connect()
    before = await queue.get_task(task_id)
    assert before is not None and before.state == state
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: operator.complete_task(task_id, {"ok": True}),
        lambda: operator.fail_task(task_id, "boom", retry=True),
        lambda: operator.fail_task(task_id, "boom", retry=False),
        lambda: queue.complete_task(task_id, {"ok": True}),
        lambda: queue.fail_task(task_id, "boom"),
        lambda: operator.extend_lease(task_id),
        lambda: operator.release_task(task_id),
    ]
    for call in calls:
        error = await assert_refused_without_writes(raw_redis, queue, TaskNotProcessing, call)
        assert error.state == state  # type: ignore[attr-defined]
        assert await queue.get_task(task_id) == before
    await assert_single_state(raw_redis, queue, task_id, state)


@pytest.mark.parametrize(
    ("task_id", "state"),
    [("p1", "pending"), ("l1", "delayed"), ("r1", "processing"), ("c1", "completed")],
)
async def test_retry_dlq_task_of_a_task_not_in_the_dlq_is_a_state_error(
    queue: RedisTaskQueue, raw_redis: Redis, task_id: str, state: str
) -> None:
    await populate(queue)
    before = await queue.get_task(task_id)
    error = await assert_refused_without_writes(
        raw_redis, queue, TaskStateError, lambda: queue.retry_dlq_task(task_id)
    )
    assert error.state == state  # type: ignore[attr-defined]
    assert await queue.get_task(task_id) == before


@pytest.mark.parametrize(
    ("task_id", "state"), [("c1", "completed"), ("d1", "dead_letter"), ("x1", "cancelled")]
)
async def test_cancel_of_a_finished_task_is_a_state_error(
    queue: RedisTaskQueue, raw_redis: Redis, task_id: str, state: str
) -> None:
    await populate(queue)
    before = await queue.get_task(task_id)
    error = await assert_refused_without_writes(
        raw_redis, queue, TaskStateError, lambda: queue.cancel(task_id)
    )
    assert error.state == state  # type: ignore[attr-defined]
    assert await queue.get_task(task_id) == before


# -- other numeric arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"delay": -1}, InvalidTaskError),
        ({"delay": float("nan")}, InvalidTaskError),
        ({"delay": float("inf")}, InvalidTaskError),
        ({"delay": "5"}, InvalidTaskError),
        ({"max_retries": -1}, InvalidTaskError),
        ({"max_retries": 1.5}, InvalidTaskError),
        ({"max_retries": True}, InvalidTaskError),
        ({"meta": {"trace": _Opaque()}}, SerializationError),
    ],
    ids=["delay-neg", "delay-nan", "delay-inf", "delay-str", "retries-neg", "retries-float",
         "retries-bool", "meta-not-json"],
)  # fmt: skip
async def test_bad_enqueue_options_are_typed_errors(
    queue: RedisTaskQueue, raw_redis: Redis, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    await populate(queue)
    await assert_refused_without_writes(
        raw_redis, queue, error, lambda: queue.enqueue("new", "dev", {}, **kwargs)
    )


@pytest.mark.parametrize("method", ["dequeue", "wait_for_result"])
async def test_nan_timeout_is_refused_instead_of_blocking_forever(
    queue: RedisTaskQueue, raw_redis: Redis, method: str
) -> None:
    await populate(queue)
    await queue.claim("w", 2)  # nothing ready, p1 processing: both calls would have to wait
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "dequeue": lambda: queue.dequeue("w", timeout=math.nan),
        "wait_for_result": lambda: queue.wait_for_result("p1", timeout=math.nan),
    }
    # bounded here so that a call that never returns fails the test in 3 s
    await assert_refused_without_writes(
        raw_redis, queue, InvalidTaskError, lambda: asyncio.wait_for(calls[method](), 3)
    )


# -- corrupt records ---------------------------------------------------------------------------


async def _corrupt_payload(raw: Redis, key: str) -> None:
    await raw.hset(key, "payload", "not json{")


async def _delete_type(raw: Redis, key: str) -> None:
    await raw.hdel(key, "type")


async def _priority_not_a_number(raw: Redis, key: str) -> None:
    await raw.hset(key, await _priority_field(raw, key), "abc")


async def _replace_with_string(raw: Redis, key: str) -> None:
    await raw.delete(key)
    await raw.set(key, "not a hash at all")


@pytest.mark.parametrize(
    "corrupt",
    [_corrupt_payload, _delete_type, _priority_not_a_number, _replace_with_string],
    ids=["payload-not-json", "type-missing", "priority-not-a-number", "key-is-a-string"],
)
async def test_corrupt_task_record_is_dead_lettered_and_a_good_task_still_flows(
    queue: RedisTaskQueue,
    raw_redis: Redis,
    corrupt: Callable[[Redis, str], Awaitable[None]],
) -> None:
    await queue.enqueue("bad", "dev", {"n": 1}, priority=TaskPriority.HIGH)  # claimed first
    await queue.enqueue("good", "dev", {"n": 2})
    await corrupt(raw_redis, queue.keys.task("bad"))

    task = await queue.dequeue("w", timeout=2)

    assert task is not None and task.task_id == "good" and task.payload == {"n": 2}
    await assert_single_state(raw_redis, queue, "good", "processing")
    assert await raw_redis.sismember(queue.keys.dlq, "bad")
    bad_key = queue.keys.task("bad")
    assert await raw_redis.type(bad_key) == b"hash"
    assert await raw_redis.hget(bad_key, "state") == b"dead_letter"
    error = await _blob(raw_redis, bad_key, "error")
    assert error is not None and "corrupt" in error.lower()
    assert await raw_redis.zscore(queue.keys.pending("dev"), "bad") is None
    assert await raw_redis.zscore(queue.keys.processing, "bad") is None
    assert not await raw_redis.hexists(bad_key, "lease")
    stats = await queue.get_statistics()
    assert stats["total_corrupt"] == 1, f"the corrupt counter missed it; DLQ error: {error!r}"
    assert stats["dlq"] == 1 and stats["processing"] == 1 and stats["pending"] == 0
    # a later dequeue finds nothing more and does not trip over the dead-lettered record
    assert await queue.dequeue("w", timeout=0) is None


async def test_pending_id_without_a_task_record_is_dropped(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("good", "dev", {"n": 2})
    head = await raw_redis.zrange(queue.keys.pending("dev"), 0, 0, withscores=True)
    await raw_redis.zadd(queue.keys.pending("dev"), {"ghost": head[0][1] - 1})  # ahead of it

    task = await queue.dequeue("w", timeout=2)

    assert task is not None and task.task_id == "good"
    assert await raw_redis.zscore(queue.keys.pending("dev"), "ghost") is None
    assert await raw_redis.zscore(queue.keys.processing, "ghost") is None
    assert not await raw_redis.sismember(queue.keys.dlq, "ghost")
    assert await raw_redis.exists(queue.keys.task("ghost"), queue.keys.done("ghost")) == 0
    assert await queue.get_task("ghost") is None


async def test_many_corrupt_records_are_all_quarantined_in_one_dequeue(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    corruptions = [_corrupt_payload, _delete_type, _priority_not_a_number, _replace_with_string]
    for i, _ in enumerate(corruptions):
        await queue.enqueue(f"bad{i}", "dev", {}, priority=TaskPriority.CRITICAL)
    await queue.enqueue("good", "dev", {"n": 2}, priority=TaskPriority.LOW)
    for i, corrupt in enumerate(corruptions):
        await corrupt(raw_redis, queue.keys.task(f"bad{i}"))
    await raw_redis.zadd(queue.keys.pending("dev"), {"ghost": -(10**17)})

    task = await queue.dequeue("w", timeout=2)

    assert task is not None and task.task_id == "good"
    assert await raw_redis.smembers(queue.keys.dlq) == {f"bad{i}".encode() for i in range(4)}
    counted = (await queue.get_statistics())["total_corrupt"]
    assert counted == 4, f"total_corrupt is {counted} for 4 corrupt records"
    assert await raw_redis.exists(queue.keys.task("ghost")) == 0


# -- corrupt queue structures ------------------------------------------------------------------


def _structure_key(queue: RedisTaskQueue, name: str) -> str:
    k = queue.keys
    return {
        "processing": k.processing,
        "delayed": k.delayed,
        "completed": k.completed,
        "failed": k.failed,
        "cancelled": k.cancelled,
        "dlq": k.dlq,
        "stats": k.stats,
        "types": k.types,
        "pending:dev": k.pending("dev"),
        "wake": k.wake(),
        "wake:dev": k.wake("dev"),
    }[name]


_ENQUEUE_KEYS = ["delayed", "stats", "types", "pending:dev"]
_DEQUEUE_KEYS = [
    "processing",
    "delayed",
    "stats",
    "types",
    "dlq",
    "failed",
    "cancelled",
    "pending:dev",
]
_SIZES_KEYS = ["processing", "delayed", "completed", "failed", "cancelled", "dlq", "stats", "types"]


@pytest.mark.parametrize(
    ("operation", "structure"),
    [("enqueue", k) for k in _ENQUEUE_KEYS]
    + [("dequeue", k) for k in _DEQUEUE_KEYS]
    + [("get_queue_size", k) for k in _SIZES_KEYS],
)
async def test_structure_key_of_the_wrong_type_is_corrupt_queue_and_nothing_is_written(
    queue: RedisTaskQueue, raw_redis: Redis, operation: str, structure: str
) -> None:
    await populate(queue)  # two tasks pending: a claim leaves work behind and wakes others
    await raw_redis.delete(_structure_key(queue, structure))
    await raw_redis.set(_structure_key(queue, structure), "clobbered by someone else")
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        # enqueue touches the delayed set only for a delayed task, and checks it then
        "enqueue": lambda: queue.enqueue(
            "new", "dev", {"n": 1}, delay=5 if structure == "delayed" else None
        ),
        "dequeue": lambda: asyncio.wait_for(queue.dequeue("w", timeout=1), 5),
        "get_queue_size": queue.get_queue_size,
    }
    error = await assert_refused_without_writes(raw_redis, queue, CorruptQueue, calls[operation])
    assert _structure_key(queue, structure) in str(error)


@pytest.mark.parametrize("structure", ["wake", "wake:dev"])
async def test_overwritten_wake_key_is_replaced_and_work_still_flows(
    queue: RedisTaskQueue, raw_redis: Redis, structure: str
) -> None:
    # Wake keys carry no data, so the engine repairs them instead of refusing work:
    # scripts replace one they push to, and a waiter replaces one it blocks on.
    key = _structure_key(queue, structure)
    await raw_redis.set(key, "clobbered by someone else")
    await queue.enqueue("new", "dev", {"n": 1})  # the first task of a type wakes both keys
    assert await raw_redis.type(key) == b"list"
    task = await queue.dequeue("w", timeout=1)
    assert task is not None and task.task_id == "new"

    await raw_redis.set(key, "clobbered again")
    assert await queue.dequeue("w", timeout=0.2) is None  # blocks on it: no error
    assert await raw_redis.type(key) in (b"list", b"none")
    waiting = asyncio.create_task(queue.dequeue("w", timeout=5))
    await asyncio.sleep(0.05)  # let the dequeue reach its blocking wait
    await queue.enqueue("next", "dev", {"n": 2})
    task = await asyncio.wait_for(waiting, 2)
    assert task is not None and task.task_id == "next"


# -- Redis unreachable ------------------------------------------------------------------------


async def test_unreachable_redis_at_connect_is_redis_unavailable_naming_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    queue = RedisTaskQueue(queue_name="nowhere", redis_url=url, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as caught:
        await queue.connect()
    assert time.monotonic() - started < 2.0
    assert url in str(caught.value) and caught.value.url == url
    assert isinstance(caught.value, ConnectionError)
    with pytest.raises(QueueError):  # still not connected: no half-open state
        await queue.enqueue("t", "dev", {})


@pytest.mark.parametrize(
    "auth", ["user:s3cr3t-pw@", ":s3cr3t-pw@"], ids=["user-and-password", "password-only"]
)
async def test_password_in_the_url_is_masked_in_the_error(auth: str) -> None:
    port = free_port()
    queue = RedisTaskQueue(
        queue_name="nowhere", redis_url=f"redis://{auth}127.0.0.1:{port}/0", connect_timeout=1
    )
    with pytest.raises(RedisUnavailable) as caught:
        await queue.connect()
    for text in (str(caught.value), repr(caught.value), caught.value.url, queue.url):
        assert "s3cr3t-pw" not in text
    assert f"***@127.0.0.1:{port}" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value.__cause__)


async def test_server_that_never_answers_is_redis_unavailable_not_a_hang() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # accept, never answer
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    queue = RedisTaskQueue(
        queue_name="silent",
        redis_url=f"redis://127.0.0.1:{port}/0",
        socket_timeout=1,
        connect_timeout=1,
    )
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match=re.escape(f"127.0.0.1:{port}")):
            await asyncio.wait_for(queue.connect(), 10)
        # one attempt plus the one retry connection.py allows: two socket timeouts
        assert time.monotonic() - started < 2.5
    finally:
        server.close()
        await server.wait_closed()


async def test_redis_dying_mid_session_is_redis_unavailable_then_recovers(
    private_redis: RedisServer,
) -> None:
    queue = RedisTaskQueue(
        queue_name="outage", redis_url=private_redis.url, socket_timeout=1, connect_timeout=1
    )
    await queue.connect()
    try:
        await queue.enqueue("before", "dev", {"n": 1})
        private_redis.kill()

        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: queue.enqueue("during", "dev", {"n": 2}),
            lambda: queue.dequeue("w", timeout=1),
            queue.get_queue_size,
            lambda: queue.get_task("before"),
            lambda: queue.wait_for_result("before", timeout=1),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(RedisUnavailable) as caught:
                await asyncio.wait_for(call(), 10)
            assert time.monotonic() - started < 2.5
            assert f"127.0.0.1:{private_redis.port}" in str(caught.value)
        assert (await queue.health_check())["status"] == "unhealthy"

        private_redis.start()  # same port, empty (no persistence)

        task = await queue.enqueue("after", "dev", {"n": 3})
        assert task.state == TaskState.PENDING
        raw = Redis.from_url(private_redis.url)
        try:
            assert await raw.hget(queue.keys.task("after"), "state") == b"pending"
        finally:
            await raw.aclose()
        claimed = await queue.dequeue("w", timeout=1)
        assert claimed is not None and claimed.task_id == "after"
        await queue.complete_task("after", {"ok": True})
        assert await queue.wait_for_result("after", timeout=1) == {"ok": True}
    finally:
        await queue.close()


async def test_blocked_dequeue_and_result_wait_fail_promptly_when_redis_dies(
    private_redis: RedisServer,
) -> None:
    queue = RedisTaskQueue(
        queue_name="outage", redis_url=private_redis.url, socket_timeout=1, connect_timeout=1
    )
    await queue.connect()
    raw = Redis.from_url(private_redis.url)
    try:
        await queue.enqueue("waited-on", "dev", {})
        await queue.claim("w", 1)  # nothing left: the next dequeue blocks in Redis
        dequeuing = asyncio.create_task(queue.dequeue("w", timeout=30))
        waiting = asyncio.create_task(queue.wait_for_result("waited-on", timeout=30))
        blocked: set[str] = set()
        deadline = time.monotonic() + 5
        while blocked != {"blpop", "blmove"} and time.monotonic() < deadline:
            blocked = {c["cmd"] for c in await raw.client_list()} & {"blpop", "blmove"}
        assert blocked == {"blpop", "blmove"}, "the calls never blocked in Redis"

        private_redis.kill()
        started = time.monotonic()
        for pending_call in (dequeuing, waiting):
            with pytest.raises(RedisUnavailable):
                await asyncio.wait_for(pending_call, 10)
        assert time.monotonic() - started < 3
    finally:
        await raw.aclose()
        await queue.close()


async def test_corrupt_pending_set_refuses_a_retry_before_any_write(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("t1", "dev", {})
    await queue.dequeue("w", timeout=1)
    await raw_redis.set(queue.keys.pending("dev"), "clobbered")
    await assert_refused_without_writes(
        raw_redis, queue, CorruptQueue, lambda: queue.fail_task("t1", "boom", retry=True)
    )
    await assert_refused_without_writes(
        raw_redis, queue, CorruptQueue, lambda: queue.release_task("t1")
    )


async def test_a_server_older_than_redis_7_is_refused_with_its_version() -> None:
    """No Redis 6 binary is at hand: a socket that answers PING and INFO as 6.2 does
    stands in for one, since that exchange is all connect() has before its scripts."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if line.startswith(b"*"):  # a command: read its arguments
                parts = [await _bulk(reader) for _ in range(int(line[1:]))]
                if parts[0].upper() == b"PING":
                    writer.write(b"+PONG\r\n")
                elif parts[0].upper() == b"HELLO":  # redis-py >= 8.2 speaks RESP3 first
                    writer.write(b"%1\r\n+proto\r\n:3\r\n")
                elif parts[0].upper() == b"INFO":
                    body = b"# Server\r\nredis_version:6.2.14\r\n"
                    writer.write(b"$%d\r\n%s\r\n" % (len(body), body))
                else:  # CLIENT SETINFO and the like, which redis-py sends first
                    writer.write(b"+OK\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        queue = RedisTaskQueue(queue_name="old", redis_url=f"redis://127.0.0.1:{port}/0")
        with pytest.raises(QueueError, match=r"version 6\.2\.14; .* needs Redis 7\.0 or later"):
            await queue.connect()
    finally:
        server.close()
        await server.wait_closed()


async def _bulk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readline())[1:])
    return (await reader.readexactly(size + 2))[:-2]


async def test_a_stale_entry_for_a_finished_task_is_dropped_not_quarantined_again(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    """An id put back into pending, delayed or processing after its task finished is a
    stale entry: the claim drops it and leaves the record (and every counter) alone."""
    queue = make_queue(max_retries=0)
    await queue.connect()
    await queue.enqueue_many(
        {"task_id": task_id, "task_type": "dev", "payload": {}} for task_id in ("done", "dead")
    )
    await queue.claim("w", 2)
    await queue.complete_task("done", {"r": 1})
    await queue.fail_task("dead", "boom", retry=False)
    before = {t: await raw_redis.hgetall(queue.keys.task(t)) for t in ("done", "dead")}
    stats_before = await queue.get_statistics()
    await raw_redis.zadd(queue.keys.delayed, {"done": 0})
    await raw_redis.zadd(queue.keys.processing, {"dead": 0})
    await raw_redis.zadd(queue.keys.pending("dev"), {"done": 0, "dead": 1})
    await raw_redis.zadd(queue.keys.ready, {"dev": 0}, lt=True)  # as every engine write does
    assert await queue.claim("w", 10) == []
    for task_id, record in before.items():
        assert await raw_redis.hgetall(queue.keys.task(task_id)) == record
    await assert_single_state(raw_redis, queue, "done", "completed")
    await assert_single_state(raw_redis, queue, "dead", "dead_letter")
    stats = await queue.get_statistics()
    for name in ("total_completed", "total_failed", "total_dead_lettered", "total_corrupt"):
        assert stats[name] == stats_before[name], name
    assert int(await raw_redis.hget(queue.keys.stats, "stale_dropped") or 0) == 4
