"""Fleet-wide limits, in the claim and settle scripts: rate, concurrency, tokens, pauses.

Every check reads Redis: a held-back task is still pending with no attempt counted, a
slot is a member of the limit's held set, a refund moves the token bucket."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from utils.redis_queue import (
    InvalidLimit,
    LeaseLost,
    RedisTaskQueue,
    Settlement,
    TaskState,
)

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = pytest.mark.timeout(30)


async def _ids(queue: RedisTaskQueue, count: int = 10, **kwargs: object) -> list[str]:
    batch = await queue.claim_ready("w", count, **kwargs)  # type: ignore[arg-type]
    return sorted(t.task_id for t in batch.tasks)


async def test_set_get_and_remove_a_limit_merge_its_kinds(queue: RedisTaskQueue) -> None:
    limit = await queue.set_limit("openai", rate=500, per=60)
    assert (limit.rate, limit.per, limit.effective_burst) == (500, 60, 500)
    limit = await queue.set_limit("openai", concurrency=4)
    assert (limit.rate, limit.concurrency) == (500, 4)  # the rate stayed
    limit = await queue.set_limit("openai", tokens=90_000)
    assert (limit.tokens, limit.tokens_per) == (90_000, 60)
    status = (await queue.get_limits())["openai"]
    assert status.running == 0 and status.paused_for == 0
    assert status.rate_available == 500 and status.tokens_available == 90_000
    assert await queue.remove_limit("openai") is True
    assert await queue.remove_limit("openai") is False
    assert await queue.get_limits() == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"rate": 0},
        {"rate": -1},
        {"rate": math.nan},
        {"rate": math.inf},
        {"rate": True},
        {"rate": 5, "per": 0},
        {"rate": 5, "burst": 0},
        {"rate": 5, "burst": 1.5},
        {"concurrency": 0},
        {"concurrency": -2},
        {"concurrency": 2.0},
        {"tokens": 0},
        {"tokens": 100, "per": -60},
        {"rate": 5, "tokens": 100, "per": 1},
    ],
)
async def test_bad_limit_numbers_are_refused_and_write_nothing(
    queue: RedisTaskQueue, raw_redis: Redis, kwargs: dict[str, object]
) -> None:
    with pytest.raises(InvalidLimit):
        await queue.set_limit("dev", **kwargs)  # type: ignore[arg-type]
    assert not await raw_redis.exists(queue.keys.limits)


@pytest.mark.parametrize("key", ["", " x", "a b", "{tag}", "x" * 129, "*", None, 5])
async def test_bad_limit_keys_are_refused(queue: RedisTaskQueue, key: object) -> None:
    with pytest.raises(InvalidLimit):
        await queue.set_limit(key, concurrency=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidLimit):
        await queue.enqueue("t", "dev", {}, limits=[key])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limits": "openai"},  # a string, not a list of keys
        {"limits": [f"k{i}" for i in range(17)]},
        {"cost_tokens": -1},
        {"cost_tokens": True},
        {"cost_tokens": 1.5},
    ],
)
async def test_bad_task_limits_are_refused_before_redis(
    queue: RedisTaskQueue, raw_redis: Redis, kwargs: dict[str, object]
) -> None:
    with pytest.raises(InvalidLimit):
        await queue.enqueue("t", "dev", {}, **kwargs)  # type: ignore[arg-type]
    assert not await raw_redis.exists(queue.keys.task("t"))


async def test_a_listed_key_with_no_limit_binds_nothing(queue: RedisTaskQueue) -> None:
    task = await queue.enqueue("t", "dev", {}, limits=["nobody-set-this"], cost_tokens=5)
    assert task.limits == ["nobody-set-this"] and task.cost_tokens == 5
    await queue.set_limit("other", concurrency=1)
    assert await _ids(queue) == ["t"]
    stored = await queue.get_task("t")
    assert stored is not None and stored.limits == ["nobody-set-this"]


async def test_concurrency_holds_back_the_rest_untouched(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.set_limit("dev", concurrency=2)
    await queue.enqueue_many(
        {"task_id": f"d{i}", "task_type": "dev", "payload": {}} for i in range(5)
    )
    first = await queue.claim_ready("w", 10)
    assert len(first.tasks) == 2
    assert await raw_redis.zcard(queue.keys.limit_held("dev")) == 2
    again = await queue.claim_ready("w", 10)
    assert again.tasks == [] and again.held_back == {"dev": 3}
    for i in range(5):
        fields = await raw_redis.hmget(queue.keys.task(f"d{i}"), "state", "attempts")
        if f"d{i}" not in {t.task_id for t in first.tasks}:
            assert fields == [b"pending", None]  # no attempt counted
    assert (await queue.get_limits())["dev"].waiting == 3
    await queue.complete_task(first.tasks[0].task_id, {"ok": 1})
    assert await raw_redis.zcard(queue.keys.limit_held("dev")) == 1
    assert len((await queue.claim_ready("w", 10)).tasks) == 1


async def test_a_saturated_type_does_not_slow_other_types(queue: RedisTaskQueue) -> None:
    await queue.set_limit("dev", concurrency=1)
    await queue.enqueue_many(
        {"task_id": f"{kind}{i}", "task_type": kind, "payload": {}, "priority": prio}
        for i in range(200)
        for kind, prio in (("dev", 3), ("qa", 0))
    )
    batch = await queue.claim_ready("w", 50)
    kinds = sorted(t.task_type for t in batch.tasks)
    assert kinds.count("dev") == 1 and kinds.count("qa") == 49
    batch = await queue.claim_ready("w", 50)
    assert {t.task_type for t in batch.tasks} == {"qa"} and len(batch.tasks) == 50


async def test_tasks_held_back_by_a_listed_limit_let_the_next_ones_through(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.set_limit("tenant:acme", concurrency=1)
    tasks = [
        {"task_id": f"a{i}", "task_type": "dev", "payload": {}, "limits": ["tenant:acme"]}
        for i in range(50)
    ]
    tasks += [{"task_id": f"b{i}", "task_type": "dev", "payload": {}} for i in range(5)]
    await queue.enqueue_many(tasks)
    batch = await queue.claim_ready("w", 10)
    assert sorted(t.task_id for t in batch.tasks) == ["a0", "b0", "b1", "b2", "b3", "b4"]
    assert batch.held_back == {"tenant:acme": 49}
    # Held back, they kept their places: the next acme task after a0 finishes is a1.
    await queue.complete_task("a0", None)
    assert await _ids(queue) == ["a1"]
    assert await raw_redis.hget(queue.keys.task("a2"), "attempts") is None


async def test_every_limit_of_a_task_must_admit_it(queue: RedisTaskQueue) -> None:
    await queue.set_limit("openai", concurrency=3)
    await queue.set_limit("tenant:small", concurrency=1)
    await queue.enqueue_many(
        {
            "task_id": f"t{i}",
            "task_type": "dev",
            "payload": {},
            "limits": ["openai", "tenant:small"],
        }
        for i in range(3)
    )
    await queue.enqueue("u", "dev", {}, limits=["openai"])
    assert await _ids(queue) == ["t0", "u"]
    status = await queue.get_limits()
    assert status["openai"].running == 2 and status["tenant:small"].running == 1


async def test_ten_limits_on_one_task_are_all_charged(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    keys = [f"k{i}" for i in range(10)]
    for key in keys:
        await queue.set_limit(key, concurrency=1)
    await queue.enqueue("one", "dev", {}, limits=keys)
    await queue.enqueue("two", "dev", {}, limits=keys[-1:])
    assert await _ids(queue) == ["one"]
    for key in keys:
        assert await raw_redis.zrange(queue.keys.limit_held(key), 0, -1) == [b"one"]
    await queue.fail_task("one", "boom")  # a retry gives its slots back too
    for key in keys:
        assert await raw_redis.zcard(queue.keys.limit_held(key)) == 0
    assert await _ids(queue) == ["one", "two"] or await _ids(queue) == []


async def test_a_slot_comes_back_when_its_lease_expires(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    crashed = make_queue(lease_seconds=0.2)
    await crashed.connect()
    await crashed.set_limit("dev", concurrency=1)
    await crashed.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(2)
    )
    assert len((await crashed.claim_ready("dead", 5)).tasks) == 1  # ... and never settles
    other = make_queue()
    await other.connect()
    blocked = await other.claim_ready("w", 5)
    assert blocked.tasks == [] and blocked.wait_hint is not None and blocked.wait_hint <= 0.25
    await asyncio.sleep(blocked.wait_hint + 0.05)
    claimed = await other.claim_ready("w", 5)
    assert len(claimed.tasks) == 1  # the dead worker's slot expired with its lease
    assert await raw_redis.zcard(crashed.keys.limit_held("dev")) == 1


async def test_extending_a_lease_extends_its_slot(queue: RedisTaskQueue, raw_redis: Redis) -> None:
    await queue.set_limit("dev", concurrency=1)
    await queue.enqueue("t", "dev", {})
    task = (await queue.claim_ready("w", 1)).tasks[0]
    before = await raw_redis.zscore(queue.keys.limit_held("dev"), "t")
    await queue.extend_lease("t", task.lease_token, seconds=300)
    after = await raw_redis.zscore(queue.keys.limit_held("dev"), "t")
    assert before is not None and after is not None and after - before > 200_000


async def test_rate_admits_the_burst_then_one_per_interval(queue: RedisTaskQueue) -> None:
    await queue.set_limit("dev", rate=10, per=1, burst=3)
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(10)
    )
    first = await queue.claim_ready("w", 10)
    assert len(first.tasks) == 3
    held = await queue.claim_ready("w", 10)
    assert held.tasks == [] and held.wait_hint is not None and 0 < held.wait_hint <= 0.11
    await asyncio.sleep(held.wait_hint + 0.01)
    assert len((await queue.claim_ready("w", 10)).tasks) == 1


async def test_a_token_budget_reserves_then_reconciles(queue: RedisTaskQueue) -> None:
    await queue.set_limit("openai", tokens=1000, per=3600)
    await queue.enqueue_many(
        {
            "task_id": f"t{i}",
            "task_type": "dev",
            "payload": {},
            "limits": ["openai"],
            "cost_tokens": 400,
        }
        for i in range(3)
    )
    claimed = await queue.claim_ready("w", 10)
    assert sorted(t.task_id for t in claimed.tasks) == ["t0", "t1"]
    assert (await queue.get_limits())["openai"].tokens_available == pytest.approx(200, abs=1)
    # t0 used only 100 of its 400: 300 come back, so t2 (400) fits.
    t0 = next(t for t in claimed.tasks if t.task_id == "t0")
    states = await queue.settle_many([Settlement("t0", t0.lease_token, {"ok": 1}, tokens_used=100)])
    assert states == [TaskState.COMPLETED]
    assert (await queue.get_limits())["openai"].tokens_available == pytest.approx(500, abs=1)
    assert await _ids(queue) == ["t2"]
    # t1 used 900: 500 more than it reserved, so the budget goes into debt.
    t1 = next(t for t in claimed.tasks if t.task_id == "t1")
    await queue.settle_many(
        [Settlement("t1", t1.lease_token, error="x", retry=False, tokens_used=900)]
    )
    assert (await queue.get_limits())["openai"].tokens_available == pytest.approx(-400, abs=1)


async def test_a_task_bigger_than_the_budget_runs_when_it_is_full(queue: RedisTaskQueue) -> None:
    await queue.set_limit("openai", tokens=1000, per=3600)
    for i in range(2):
        await queue.enqueue(f"big{i}", "dev", {}, limits=["openai"], cost_tokens=5000)
    assert await _ids(queue) == ["big0"]  # not starved: admitted into debt
    assert await _ids(queue) == []


async def test_back_off_pauses_the_limit_and_hands_the_task_back_unspent(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}, "limits": ["openai"]}
        for i in range(3)
    )
    task = (await queue.claim_ready("w", 1)).tasks[0]
    assert task.task_id == "t0"
    paused = await queue.back_off_task("t0", task.lease_token, 0.3, limits=["openai"])
    assert paused == 0.3
    fields = await raw_redis.hmget(queue.keys.task("t0"), "state", "attempts", "retries")
    assert fields == [b"pending", b"0", None]  # no attempt, no retry
    assert (await queue.get_limits())["openai"].paused_for > 0.2
    held = await queue.claim_ready("w", 10)
    assert held.tasks == [] and held.held_back == {"openai": 3}
    assert held.wait_hint is not None and held.wait_hint <= 0.31
    await asyncio.sleep(held.wait_hint + 0.02)
    assert await _ids(queue) == ["t0", "t1", "t2"]  # t0 kept its place at the front
    assert await queue.get_limits() == {}  # a pause-only key goes once its pause is over


async def test_back_off_of_a_lost_lease_is_refused(make_queue: QueueFactory) -> None:
    stale = make_queue(lease_seconds=0.1)
    await stale.connect()
    await stale.enqueue("t", "dev", {})
    task = (await stale.claim_ready("w", 1)).tasks[0]
    await asyncio.sleep(0.15)
    assert len((await stale.claim_ready("other", 1)).tasks) == 1  # reclaimed elsewhere
    with pytest.raises(LeaseLost):
        await stale.back_off_task("t", task.lease_token, 1.0)
    assert await stale.get_limits() == {}  # nothing paused by a stale caller


async def test_changing_a_limit_applies_to_tasks_already_waiting(queue: RedisTaskQueue) -> None:
    await queue.set_limit("dev", concurrency=1)
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(6)
    )
    assert len(await _ids(queue)) == 1
    await queue.set_limit("dev", concurrency=3)
    assert len(await _ids(queue)) == 2
    await queue.set_limit("dev", concurrency=1)  # lowered: nothing more until two finish
    assert await _ids(queue) == []
    await queue.remove_limit("dev")
    assert len(await _ids(queue)) == 3


async def test_a_worker_waiting_on_a_limit_wakes_when_a_slot_frees(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    holder, waiter = make_queue(), make_queue()
    await holder.connect()
    await waiter.connect()
    await holder.set_limit("dev", concurrency=1)
    await holder.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(2)
    )
    running = (await holder.claim_ready("a", 1)).tasks[0]
    blocked = await waiter.claim_ready("b", 1, task_types=["dev"])
    assert blocked.tasks == []
    await raw_redis.delete(holder.keys.wake("dev"))  # the claim's chained token: spent
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(waiter.wait_for_work(["dev"], 20))
    await asyncio.sleep(0.05)
    started = loop.time()
    await holder.complete_task(running.task_id, None)
    await asyncio.wait_for(waiting, 5)
    assert loop.time() - started < 2  # woken by the settle, not by a timeout
    assert len((await waiter.claim_ready("b", 1, task_types=["dev"])).tasks) == 1


async def test_a_partitioned_queues_limits_are_queue_wide(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    partitioned = make_queue(partitions=3)
    await partitioned.connect()
    await partitioned.set_limit("dev", concurrency=1)
    assert await raw_redis.exists(partitioned.layout.wide.limits)
    for part in partitioned.layout.parts:  # no partition holds a copy of its own
        assert part.limits == partitioned.layout.wide.limits or not await raw_redis.exists(
            part.limits
        )


async def test_a_hand_broken_limit_state_key_is_replaced_not_fatal(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.set_limit("dev", concurrency=1)
    await raw_redis.set(queue.keys.limit_state("dev"), "garbage")
    await raw_redis.set(queue.keys.limit_held("dev"), "garbage")
    await raw_redis.hset(queue.keys.limits, "r:dev", "not numbers")
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(2)
    )
    assert len(await _ids(queue)) == 1  # concurrency still holds; the broken rate is ignored
    assert await raw_redis.type(queue.keys.limit_held("dev")) == b"zset"


async def test_every_way_an_attempt_ends_gives_its_slot_back(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    """Release (a graceful stop), a cancel seen at settle, a retry, a dead letter and a
    completion each free the slot, in the same script as the transition."""
    await queue.set_limit("dev", concurrency=5)
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}, "max_retries": 1} for i in range(5)
    )
    claimed = {t.task_id: t for t in (await queue.claim_ready("w", 5)).tasks}
    held = queue.keys.limit_held("dev")
    assert await raw_redis.zcard(held) == 5
    await queue.release_task("t0")
    await queue.cancel("t1")  # running: flagged, ends cancelled when its worker settles
    outcomes = await queue.settle_many(
        [
            Settlement("t1", claimed["t1"].lease_token, error="cancelled on request"),
            Settlement("t2", claimed["t2"].lease_token, error="boom"),
            Settlement("t3", claimed["t3"].lease_token, error="bad", retry=False),
            Settlement("t4", claimed["t4"].lease_token, {"ok": 1}),
        ]
    )
    assert outcomes == [
        TaskState.CANCELLED,
        TaskState.PENDING,
        TaskState.DEAD_LETTER,
        TaskState.COMPLETED,
    ]
    assert await raw_redis.zcard(held) == 0
    for task_id in ("t0", "t2"):  # back to pending: the next claim charges them again
        assert await raw_redis.hget(queue.keys.task(task_id), "held") is None
    assert sorted(t.task_id for t in (await queue.claim_ready("w", 5)).tasks) == ["t0", "t2"]
    assert await raw_redis.zcard(held) == 2


@pytest.mark.parametrize("partitions", [1, 3])
async def test_a_thousand_task_claim_with_sixteen_limits_each_and_many_tenants(
    make_queue: QueueFactory, raw_redis: Redis, partitions: int
) -> None:
    """The extremes a claim and a settle meet: 1,000 tasks in one claim, each bound by 16
    limits (15 shared, one of its own among 500 tenants), then settled 200 at a time."""
    queue = make_queue(partitions=partitions)
    await queue.connect()
    shared = [f"k{i}" for i in range(15)]
    for key in shared:
        await queue.set_limit(key, concurrency=100_000, rate=1_000_000, burst=1_000_000)
    for t in range(500):
        await queue.set_limit(f"tenant:{t}", concurrency=10)
    await queue.enqueue_many(
        {
            "task_id": f"t{i}",
            "task_type": "dev",
            "payload": {},
            "limits": [*shared, f"tenant:{i % 500}"],
            "cost_tokens": 1,
        }
        for i in range(1000)
    )
    batch = await queue.claim_ready("w", 1000)
    assert len(batch.tasks) == 1000
    wide = queue.layout.wide
    assert await raw_redis.zcard(wide.limit_held("k0")) == 1000
    assert await raw_redis.zcard(wide.limit_held("tenant:7")) == 2
    states = await queue.settle_many(Settlement(t.task_id, t.lease_token, {}) for t in batch.tasks)
    assert states == [TaskState.COMPLETED] * 1000
    for key in (*shared, "tenant:0", "tenant:499"):
        assert await raw_redis.zcard(wide.limit_held(key)) == 0
