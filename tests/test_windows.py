"""Dedup (unique_for) and debounce windows of enqueue, against a real Redis: concurrent
producers (separate clients and separate processes), partitioned queues, what is in Redis."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from tests.support.state import assert_every_task_in_one_state, read_queue
from utils.redis_queue import DuplicateTask, InvalidTaskError, RedisTaskQueue, TaskState
from utils.redis_queue.windows import digest_of

QueueFactory = Callable[..., RedisTaskQueue]


async def _records(raw: Redis, q: RedisTaskQueue) -> dict[str, dict[str, str]]:
    records: dict[str, dict[str, str]] = {}
    for keys in q.layout.parts:
        records.update((await read_queue(raw, keys)).records)
    return records


async def _expire_now(raw: Redis, key: str) -> None:
    """End a window early (PEXPIRE 1 ms) and wait until Redis dropped the key."""
    await raw.pexpire(key, 1)
    for _ in range(200):
        if not await raw.exists(key):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{key} did not expire")


@pytest.mark.parametrize("partitions", [1, 4])
async def test_unique_for_with_twenty_concurrent_producers_enqueues_one(
    make_queue: QueueFactory, raw_redis: Redis, partitions: int
) -> None:
    producers = [make_queue(partitions=partitions) for _ in range(20)]
    await asyncio.gather(*(p.connect() for p in producers))
    tasks = await asyncio.gather(
        *(
            p.enqueue(f"job-{i}", "report", {"day": "2026-12-07"}, unique_for=60)
            for i, p in enumerate(producers)
        )
    )
    first = {t.task_id for t in tasks}
    assert len(first) == 1, first
    (task_id,) = first
    q = producers[0]
    records = await _records(raw_redis, q)
    assert list(records) == [task_id]
    assert records[task_id]["state"] == "pending"
    digest = digest_of("report", {"day": "2026-12-07"}, None)
    assert records[task_id]["uniq"] == digest
    key = q.keys_for(task_id).unique("report", digest)
    assert (await raw_redis.get(key)).decode() == task_id
    assert 0 < await raw_redis.pttl(key) <= 60_000
    assert (await q.get_statistics())["total_enqueued"] == 1
    for keys in q.layout.parts:
        await assert_every_task_in_one_state_of(raw_redis, keys)


async def assert_every_task_in_one_state_of(raw: Redis, keys: object) -> None:
    from tests.support.state import single_state_violations

    view = await read_queue(raw, keys)  # type: ignore[arg-type]
    assert not single_state_violations(view)


_PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    from utils.redis_queue import RedisTaskQueue

    async def main():
        url, name, parts, who = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
        q = RedisTaskQueue(redis_url=url, queue_name=name, partitions=parts)
        await q.connect()
        tasks = await asyncio.gather(*(
            q.enqueue(f"{who}-{i}", "report", {"n": 1}, unique_for=60) for i in range(5)
        ))
        print(" ".join(sorted({t.task_id for t in tasks})))
        await q.close()

    asyncio.run(main())
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("partitions", [1, 3])
async def test_unique_for_across_four_processes_enqueues_one(
    make_queue: QueueFactory, raw_redis: Redis, redis_url: str, queue_name: str, partitions: int
) -> None:
    q = make_queue(partitions=partitions)
    await q.connect()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PRODUCER,
            redis_url,
            queue_name,
            str(partitions),
            f"proc{n}",
            stdout=asyncio.subprocess.PIPE,
        )
        for n in range(4)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    assert all(p.returncode == 0 for p in procs)
    ids = {out.decode().strip() for out, _ in outputs}
    assert len(ids) == 1, ids
    assert list(await _records(raw_redis, q)) == [ids.pop()]


async def test_unique_window_outlives_the_first_task_and_then_lets_one_in(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("a", "mail", {"to": "x"}, unique_for=300)
    claimed = await queue.dequeue("w", timeout=1)
    assert claimed is not None and claimed.task_id == "a"
    await queue.complete_task("a", {"sent": True})
    again = await queue.enqueue("b", "mail", {"to": "x"}, unique_for=300)
    assert again.task_id == "a" and again.state == TaskState.COMPLETED
    assert await raw_redis.exists(queue.keys.task("b")) == 0
    # Another payload is another task; the same unique_key is the same task.
    other = await queue.enqueue("c", "mail", {"to": "y"}, unique_for=300)
    assert other.task_id == "c"
    keyed = await queue.enqueue("d", "mail", {"to": "z"}, unique_for=300, unique_key="to:y")
    assert keyed.task_id == "d"
    same_key = await queue.enqueue("e", "mail", {"to": "w"}, unique_for=300, unique_key="to:y")
    assert same_key.task_id == "d" and same_key.payload == {"to": "z"}
    # The window's end lets an equal task in again.
    await _expire_now(raw_redis, queue.keys.unique("mail", digest_of("mail", {"to": "x"}, None)))
    assert (await queue.enqueue("f", "mail", {"to": "x"}, unique_for=300)).task_id == "f"
    assert (await queue.get_statistics())["total_enqueued"] == 4  # a, c, d, f


async def test_unique_window_of_a_cleared_task_raises_duplicate_task(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("a", "mail", {"to": "x"}, unique_for=300)
    await queue.dequeue("w", timeout=1)
    await queue.complete_task("a", None)
    assert await queue.clear_completed(older_than_seconds=0) == 1
    with pytest.raises(DuplicateTask) as caught:
        await queue.enqueue("b", "mail", {"to": "x"}, unique_for=300)
    assert caught.value.task_id == "a"
    assert await raw_redis.exists(queue.keys.task("b")) == 0


async def test_unique_inside_one_enqueue_many_keeps_the_first(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    tasks = await queue.enqueue_many(
        [{"task_id": f"t{i}", "task_type": "x", "payload": {}, "unique_for": 60} for i in range(5)]
    )
    assert {t.task_id for t in tasks} == {"t0"}
    assert list(await _records(raw_redis, queue)) == ["t0"]


async def test_debounce_collapses_to_the_last_call_and_pushes_its_due_time(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    held = await queue.enqueue("d1", "index", {"v": 1}, debounce=30, unique_key="doc:7")
    assert held.state == TaskState.DELAYED
    due_1 = await raw_redis.zscore(queue.keys.delayed, "d1")
    later = await queue.enqueue("d2", "index", {"v": 2}, debounce=30, unique_key="doc:7")
    last = await queue.enqueue("d3", "index", {"v": 3}, debounce=30, unique_key="doc:7")
    assert later.task_id == last.task_id == "d1"
    assert last.payload == {"v": 3} and last.state == TaskState.DELAYED
    due_3 = await raw_redis.zscore(queue.keys.delayed, "d1")
    assert due_1 is not None and due_3 is not None and due_3 >= due_1
    now_ms = (await raw_redis.time())[0] * 1000
    assert now_ms + 29_000 < due_3 <= now_ms + 31_000
    records = await _records(raw_redis, queue)
    assert list(records) == ["d1"] and records["d1"]["payload"] == '{"v":3}'
    stats = await raw_redis.hgetall(queue.keys.stats)
    assert stats[b"enqueued"] == b"1" and stats[b"debounced"] == b"2"
    await assert_every_task_in_one_state(raw_redis, queue)


@pytest.mark.parametrize("partitions", [1, 4])
async def test_debounce_with_twenty_concurrent_producers_holds_one_task(
    make_queue: QueueFactory, raw_redis: Redis, partitions: int
) -> None:
    producers = [make_queue(partitions=partitions) for _ in range(20)]
    await asyncio.gather(*(p.connect() for p in producers))
    tasks = await asyncio.gather(
        *(
            p.enqueue(f"id{i}", "index", {"v": i}, debounce=30, unique_key="doc")
            for i, p in enumerate(producers)
        )
    )
    assert len({t.task_id for t in tasks}) == 1
    records = await _records(raw_redis, producers[0])
    assert len(records) == 1
    (record,) = records.values()
    assert record["state"] == "delayed"
    # The stored payload is one of the calls' (the last one Redis ran).
    assert record["payload"] in {f'{{"v":{i}}}' for i in range(20)}


async def test_debounce_after_the_held_task_ran_starts_a_new_hold(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("d1", "index", {"v": 1}, debounce=0.05, unique_key="k")
    task = await queue.dequeue("w", timeout=5)  # promoted once due, then claimed
    assert task is not None and task.task_id == "d1"
    fresh = await queue.enqueue("d2", "index", {"v": 2}, debounce=30, unique_key="k")
    assert fresh.task_id == "d2" and fresh.state == TaskState.DELAYED
    held = await raw_redis.get(queue.keys.debounce("index", digest_of("index", {}, "k")))
    assert held == b"d2"


def test_window_arguments_are_checked_before_redis() -> None:
    q = RedisTaskQueue(redis_url="redis://127.0.0.1:1", queue_name="never")
    for kwargs in (
        {"unique_for": 0},
        {"unique_for": -1},
        {"debounce": float("nan")},
        {"unique_for": 1, "debounce": 1},
        {"debounce": 1, "delay": 2},
        {"unique_key": "k"},
        {"unique_for": 1, "unique_key": ""},
        {"unique_for": 1, "unique_key": "x" * 1025},
    ):
        with pytest.raises(InvalidTaskError):
            q._new_task("t", "x", {}, **kwargs)


def test_a_partitioned_unique_task_lands_with_its_window() -> None:
    q = RedisTaskQueue(redis_url="redis://127.0.0.1:1", queue_name="never", partitions=8)
    for i in range(50):
        task = q._new_task(f"t{i}", "x", {"same": True}, unique_for=5)
        anchor = f"x:{task.digest}"
        assert q.layout.index_of(task.task_id) == q.layout.index_of(anchor)
        assert task.task_id == f"t{i}" or task.task_id.startswith(f"t{i}@")


async def test_enqueue_many_with_windows_on_a_partitioned_queue(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = make_queue(partitions=4)
    await q.connect()
    items = [
        {"task_id": f"t{i}", "task_type": "x", "payload": {"k": i % 10}, "unique_for": 60}
        for i in range(200)
    ]
    tasks = await q.enqueue_many(items)
    stood = {t.task_id for t in tasks}
    assert len(stood) == 10  # one per distinct payload
    records = await _records(raw_redis, q)
    assert set(records) == stood
    for task_id, record in records.items():
        keys = q.keys_for(task_id)
        assert (await raw_redis.get(keys.unique("x", record["uniq"]))).decode() == task_id
    again = await q.enqueue_many(items[:10])
    assert [t.task_id for t in again] == [t.task_id for t in tasks[:10]]
    assert (await q.get_statistics())["total_enqueued"] == 10


async def test_a_unique_task_that_was_cancelled_is_still_the_one_returned(
    queue: RedisTaskQueue,
) -> None:
    await queue.enqueue("a", "x", {}, unique_for=60)
    await queue.cancel("a")
    again = await queue.enqueue("b", "x", {}, unique_for=60)
    assert again.task_id == "a" and again.state == TaskState.CANCELLED
