"""Periodic schedules: the calendar (every, cron, time zones, the missed-tick policy), the
definitions and due times in Redis, and schedulers that enqueue each tick exactly once
however many run (in-process and in real worker processes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from tests.support.processes import WorkerProcesses, eventually, worker_processes
from utils.redis_queue import InvalidSchedule, RedisTaskQueue, Schedule
from utils.redis_queue.scheduler import run_scheduler
from utils.redis_queue.schedules import MAX_CATCH_UP, tick_id

pytestmark = pytest.mark.timeout(60)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# -- the calendar ------------------------------------------------------------------------------


def test_every_ticks_fall_on_the_anchor_grid_and_catch_up_keeps_the_latest() -> None:
    s = Schedule("s", "dev", every=2, anchor_ms=1_000, catch_up=3)
    assert s.first_due(1_000) == 3_000
    assert s.first_due(3_500) == 5_000
    on_time = s.ticks(3_000, 3_010)
    assert (on_time.due, on_time.skipped, on_time.next_due_ms) == ([3_000], 0, 5_000)
    late = s.ticks(3_000, 20_500)  # due 3 000 .. 19 000: nine ticks missed
    assert (late.due, late.skipped, late.next_due_ms) == ([15_000, 17_000, 19_000], 6, 21_000)


def test_cron_in_a_time_zone_keeps_local_time_across_daylight_saving() -> None:
    s = Schedule("s", "dev", cron="0 9 * * *", timezone="Europe/Paris")
    assert s.first_due(_ms("2026-07-01T10:00:00+00:00")) == _ms("2026-07-02T07:00:00+00:00")
    assert s.first_due(_ms("2026-12-01T10:00:00+00:00")) == _ms("2026-12-02T08:00:00+00:00")


def test_a_sixth_cron_field_is_the_second() -> None:
    s = Schedule("s", "dev", cron="* * * * * */10")
    start = _ms("2026-12-07T00:00:01+00:00")
    assert s.first_due(start) == start + 9_000
    assert s.ticks(start + 9_000, start + 39_500).due == [start + 39_000]


def test_cron_missed_ticks_after_an_outage_catch_up_one_by_default() -> None:
    s = Schedule("s", "dev", cron="*/5 * * * *")
    due = _ms("2026-12-07T00:00:00+00:00")
    ticks = s.ticks(due, due + 3_600_000 + 30_000)  # 13 ticks due in that hour
    assert ticks.due == [due + 3_600_000]
    assert ticks.skipped == 12
    assert ticks.next_due_ms == due + 3_900_000
    every_one = Schedule("s", "dev", cron="*/5 * * * *", catch_up=MAX_CATCH_UP)
    assert len(every_one.ticks(due, due + 3_600_000).due) == 13


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cron": "*/5 * * * *", "every": 5},
        {},
        {"cron": "not a cron"},
        {"every": 0.01},
        {"every": float("nan")},
        {"every": 5, "timezone": "Mars/Olympus"},
        {"every": 5, "catch_up": 0},
        {"every": 5, "catch_up": MAX_CATCH_UP + 1},
    ],
)
async def test_a_schedule_that_cannot_be_valid_is_refused_and_nothing_is_stored(
    queue: RedisTaskQueue, raw_redis: Redis, kwargs: dict[str, object]
) -> None:
    with pytest.raises(InvalidSchedule):
        await queue.schedule("s", task_type="dev", **kwargs)  # type: ignore[arg-type]
    assert await raw_redis.exists(queue.keys.schedules, queue.keys.schedule_due) == 0


async def test_a_bad_name_is_refused(queue: RedisTaskQueue) -> None:
    with pytest.raises(InvalidSchedule):
        await queue.schedule("{tag}", every=5, task_type="dev")


# -- definitions in Redis ----------------------------------------------------------------------


async def test_schedule_list_and_unschedule_keep_redis_in_step(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    info = await queue.schedule(
        "nightly", cron="0 2 * * *", task_type="report", payload={"k": 1}, priority="high",
        timezone="Europe/Paris",
    )  # fmt: skip
    await queue.schedule("often", every=30, task_type="dev")
    stored = json.loads(await raw_redis.hget(queue.keys.schedules, "nightly"))
    assert stored["cron"] == "0 2 * * *"
    assert stored["payload"] == {"k": 1}
    assert stored["priority"] == 2
    assert await raw_redis.zscore(queue.keys.schedule_due, "nightly") == info.next_due_ms
    listed = await queue.list_schedules()
    assert [i.schedule.name for i in listed] == ["nightly", "often"]
    assert listed[0].to_dict()["next_due"] is not None
    assert listed[0].last_due_ms is None
    assert await queue.unschedule("nightly") is True
    assert await queue.unschedule("nightly") is False
    assert await raw_redis.hkeys(queue.keys.schedules) == [b"often"]
    assert await raw_redis.zrange(queue.keys.schedule_due, 0, -1) == [b"often"]


async def test_missed_ticks_after_an_outage_follow_catch_up(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.schedule("s", every=1, task_type="dev", catch_up=3)
    # An outage: the schedule was made 20 s ago and last due 10 s ago (no scheduler ran).
    definition = json.loads(await raw_redis.hget(queue.keys.schedules, "s"))
    definition["anchor_ms"] -= 20_000
    due = definition["anchor_ms"] + 10_000
    await raw_redis.hset(queue.keys.schedules, "s", json.dumps(definition))
    await raw_redis.zadd(queue.keys.schedule_due, {"s": due})
    step = await queue.run_due_schedules()
    assert step.enqueued == 3 and step.advanced == 1
    ids = sorted(t.task_id for t in await queue.claim("w", 100))
    assert len(ids) == 3
    last = int((await raw_redis.hget(queue.keys.schedule_last, "s")).split()[0])
    assert ids[-1] == tick_id("s", last)
    skipped = int((await raw_redis.hget(queue.keys.schedule_last, "s")).split()[1])
    assert skipped + 3 == (last - due) // 1000 + 1
    next_due = await raw_redis.zscore(queue.keys.schedule_due, "s")
    assert next_due == last + 1000
    assert (await queue.list_schedules())[0].skipped == skipped


async def test_an_unreadable_or_unsendable_schedule_holds_back_only_itself(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    queue = make_queue()
    await queue.connect()
    for name in ("bad", "big", "good"):
        await queue.schedule(name, every=60, task_type="dev", payload={"x": "y" * 2000})
    await raw_redis.hset(queue.keys.schedules, "bad", "{not json")
    await raw_redis.zadd(queue.keys.schedule_due, {"bad": 1, "big": 1, "good": 1})
    small = make_queue(max_payload_bytes=1000)  # "big"'s payload is over it now
    await small.connect()
    definition = json.loads(await raw_redis.hget(queue.keys.schedules, "good"))
    definition["payload"] = {}
    await raw_redis.hset(queue.keys.schedules, "good", json.dumps(definition))
    step = await small.run_due_schedules()
    assert (step.enqueued, step.advanced) == (1, 1)
    assert await raw_redis.zscore(queue.keys.schedule_due, "bad") == 1  # left due
    assert await raw_redis.zscore(queue.keys.schedule_due, "big") == 1
    assert (await raw_redis.zscore(queue.keys.schedule_due, "good") or 0) > 1
    again = await small.run_due_schedules()  # nothing it can move: wait a poll, no spin
    assert (again.enqueued, again.advanced, again.next_due_in) == (0, 0, None)
    assert (await queue.run_due_schedules()).advanced == 1  # "big" under the larger bound


async def test_a_thousand_due_schedules_are_enqueued_in_one_step(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    for i in range(1000):
        await queue.schedule(f"s{i}", every=3600, task_type="dev")
    await raw_redis.zadd(queue.keys.schedule_due, {f"s{i}": 0 for i in range(1000)})
    step = await queue.run_due_schedules()
    assert (step.enqueued, step.advanced) == (1000, 1000)
    assert (await queue.get_queue_size())["pending"] == 1000
    assert await raw_redis.zcount(queue.keys.schedule_due, "-inf", 1) == 0


async def _tick_ids(raw_redis: Redis, queue: RedisTaskQueue, name: str) -> list[int]:
    dues = []
    for keys in queue.layout.parts:
        async for key in raw_redis.scan_iter(match=f"{keys.base}task:sched:{name}:*"):
            dues.append(int(key.decode().rsplit(":", 1)[1]))
    return sorted(dues)


@pytest.mark.parametrize("partitions", [1, 4])
async def test_two_schedulers_for_ten_ticks_enqueue_each_tick_once(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis, partitions: int
) -> None:
    admin = make_queue(partitions=partitions)
    await admin.connect()
    schedulers = [make_queue(partitions=partitions) for _ in range(2)]
    for q in schedulers:
        await q.connect()
    info = await admin.schedule("tick", every=0.2, task_type="dev", payload={"n": 1})
    loops = [asyncio.create_task(run_scheduler(q, poll=0.05)) for q in schedulers]
    try:
        await eventually(lambda: _at_least(raw_redis, admin, "tick", 12), timeout=10)
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    dues = await _tick_ids(raw_redis, admin, "tick")
    assert dues[0] == info.next_due_ms
    assert dues == [dues[0] + 200 * k for k in range(len(dues))]  # none missed, none twice
    size = await admin.get_queue_size()
    assert size["pending"] == len(dues)
    stats = [await raw_redis.hget(k.stats, "enqueued") for k in admin.layout.parts]
    assert sum(int(s or 0) for s in stats) == len(dues)  # duplicates are not enqueues
    task = await admin.get_task(tick_id("tick", dues[0]))
    assert task is not None and task.payload == {"n": 1} and task.task_type == "dev"


async def test_twenty_schedulers_at_once_still_enqueue_each_tick_once(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    admin = make_queue(partitions=4)
    await admin.connect()
    schedulers = [make_queue(partitions=4) for _ in range(20)]
    for q in schedulers:
        await q.connect()
    info = await admin.schedule("tick", every=0.1, task_type="dev")
    await admin.schedule("slow", every=0.25, task_type="qa")
    loops = [asyncio.create_task(run_scheduler(q, poll=0.02)) for q in schedulers]
    try:
        await eventually(lambda: _at_least(raw_redis, admin, "tick", 20), timeout=15)
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    for name, period in (("tick", 100), ("slow", 250)):
        dues = await _tick_ids(raw_redis, admin, name)
        assert dues == [dues[0] + period * k for k in range(len(dues))], name
    assert (await _tick_ids(raw_redis, admin, "tick"))[0] == info.next_due_ms
    stats = [await raw_redis.hget(k.stats, "enqueued") for k in admin.layout.parts]
    total = len(await _tick_ids(raw_redis, admin, "tick")) + len(
        await _tick_ids(raw_redis, admin, "slow")
    )
    assert sum(int(s or 0) for s in stats) == total  # 20 senders, each tick enqueued once


async def _at_least(raw_redis: Redis, queue: RedisTaskQueue, name: str, count: int) -> bool:
    return len(await _tick_ids(raw_redis, queue, name)) >= count


# -- schedulers in real worker processes -------------------------------------------------------


@pytest.fixture
def workers(redis_url: str, queue_name: str) -> Iterator[WorkerProcesses]:
    with worker_processes(redis_url, queue_name) as procs:
        yield procs


async def test_two_worker_processes_run_the_schedule_each_tick_once(
    queue: RedisTaskQueue, raw_redis: Redis, workers: WorkerProcesses
) -> None:
    info = await queue.schedule("beat", every=0.3, task_type="noop")
    procs = [workers.start("--concurrency", "2") for _ in range(2)]
    await eventually(lambda: _completed_at_least(queue, 10), timeout=20)
    assert await workers.stop_all() == [0, 0]
    dues = await _tick_ids(raw_redis, queue, "beat")
    assert len(dues) >= 10
    assert dues == [dues[0] + 300 * k for k in range(len(dues))]  # none missed, none twice
    # Ticks due while the workers were still starting: the latest one ran (catch_up=1).
    assert info.next_due_ms is not None
    skipped = int((await raw_redis.hget(queue.keys.schedule_last, "beat")).split()[1])
    assert dues[0] == info.next_due_ms + 300 * skipped
    completed = int(await raw_redis.hget(queue.keys.stats, "completed") or 0)
    assert completed == len(dues) - (await queue.get_queue_size())["pending"]
    assert procs


async def test_workers_started_with_no_scheduler_do_not_run_schedules(
    queue: RedisTaskQueue, raw_redis: Redis, workers: WorkerProcesses
) -> None:
    await queue.schedule("beat", every=0.1, task_type="noop")
    workers.start("--no-scheduler")
    workers.start(AGENTIC_WORKER__SCHEDULER="false")
    await eventually(lambda: _registered(queue, 2))
    await asyncio.sleep(1.0)  # an observation window: nothing may happen in it
    assert await _tick_ids(raw_redis, queue, "beat") == []
    assert await workers.stop_all() == [0, 0]


async def _completed_at_least(queue: RedisTaskQueue, count: int) -> bool:
    return (await queue.get_queue_size())["completed"] >= count


async def _registered(queue: RedisTaskQueue, count: int) -> bool:
    return await queue.redis.hlen(queue.keys.workers) >= count


def test_tick_ids_are_valid_task_ids() -> None:
    from utils.redis_queue.keys import validate_task_id

    assert validate_task_id(tick_id("a" * 64, 2**53)) == tick_id("a" * 64, 2**53)
    assert datetime.now(UTC)  # the module imports its zone handling without a tz database
