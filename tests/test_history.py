"""What the queue remembers for a dashboard: per-minute counters, each task's failed
attempts, and the DLQ in dead-letter order (`dlq_at`, in step with the `dlq` set)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from importlib import resources

import pytest
from redis.asyncio import Redis

from tests.support.state import assert_every_task_in_one_state, command_calls, read_queue
from tests.support.worker_apps import registry
from utils.redis_queue import (
    AttemptRecord,
    CorruptQueue,
    MinuteCounts,
    RedisTaskQueue,
    Settlement,
    TaskNotFound,
    TaskState,
)
from utils.redis_queue.keys import HISTORY_TTL_SECONDS, QueueKeys
from utils.redis_queue.queue.history import ATTEMPTS_KEPT, COUNTERS, MAX_HISTORY_MINUTES
from utils.redis_queue.worker import Worker

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = pytest.mark.timeout(60)


def _sum(history: list[MinuteCounts]) -> dict[str, int]:
    return {name: sum(getattr(m, name) for m in history) for name in COUNTERS}


async def _history_keys(raw: Redis, keys: QueueKeys) -> list[bytes]:
    return [k async for k in raw.scan_iter(match=keys.history(0)[:-1] + "*", count=1000)]


async def _server_minute(raw: Redis) -> int:
    seconds, _ = await raw.time()
    return int(seconds) // 60


def test_the_lua_constants_match_their_python_mirrors() -> None:
    common = resources.files("utils.redis_queue").joinpath("lua/include/common.lua").read_text()
    assert re.search(rf"^local HISTORY_TTL_S = {HISTORY_TTL_SECONDS}\b", common, re.MULTILINE)
    assert re.search(rf"^local ATTEMPTS_KEPT = {ATTEMPTS_KEPT}$", common, re.MULTILINE)
    assert HISTORY_TTL_SECONDS > MAX_HISTORY_MINUTES * 60


# -- per-minute counters --------------------------------------------------------------


async def test_minute_counters_count_each_outcome_exactly_once(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = make_queue(max_retries=2, max_lease_losses=1)
    short = make_queue(lease_seconds=0.2, max_lease_losses=1)  # its claims' leases lapse
    await q.connect()
    await short.connect()
    await q.enqueue_many([{"task_id": f"a{i}", "task_type": "a", "payload": {}} for i in range(6)])
    await q.enqueue("a0", "a", {})  # exists: not counted
    await q.enqueue_many([{"task_id": "a1", "task_type": "a", "payload": {}}])  # nor here
    for i in range(6):
        await q.enqueue(f"b{i}", "b", {})
    await q.enqueue("lost", "lost", {})
    await q.enqueue("lost-twice", "lost2", {})
    # 12 + 2 created; a0..a2 complete, a3 retried once then completes, a4 dead-lettered,
    # a5 cancelled while pending, b* go through settle_many below.
    for t in await q.claim("w", 3, task_types=["a"]):
        await q.complete_task(t.task_id, "ok", lease_token=t.lease_token)
    (a3,) = await q.claim("w", 1, task_types=["a"])
    assert await q.fail_task(a3.task_id, "boom", lease_token=a3.lease_token) == TaskState.PENDING
    (a4,) = await q.claim("w", 1, task_types=["a"])
    await q.fail_task(a4.task_id, "fatal", retry=False, lease_token=a4.lease_token)
    assert await q.cancel("a5") == TaskState.CANCELLED
    (again,) = await q.claim("w", 1, task_types=["a"])
    assert again.task_id == "a3"
    await q.complete_task("a3", "ok", lease_token=again.lease_token)
    # Lost leases: `lost` is reaped back to pending (a retry in no counter), then completes;
    # `lost-twice` loses two (max_lease_losses 1): dead-lettered by the reaper.
    await short.claim("dead-worker", 1, task_types=["lost", "lost2"])
    await short.claim("dead-worker", 1, task_types=["lost", "lost2"])
    await asyncio.sleep(0.3)
    await q.reap()
    await short.claim("dead-worker", 1, task_types=["lost2"])
    await asyncio.sleep(0.3)
    await q.reap()
    (lost,) = await q.claim("w", 1, task_types=["lost"])
    await q.complete_task("lost", "ok", lease_token=lost.lease_token)

    history = await q.get_history(5)  # the run may straddle a minute
    expected = {
        "enqueued": 14,
        "completed": 5,  # a0 a1 a2 a3 lost
        "failed": 2,  # a4, lost-twice (failed for good; the DLQ is on)
        "retried": 1,  # a3
        "dead_lettered": 2,
        "cancelled": 1,
    }
    assert _sum(history) == expected
    stats = await q.get_statistics()
    assert {name: stats[f"total_{name}"] for name in COUNTERS} == expected
    view = await assert_every_task_in_one_state(raw_redis, q)
    assert view.history == expected  # what Redis holds, every minute key summed

    # settle_many of 200 mixed outcomes: one HINCRBY per outcome for the history.
    await q.enqueue_many(
        [{"task_id": f"m{i}", "task_type": "m", "payload": {}} for i in range(200)]
    )
    claimed = await q.claim("w", 200, task_types=["m"])
    outcomes = [
        Settlement(t.task_id, t.lease_token, result="ok")
        if i % 2 == 0
        else Settlement(t.task_id, t.lease_token, error="e", delay=60)
        if i % 4 == 1
        else Settlement(t.task_id, t.lease_token, error="x", retry=False)
        for i, t in enumerate(claimed)
    ]
    hincrby, expire = (
        await command_calls(raw_redis, "hincrby"),
        await command_calls(raw_redis, "expire"),
    )
    states = await q.settle_many(outcomes)
    assert states.count(TaskState.COMPLETED) == 100 and states.count(TaskState.DELAYED) == 50
    # stats: the 100 completions at once, 50 retried + 50 x (dead_lettered, failed);
    # history: 4 fields
    assert await command_calls(raw_redis, "hincrby") - hincrby == 1 + 50 + 100 + 4
    assert await command_calls(raw_redis, "expire") - expire <= 1
    expected = {
        "enqueued": 214,
        "completed": 105,
        "failed": 52,
        "retried": 51,
        "dead_lettered": 52,
        "cancelled": 1,
    }
    assert _sum(await q.get_history(5)) == expected
    assert (await read_queue(raw_redis, q.keys)).history == expected


async def test_each_minute_key_expires_after_the_retention(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("t1", "dev", {})
    (task,) = await queue.claim("w", 1)
    await queue.complete_task("t1", "ok", lease_token=task.lease_token)
    keys = await _history_keys(raw_redis, queue.keys)
    assert keys
    for key in keys:
        ttl = await raw_redis.ttl(key)
        assert HISTORY_TTL_SECONDS - 60 < ttl <= HISTORY_TTL_SECONDS, key
    # A later write to the same minute leaves the expiry where it was (EXPIRE ... NX).
    await raw_redis.expire(keys[-1], 1000)
    await queue.enqueue("t2", "dev", {})
    if await _server_minute(raw_redis) == int(keys[-1].rsplit(b":", 1)[1]):
        assert 990 < await raw_redis.ttl(keys[-1]) <= 1000


async def test_history_ends_at_the_current_server_minute_oldest_first(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    minute = await _server_minute(raw_redis)
    await raw_redis.hset(queue.keys.history(minute - 2), mapping={"completed": 7, "failed": 1})
    history = await queue.get_history(3)
    if history[-1].minute != minute * 60:  # the minute turned meanwhile: read it again
        minute = await _server_minute(raw_redis)
        history = await queue.get_history(3)
        assert history[0].completed == 0
    else:
        assert history[0] == MinuteCounts((minute - 2) * 60, completed=7, failed=1)
        assert history[1] == MinuteCounts((minute - 1) * 60)
    assert [m.minute for m in history] == [(minute - 2 + i) * 60 for i in range(3)]
    assert history[0].to_dict()["minute"] == history[0].minute
    assert set(history[0].to_dict()) == {"minute", *COUNTERS}
    assert len(await queue.get_history()) == 60
    assert len(await queue.get_history(MAX_HISTORY_MINUTES)) == MAX_HISTORY_MINUTES


@pytest.mark.parametrize("minutes", [0, -1, MAX_HISTORY_MINUTES + 1, True, 1.5, "5"])
async def test_a_history_length_out_of_range_is_refused(
    queue: RedisTaskQueue, minutes: object
) -> None:
    with pytest.raises(ValueError, match="minutes"):
        await queue.get_history(minutes)  # type: ignore[arg-type]


async def test_a_partitioned_queues_history_sums_every_partition(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = make_queue(partitions=4)
    await q.connect()
    await q.enqueue_many([{"task_id": f"p{i}", "task_type": "t", "payload": {}} for i in range(40)])
    claimed = await q.claim("w", 40)
    assert len(claimed) == 40
    await q.settle_many(
        [
            Settlement(t.task_id, t.lease_token, result="ok")
            if i % 4
            else Settlement(t.task_id, t.lease_token, error="no", retry=False)
            for i, t in enumerate(claimed)
        ]
    )
    written = [keys for keys in q.layout.parts if await _history_keys(raw_redis, keys)]
    assert len(written) == 4  # 40 ids spread over every partition
    totals = _sum(await q.get_history(5))
    assert totals == {
        "enqueued": 40,
        "completed": 30,
        "failed": 10,
        "retried": 0,
        "dead_lettered": 10,
        "cancelled": 0,
    }


# -- per-attempt errors ---------------------------------------------------------------


async def test_every_failed_attempt_is_kept_with_its_worker_and_time(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = make_queue(max_retries=3)
    await q.connect()
    await q.enqueue("job", "dev", {})
    assert await q.get_attempts("job") == []
    long_error = "RuntimeError: boom\n" + "Traceback (most recent call last):\n  x\n" * 20
    errors = ["ValueError: first", long_error, "timed out after 0.1 s"]
    for n, error in enumerate(errors, start=1):
        task = await q.dequeue(f"w{n}", timeout=5)
        assert task is not None and task.attempts == n
        await q.fail_task("job", error, lease_token=task.lease_token)
    task = await q.dequeue("w4", timeout=5)
    assert task is not None
    await q.complete_task("job", {"ok": True}, lease_token=task.lease_token)

    attempts = await q.get_attempts("job")
    assert [(a.attempt, a.error, a.worker_id) for a in attempts] == [
        (1, errors[0], "w1"),
        (2, errors[1], "w2"),
        (3, errors[2], "w3"),
    ]
    times = [datetime.fromisoformat(a.at or "") for a in attempts]
    assert times == sorted(times)
    assert attempts[0].to_dict() == {
        "attempt": 1,
        "error": errors[0],
        "at": attempts[0].at,
        "worker_id": "w1",
        "tokens": 0,
    }
    record = {k.decode(): v for k, v in (await raw_redis.hgetall(q.keys.task("job"))).items()}
    assert all(len(v) <= 64 for k, v in record.items() if k.startswith(("att.", "err.")))
    task = await q.get_task("job")  # the task itself reads as before
    assert task is not None and task.state == TaskState.COMPLETED and task.error is None


async def test_only_the_last_ten_failed_attempts_are_kept(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("many", "dev", {}, max_retries=20)
    for n in range(1, 13):
        (task,) = await queue.claim(f"w{n}", 1)
        error = f"failure {n}: " + "x" * 150  # three chunks each
        (state,) = await queue.settle_many(
            [Settlement("many", task.lease_token, error=error, delay=0)]
        )
        assert state == TaskState.PENDING
    attempts = await queue.get_attempts("many")
    assert len(attempts) == ATTEMPTS_KEPT
    assert [a.attempt for a in attempts] == list(range(3, 13))
    assert all(a.error == f"failure {a.attempt}: " + "x" * 150 for a in attempts)
    assert [a.worker_id for a in attempts] == [f"w{n}" for n in range(3, 13)]
    fields = {k.decode() for k in await raw_redis.hkeys(queue.keys.task("many"))}
    kept = {f for f in fields if f.startswith(("att.", "err."))}
    assert not {f for f in kept if re.match(r"(att|err)\.[12](\.|$)", f)}  # 1 and 2 went
    assert len(kept) == 1 + ATTEMPTS_KEPT * 5  # att.n; per record a header, 3 chunks, a count
    assert (await queue.get_task("many")).error.startswith("failure 12")  # type: ignore[union-attr]


async def test_attempts_of_an_unknown_task_raise_task_not_found(queue: RedisTaskQueue) -> None:
    with pytest.raises(TaskNotFound):
        await queue.get_attempts("nobody")


async def test_a_lost_lease_and_a_worker_failure_are_recorded_as_attempts(
    make_queue: QueueFactory,
) -> None:
    q = make_queue(max_retries=3)
    short = make_queue(lease_seconds=0.2)
    await q.connect()
    await short.connect()
    await q.enqueue("reaped", "dev", {})
    await short.claim("gone-worker", 1)
    await asyncio.sleep(0.3)
    await q.reap()
    (record,) = await q.get_attempts("reaped")
    assert record.attempt == 1 and record.worker_id == "gone-worker"
    assert "lease lost 1 times" in record.error

    await q.enqueue("flaky", "flaky", {"failures": 2})
    worker = Worker(q, registry, task_types=["flaky"], burst=True)
    await worker.run()
    assert await q.wait_for_result("flaky", 5) == {"attempt": 3}
    attempts = await q.get_attempts("flaky")
    assert [a.attempt for a in attempts] == [1, 2]
    for a in attempts:
        assert isinstance(a, AttemptRecord) and a.worker_id == worker.worker_id
        assert f"RuntimeError: failure on attempt {a.attempt}" in a.error
        assert "Traceback" in a.error


# -- the DLQ's time order ----------------------------------------------------------------


async def _dlq_and_order(raw: Redis, keys: QueueKeys) -> tuple[set[str], list[str]]:
    dlq = {m.decode() for m in await raw.smembers(keys.dlq)}
    return dlq, [m.decode() for m in await raw.zrange(keys.dlq_order, 0, -1)]


async def test_dlq_at_follows_every_dead_letter_retry_and_purge(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = make_queue(max_retries=0, max_lease_losses=0)
    short = make_queue(lease_seconds=0.2)
    await q.connect()
    await short.connect()
    k = q.keys
    for i in range(3):  # one at a time, in order
        await q.enqueue(f"d{i}", "dev", {})
        (task,) = await q.claim("w", 1)
        await q.fail_task(task.task_id, "no", lease_token=task.lease_token)
        await asyncio.sleep(0.002)
    await q.enqueue("reaped", "dev", {})
    await short.claim("w", 1)
    await asyncio.sleep(0.3)
    await q.reap()  # its one lost lease is too many
    dlq, order = await _dlq_and_order(raw_redis, k)
    assert order == ["d0", "d1", "d2", "reaped"] and dlq == set(order)
    scores = [s for _, s in await raw_redis.zrange(k.dlq_order, 0, -1, withscores=True)]
    task = await q.get_task("d1")
    assert task is not None and task.completed_at is not None
    assert scores == sorted(scores) and len(set(scores)) == 4

    # A batch: 150 dead-lettered in one settle_many call.
    await q.enqueue_many(
        [{"task_id": f"b{i}", "task_type": "dev", "payload": {}} for i in range(150)]
    )
    claimed = await q.claim("w", 150)
    await q.settle_many([Settlement(t.task_id, t.lease_token, error="x") for t in claimed])
    dlq, order = await _dlq_and_order(raw_redis, k)
    assert len(dlq) == 154 and set(order) == dlq
    assert order[:4] == ["d0", "d1", "d2", "reaped"]

    await q.retry_dlq_task("d1")
    dlq, order = await _dlq_and_order(raw_redis, k)
    assert "d1" not in dlq and "d1" not in order and set(order) == dlq
    await assert_every_task_in_one_state(raw_redis, q)
    assert await q.purge_dlq() == 153
    assert await raw_redis.exists(k.dlq, k.dlq_order) == 0


async def test_a_purge_of_2500_dead_letters_empties_the_dlq_and_its_order(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = make_queue(max_retries=0)
    await q.connect()
    n = 2500
    await q.enqueue_many([{"task_id": f"x{i}", "task_type": "t", "payload": {}} for i in range(n)])
    claimed = await q.claim("w", n)
    assert len(claimed) == n
    states = await q.settle_many([Settlement(t.task_id, t.lease_token, error="e") for t in claimed])
    assert set(states) == {TaskState.DEAD_LETTER}
    assert await raw_redis.scard(q.dlq_key) == n == await raw_redis.zcard(q.keys.dlq_order)
    await assert_every_task_in_one_state(raw_redis, q)
    evalsha = await command_calls(raw_redis, "evalsha")
    assert await q.purge_dlq() == n
    assert await command_calls(raw_redis, "evalsha") - evalsha >= 5  # in chunks of 500
    assert await raw_redis.exists(q.dlq_key, q.keys.dlq_order) == 0
    assert (await q.get_queue_size())["dlq"] == 0


async def test_the_invariant_checker_reports_a_dlq_out_of_step(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    from tests.support.state import single_state_violations

    await queue.enqueue("d", "dev", {})
    (task,) = await queue.claim("w", 1)
    await queue.fail_task("d", "no", retry=False, lease_token=task.lease_token)
    assert not single_state_violations(await read_queue(raw_redis, queue.keys))
    await raw_redis.zrem(queue.keys.dlq_order, "d")
    await raw_redis.zadd(queue.keys.dlq_order, {"ghost": 1})
    found = single_state_violations(await read_queue(raw_redis, queue.keys))
    assert "d: in the dlq set but not in dlq_at" in found
    assert "ghost: in dlq_at but not in the dlq set" in found


async def test_a_dlq_at_of_the_wrong_type_refuses_failures_before_any_write(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(
        [{"task_id": f"w{i}", "task_type": "dev", "payload": {}} for i in range(3)]
    )
    claimed = {t.task_id: t for t in await queue.claim("w", 3)}
    await raw_redis.set(queue.keys.dlq_order, "not a zset")
    before = await raw_redis.hgetall(queue.keys.task("w0"))
    with pytest.raises(CorruptQueue, match="dlq_at"):
        await queue.fail_task("w0", "no", retry=False, lease_token=claimed["w0"].lease_token)
    with pytest.raises(CorruptQueue, match="dlq_at"):  # the whole batch: nothing written
        await queue.settle_many([Settlement("w1", claimed["w1"].lease_token, error="x")])
    assert await raw_redis.hgetall(queue.keys.task("w0")) == before
    assert (await queue.get_task("w1")).state == TaskState.PROCESSING  # type: ignore[union-attr]
    # Completions never touch it: a batch of them goes through.
    (state,) = await queue.settle_many([Settlement("w2", claimed["w2"].lease_token, result=1)])
    assert state == TaskState.COMPLETED
    await raw_redis.delete(queue.keys.dlq_order)
