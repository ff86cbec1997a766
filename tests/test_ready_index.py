"""The ready index (include/common.lua mark_ready, include/merge.lua): a claim across many
task types visits them in the order of their best task and still hands out exactly the
best tasks, whatever removed tasks behind its back, with the index rebuilt when missing
or clobbered. Each case asserts the claim order and what the index holds in Redis."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from tests.support.state import command_calls, read_queue, single_state_violations
from utils.redis_queue import CorruptQueue, RedisTask, RedisTaskQueue, TaskPriority, scripts

pytestmark = pytest.mark.timeout(120)

PRIORITIES = list(TaskPriority)


def _spread(n: int, types: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "task_id": f"t{i}",
            "task_type": f"k{i % types}",
            "payload": {},
            "priority": rng.choice(PRIORITIES),
        }
        for i in range(n)
    ]


def _best_first(specs: list[dict[str, object]]) -> list[str]:
    """Dequeue order: highest priority first, FIFO (the enqueue order) within it."""
    ranked = sorted(enumerate(specs), key=lambda e: (-int(e[1]["priority"]), e[0]))  # type: ignore[call-overload]
    return [str(spec["task_id"]) for _, spec in ranked]


async def _index(raw: Redis, queue: RedisTaskQueue) -> dict[str, float]:
    rows = await raw.zrange(queue.keys.ready, 0, -1, withscores=True)
    return {member.decode(): score for member, score in rows}


async def _drain_order(
    queue: RedisTaskQueue, batch: int, types: list[str] | None
) -> list[RedisTask]:
    claimed: list[RedisTask] = []
    while tasks := await queue.claim("w", batch, task_types=types):
        claimed.extend(tasks)
    return claimed


@pytest.mark.parametrize(
    ("types", "named"),
    [(1_000, False), (1_000, True), (9, True), (3_000, False)],
    ids=["1000-types-none-named", "1000-types-named", "9-types-named", "3000-types"],
)
async def test_claims_across_many_types_hand_out_the_best_tasks_in_order(
    queue: RedisTaskQueue, raw_redis: Redis, types: int, named: bool
) -> None:
    specs = _spread(max(3 * types, 2_000), types, seed=types)
    await queue.enqueue_many(specs)
    served = [f"k{i}" for i in range(types)] if named else None
    claimed = await _drain_order(queue, 7, served)
    assert [t.task_id for t in claimed] == _best_first(specs)
    assert set(await _index(raw_redis, queue)) == {""}  # every type drained, dropped


async def test_a_claim_naming_some_types_of_many_takes_only_those(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    specs = _spread(2_000, 500, seed=3)
    await queue.enqueue_many(specs)
    served = [f"k{i}" for i in range(0, 500, 25)]  # 20 of 500: through the index
    claimed = await _drain_order(queue, 10, served)
    mine = [s for s in specs if s["task_type"] in served]
    assert [t.task_id for t in claimed] == _best_first(mine)
    index = await _index(raw_redis, queue)
    assert not set(served) & set(index)
    assert len(index) == 1 + 480  # the marker and every other type, still pending
    assert (await queue.get_queue_size())["pending"] == 2_000 - len(mine)


async def test_tasks_removed_behind_the_index_do_not_change_what_a_claim_takes(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    """Cancel, delete, purge and a whole type's cancel leave their entries low; the claim
    that meets one reads the set's real head and raises or drops the entry."""
    specs = _spread(1_200, 40, seed=11)
    await queue.enqueue_many(specs)
    await queue.claim("w", 1)  # the index is whole from here on
    gone: set[str] = {"t0"}
    rng = random.Random(5)
    for spec in rng.sample(specs[1:], 150):
        task_id = str(spec["task_id"])
        await (queue.cancel(task_id) if rng.random() < 0.5 else queue.delete_task(task_id))
        gone.add(task_id)
    assert await queue.cancel_by_type("k7") > 0
    gone |= {str(s["task_id"]) for s in specs if s["task_type"] == "k7"}
    before = await _index(raw_redis, queue)
    assert "k7" in before  # left low by cancel_by_type, until a claim meets it
    claimed = await _drain_order(queue, 9, None)
    left = [s for s in specs if s["task_id"] not in gone]
    assert [t.task_id for t in claimed] == _best_first(left)
    assert set(await _index(raw_redis, queue)) == {""}


async def test_an_entry_is_raised_to_the_real_head_once_a_claim_reads_it(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(
        [{"task_id": f"a{i}", "task_type": "a", "payload": {}} for i in range(3)]
        + [{"task_id": f"b{i}", "task_type": "b", "payload": {}} for i in range(3)]
    )
    index = await _index(raw_redis, queue)
    head_a = (await raw_redis.zrange(queue.keys.pending("a"), 0, 0, withscores=True))[0][1]
    assert index["a"] == head_a < index["b"]
    await queue.claim("w", 2, task_types=["a"])
    index = await _index(raw_redis, queue)
    head_a = (await raw_redis.zrange(queue.keys.pending("a"), 0, 0, withscores=True))[0][1]
    assert index["a"] == head_a  # raised past the two claimed


async def test_one_bulk_call_indexes_each_type_at_its_best_task_wherever_the_batch_has_it(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    """enqueue.lua adds a call's pending entries in one ZADD per type after its loop (in
    slices of 500 pairs): 1,000 tasks in one call, a type whose only CRITICAL task comes
    last (after 997 LOW ones, so past a slice boundary) and one whose best is mid-batch."""
    specs: list[dict[str, object]] = [
        {"task_id": f"m{i}", "task_type": "many", "payload": {}, "priority": 0} for i in range(997)
    ]
    specs.append({"task_id": "m-best", "task_type": "many", "payload": {}, "priority": 3})
    specs.insert(10, {"task_id": "x-low", "task_type": "mixed", "payload": {}, "priority": 1})
    specs.insert(500, {"task_id": "x-best", "task_type": "mixed", "payload": {}, "priority": 2})
    assert len(specs) == 1_000
    await queue.enqueue_many(specs)
    index = await _index(raw_redis, queue)
    for task_type in ("many", "mixed"):
        head = await raw_redis.zrange(queue.keys.pending(task_type), 0, 0, withscores=True)
        assert index[task_type] == head[0][1]
    assert await raw_redis.zcard(queue.keys.pending("many")) == 998
    claimed = await _drain_order(queue, 50, None)
    assert [t.task_id for t in claimed] == _best_first(specs)
    assert [t.task_id for t in claimed[:3]] == ["m-best", "x-best", "x-low"]


@pytest.mark.parametrize("damage", ["deleted", "clobbered"])
async def test_a_missing_or_clobbered_index_is_rebuilt_and_nothing_is_skipped(
    queue: RedisTaskQueue, raw_redis: Redis, damage: str
) -> None:
    """A partition written before the index existed has no index; a clobbered one is
    deleted by the next write. Either way the next claim rebuilds it from the pending sets."""
    specs = _spread(600, 60, seed=2)
    await queue.enqueue_many(specs[:300])
    await raw_redis.delete(queue.keys.ready)
    if damage == "clobbered":
        await raw_redis.set(queue.keys.ready, "not a zset")
    await queue.enqueue_many(specs[300:])  # mark_ready meets the damage: nothing fails
    claimed = await _drain_order(queue, 10, [f"k{i}" for i in range(60)])
    assert [t.task_id for t in claimed] == _best_first(specs)
    assert await raw_redis.type(queue.keys.ready) == b"zset"


async def test_a_pending_set_of_the_wrong_type_is_reported_and_the_others_served(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(
        [{"task_id": f"x{i}", "task_type": f"k{i}", "payload": {}} for i in range(20)]
    )
    await queue.claim("w", 1)  # x0; the index is whole
    await raw_redis.delete(queue.keys.pending("k5"))
    await raw_redis.set(queue.keys.pending("k5"), "clobbered")
    claimed: list[str] = []
    with pytest.raises(CorruptQueue, match="pending:k5"):  # once nothing else is left
        while True:
            claimed.extend(t.task_id for t in await queue.claim("w", 4))
    assert sorted(claimed) == sorted(f"x{i}" for i in range(1, 20) if i != 5)
    assert await raw_redis.get(queue.keys.pending("k5")) == b"clobbered"
    assert await raw_redis.hget(queue.keys.task("x5"), "state") == b"pending"


async def test_paused_and_limited_types_are_passed_over_in_index_order(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(
        [
            {"task_id": f"{t}{i}", "task_type": t, "payload": {}, "priority": prio}
            for i in range(5)
            for t, prio in (("hot", 3), ("capped", 2), ("plain", 0))
        ]
    )
    await queue.pause("hot")
    await queue.set_limit("capped", concurrency=2)
    first = await queue.claim("w", 10)  # none named: through the index
    assert [t.task_id for t in first] == ["capped0", "capped1", *(f"plain{i}" for i in range(5))]
    assert set(await _index(raw_redis, queue)) == {"", "hot", "capped"}
    await queue.resume("hot")
    assert [t.task_id for t in await queue.claim("w", 10)] == [f"hot{i}" for i in range(5)]


async def test_workers_claiming_at_once_across_many_types_take_each_task_once(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    producer = make_queue()
    await producer.connect()
    specs = _spread(4_000, 400, seed=9)
    await producer.enqueue_many(specs)
    workers = [make_queue() for _ in range(6)]
    for w in workers:
        await w.connect()
    types = [f"k{i}" for i in range(400)]

    async def drain(index: int, q: RedisTaskQueue) -> list[str]:
        got: list[str] = []
        while tasks := await q.claim(f"w{index}", 1 + index * 3, task_types=types):
            got.extend(t.task_id for t in tasks)
        return got

    results = await asyncio.gather(*(drain(i, w) for i, w in enumerate(workers)))
    everything = [task_id for got in results for task_id in got]
    assert sorted(everything) == sorted(str(s["task_id"]) for s in specs)  # once each
    assert (await producer.get_queue_size())["processing"] == 4_000
    assert set(await _index(raw_redis, producer)) == {""}


async def test_ten_thousand_known_types_with_few_pending_are_not_read_per_claim(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    known = [{"task_id": f"old{i}", "task_type": f"r{i}", "payload": {}} for i in range(10_000)]
    for start in range(0, 10_000, 1_000):
        await queue.enqueue_many(known[start : start + 1_000])
    while await queue.claim("seed", 1_000):
        pass
    await queue.enqueue_many(
        [{"task_id": f"new{i}", "task_type": f"r{i * 7}", "payload": {}} for i in range(10)]
    )
    before = await command_calls(raw_redis, "zrange")
    claimed = await queue.claim("w", 10)
    assert [t.task_id for t in claimed] == [f"new{i}" for i in range(10)]
    zrange = await command_calls(raw_redis, "zrange") - before
    assert zrange < 40, f"{zrange} ZRANGE calls for one claim over 10 pending types"


async def test_a_head_only_claim_reports_the_types_a_limit_holds_back(
    make_queue: Callable[..., RedisTaskQueue],
) -> None:
    """A partitioned queue asks each partition for its head (count 0) with the limit keys
    it knows are blocked; the index's walk meets the held type and reports it, so a burst
    worker does not take "held back" for "nothing left"."""
    queue = make_queue(partitions=3)
    await queue.connect()
    await queue.set_limit("stamp", concurrency=1)
    await queue.enqueue_many(
        {"task_id": f"s{i}", "task_type": "stamp", "payload": {}} for i in range(6)
    )
    served = ["stamp", *(f"other{i}" for i in range(10))]  # more than read directly
    for keys in queue.layout.parts:
        for count in (0, 2):
            call = scripts.claim(
                keys, worker_id="w", lease_ms=1_000, count=count, max_lease_losses=3,
                use_dlq=True, suspects=True, task_types=served, want_head=True,
                blocked=["stamp"], events=0, send_served=True,
            )  # fmt: skip
            reply = scripts.claim_reply(await queue.run(call))
            assert reply.rows == [] and reply.head is None
            waiting = await queue.redis.zcard(keys.pending("stamp"))
            assert reply.held_back == ({"stamp": waiting} if waiting else None), keys.base


async def test_a_long_type_list_is_sent_once_and_sent_again_when_redis_lost_it(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    served = [f"k{i}" for i in range(0, 300, 3)]  # 100 of 300
    specs = _spread(900, 300, seed=4)
    await queue.enqueue_many(specs)
    first = await queue.claim("w", 5, task_types=served)
    ref = scripts.served_ref(tuple(served))[1:]
    key = f"{queue.keys.base}served:{ref}"
    assert await raw_redis.smembers(key) == {t.encode() for t in served}
    assert 0 < await raw_redis.ttl(key) <= 86_400
    before = await command_calls(raw_redis, "sadd")
    second = await queue.claim("w", 5, task_types=served)  # by digest: no list, no SADD
    assert await command_calls(raw_redis, "sadd") == before
    await raw_redis.delete(key)  # expired, or a restart without persistence
    rest = await _drain_order(queue, 10, served)
    mine = [s for s in specs if s["task_type"] in served]
    assert [t.task_id for t in first + second + rest] == _best_first(mine)
    assert await raw_redis.exists(key) == 1


async def test_the_state_checker_reports_a_type_missing_from_a_whole_index(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    """The fault suite's reconcile checks the index too (tests/support/state.py)."""
    await queue.enqueue_many(
        [{"task_id": f"i{i}", "task_type": f"k{i % 3}", "payload": {}} for i in range(9)]
    )
    await queue.claim("w", 1)  # rebuilt: whole
    assert single_state_violations(await read_queue(raw_redis, queue.keys)) == []
    await raw_redis.zrem(queue.keys.ready, "k2")
    await raw_redis.zadd(queue.keys.ready, {"k1": 1e15})
    found = single_state_violations(await read_queue(raw_redis, queue.keys))
    assert len(found) == 2 and all(v.startswith("ready index: k") for v in found)


async def test_a_task_put_back_behind_the_index_is_found_by_the_next_audit(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    """A worker of a version before the index puts tasks back without touching it (a
    rolling upgrade): once a minute a claim audits a slice of the types (SSCAN, 1,000 at a
    time, its cursor in '#') and lowers their entries to their heads."""
    types = [f"k{i}" for i in range(2_500)]  # three slices
    for start in range(0, 2_500, 1_000):
        await queue.enqueue_many(
            {"task_id": f"u{i}", "task_type": types[i], "payload": {}}
            for i in range(start, min(start + 1_000, 2_500))
        )
    claimed = await queue.claim("w", 1_000)
    claimed += await queue.claim("w", 1_000)
    claimed += await queue.claim("w", 1_000)
    assert len(claimed) == 2_500 and set(await _index(raw_redis, queue)) == {""}
    for i in (7, 1_500, 2_499):  # back, as an old worker would: the index is not told
        await raw_redis.zadd(queue.keys.pending(types[i]), {f"u{i}": -1})
        await raw_redis.hset(queue.keys.task(f"u{i}"), mapping={"state": "pending"})
        await raw_redis.hdel(queue.keys.task(f"u{i}"), "lease")
    assert await queue.claim("w", 10) == []  # within the minute: not seen yet
    found: list[str] = []
    for _ in range(3):  # a minute passes before each claim
        looked = (await _index(raw_redis, queue))[""]
        await raw_redis.zadd(queue.keys.ready, {"": looked - 61_000})
        found += [t.task_id for t in await queue.claim("w", 10)]
    assert sorted(found) == ["u1500", "u2499", "u7"]
    assert "#" in await _index(raw_redis, queue)  # the audit's cursor
