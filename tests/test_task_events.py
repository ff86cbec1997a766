"""Task lifecycle events: every transition script writes one entry per task event to its
partition's bounded stream (when events are on), and queue.events() / `agentic events`
read them, each task's in order, across partitions, as they are written."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.processes import ROOT, SpawnedWorkers, agentic_argv, agentic_env
from utils.redis_queue import (
    HandlerRegistry,
    PermanentFailure,
    RedisTaskQueue,
    TaskContext,
    TaskEvent,
    TaskState,
    Worker,
)
from utils.redis_queue.lifecycle import since_position

pytestmark = pytest.mark.timeout(60)


async def _take(events: AsyncIterator[TaskEvent], until: Callable[[TaskEvent], bool]) -> list:
    """Events from `events` up to and including the one `until` accepts."""
    seen = []
    async for event in events:
        seen.append(event)
        if until(event):
            return seen
    return seen


def _by_task(events: list[TaskEvent]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for e in events:
        out[e.task_id].append(e.event)
    return out


async def _wait_for_blocked_reader(raw_redis: Redis) -> None:
    """Until a follower is blocked in XREAD (its "$" is resolved, so what follows is new)."""
    while not any(c.get("cmd") == "xread" for c in await raw_redis.client_list()):
        await asyncio.sleep(0.01)


async def test_a_follower_sees_enqueued_started_completed_for_every_task_in_order_over_3_partitions(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    queue = make_queue(partitions=3)
    await queue.connect()
    n = 600
    done: set[str] = set()

    def all_done(e: TaskEvent) -> bool:
        if e.event == "completed":
            done.add(e.task_id)
        return len(done) == n

    follower = asyncio.create_task(_take(queue.events("0"), all_done))

    async def work(ctx: TaskContext) -> str:
        return ctx.task_id

    await queue.enqueue_many(
        [{"task_id": f"t{i}", "task_type": "w", "payload": {}} for i in range(n)]
    )
    await Worker(queue, HandlerRegistry({"w": work}), concurrency=16, burst=True).run()
    seen = await asyncio.wait_for(follower, 30)

    per_task = _by_task(seen)
    assert len(per_task) == n
    assert all(events == ["enqueued", "started", "completed"] for events in per_task.values())
    # Each partition's events come in stream order; every task's attempt is recorded.
    for part in range(3):
        ids = [e.sort_key for e in seen if e.partition == part]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {e.attempt for e in seen if e.event == "enqueued"} == {0}
    assert {e.attempt for e in seen if e.event != "enqueued"} == {1}
    assert {e.task_type for e in seen} == {"w"}
    # In Redis: one stream per partition, under its hash tag, holding exactly these.
    lengths = [await raw_redis.xlen(part.events) for part in queue.layout.parts]
    assert all(length > 0 for length in lengths) and sum(lengths) == 3 * n
    for task_id in ("t0", "t1", f"t{n - 1}"):
        part = queue.keys_for(task_id)
        raw = await raw_redis.xrange(part.events)
        mine = [f for _, f in raw if f[b"id"] == task_id.encode()]
        assert [f[b"event"] for f in mine] == [b"enqueued", b"started", b"completed"]
        assert part.events.startswith(part.base)


async def test_retried_failed_dead_lettered_cancelled_deleted_and_promoted_events(
    make_queue: Callable[..., RedisTaskQueue], queue_name: str
) -> None:
    queue = make_queue(partitions=3)
    no_dlq = make_queue(partitions=3, enable_dlq=False, queue_name=f"{queue_name}-n")
    await queue.connect()
    await no_dlq.connect()

    async def flaky(ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("boom on the first try\nsecond line")
        return "ok"

    async def bad(ctx: TaskContext) -> str:
        raise PermanentFailure("invalid input")

    handlers = HandlerRegistry({"flaky": flaky, "bad": bad})
    await queue.enqueue("f1", "flaky", {})
    await queue.enqueue("d1", "bad", {})
    await queue.enqueue("c1", "flaky", {})
    await queue.enqueue("later", "flaky", {}, delay=0.05)
    await queue.cancel("c1")
    await queue.enqueue("x1", "other", {})
    await queue.delete_task("x1")
    while (await queue.get_task("later")).state == TaskState.DELAYED:  # type: ignore[union-attr]
        await asyncio.sleep(0.02)
        await queue.reap()
    await Worker(queue, handlers, concurrency=4, burst=True).run()
    await queue.retry_dlq_task("d1")
    await no_dlq.enqueue("nf", "bad", {})
    await Worker(no_dlq, handlers, burst=True).run()

    seen = [e async for e in queue.events("0", follow=False)]
    seen += [e async for e in no_dlq.events("0", follow=False)]
    per_task = _by_task(seen)
    assert per_task["f1"] == ["enqueued", "started", "retried", "started", "completed"]
    assert per_task["d1"] == ["enqueued", "started", "dead_lettered", "retried"]
    assert per_task["c1"] == ["enqueued", "cancelled"]
    assert per_task["x1"] == ["enqueued", "deleted"]
    assert per_task["later"][:2] == ["enqueued", "promoted"]
    assert per_task["later"][-1] == "completed"
    assert per_task["nf"] == ["enqueued", "started", "failed"]
    one = {(e.task_id, e.event): e for e in seen}
    retried = one[("f1", "retried")]
    assert (retried.attempt, retried.error) == (1, "RuntimeError: boom on the first try")
    assert one[("f1", "completed")].attempt == 2 and one[("f1", "completed")].error is None
    assert one[("d1", "dead_lettered")].error == "PermanentFailure: invalid input"
    assert one[("nf", "failed")].error == "PermanentFailure: invalid input"
    # Filters: by task type and by event name.
    only = [e async for e in queue.events("0", follow=False, task_types=["bad"], names=["started"])]
    assert [(e.task_id, e.event) for e in only] == [("d1", "started")]


async def test_an_expired_lease_and_a_release_are_events(
    make_queue: Callable[..., RedisTaskQueue],
) -> None:
    queue = make_queue(lease_seconds=0.1)
    await queue.connect()
    await queue.enqueue("gone", "t", {})
    await queue.enqueue("back", "t", {})
    claimed = {t.task_id: t for t in await queue.claim("w", 2)}
    await queue.release_task("back", claimed["back"].lease_token)
    await asyncio.sleep(0.15)  # the lease runs out in server time
    await queue.reap()
    per_task = _by_task([e async for e in queue.events("0", follow=False)])
    assert per_task["back"] == ["enqueued", "started", "released"]
    assert per_task["gone"] == ["enqueued", "started", "retried"]
    lost = [e async for e in queue.events("0", follow=False, names=["retried"])]
    assert lost[0].error is not None and lost[0].error.startswith("lease lost 1 times")


async def test_events_off_write_no_stream_key(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis, queue_name: str
) -> None:
    queue = make_queue(partitions=3, events=False)
    await queue.connect()

    async def work(ctx: TaskContext) -> str:
        if ctx.task_id.startswith("fail"):
            raise PermanentFailure("no")
        return "ok"

    await queue.enqueue_many(
        [
            {"task_id": f"{k}{i}", "task_type": "w", "payload": {}}
            for k in ("ok", "fail")
            for i in range(20)
        ]
    )
    await queue.enqueue("c", "w", {}, delay=60)
    await queue.cancel("c")
    await Worker(queue, HandlerRegistry({"w": work}), concurrency=8, burst=True).run()
    await queue.purge_dlq()
    assert (await queue.get_statistics())["completed"] == 20
    for part in queue.layout.parts:
        assert await raw_redis.exists(part.events) == 0
    assert [k async for k in raw_redis.scan_iter(match=f"*{queue_name}*events*")] == []
    assert [e async for e in queue.events("0", follow=False)] == []


async def test_the_maxlen_bound_holds_under_50k_events(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    queue = make_queue(events_max_len=1000)
    await queue.connect()
    n = 50_000
    await queue.enqueue_many(
        [{"task_id": f"m{i}", "task_type": "w", "payload": {}} for i in range(n)]
    )
    key = queue.keys.events
    length = await raw_redis.xlen(key)
    # MAXLEN ~ trims whole nodes (stream-node-max-entries, 100 by default): a little over.
    assert 1000 <= length <= 1100
    kept = [e async for e in queue.events("0", follow=False)]
    assert len(kept) == length
    assert kept[-1].task_id == f"m{n - 1}"  # the newest are the ones kept
    assert [e.sort_key for e in kept] == sorted(e.sort_key for e in kept)
    info = await raw_redis.xinfo_stream(key)
    assert info["entries-added"] == n


async def test_since_a_stream_id_or_a_time_and_dollar_for_new_events_only(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    queue = make_queue(partitions=2)
    await queue.connect()
    for i in range(5):
        await queue.enqueue(f"old{i}", "t", {})
    old = [e async for e in queue.events("0", follow=False)]
    after_third = [e async for e in queue.events(old[2].entry_id, follow=False)]
    # An id resumes every partition after it (ids of two partitions may tie in one ms).
    later = [e.entry_id for e in old if e.sort_key[:2] > old[2].sort_key[:2]]
    assert [e.entry_id for e in after_third] == later and len(later) < len(old)
    at = datetime.fromtimestamp((old[-1].at_ms + 1) / 1000, UTC)
    assert [e async for e in queue.events(at, follow=False)] == []
    assert len([e async for e in queue.events(old[0].at_ms / 1000, follow=False)]) == 5

    new: set[str] = set()

    def five_new(e: TaskEvent) -> bool:
        new.add(e.task_id)
        return len(new) == 5

    follower = asyncio.create_task(_take(queue.events("$"), five_new))
    await _wait_for_blocked_reader(raw_redis)
    for i in range(5):
        await queue.enqueue(f"new{i}", "t", {})
    fresh = await asyncio.wait_for(follower, 10)
    # Only the new ones; in order within each partition (across two, a tie in one
    # millisecond has no order).
    assert sorted(e.task_id for e in fresh) == [f"new{i}" for i in range(5)]
    for part in range(2):
        mine = [e.task_id for e in fresh if e.partition == part]
        assert mine == sorted(mine)


def test_since_position_accepts_the_documented_forms() -> None:
    assert since_position("$") == "$"
    assert since_position("0") == since_position("-") == "0-0"
    assert since_position("1700000000000-3") == "1700000000000-3"
    assert since_position(1700000000.5) == "1700000000499-18446744073709551615"
    assert since_position("2023-11-14T22:13:20+00:00") == "1699999999999-18446744073709551615"
    with pytest.raises(ValueError, match="since"):
        since_position("yesterday")


async def test_cli_follower_sees_a_real_worker_process_run_tasks_in_order(
    make_queue: Callable[..., RedisTaskQueue], redis_url: str, queue_name: str
) -> None:
    queue = make_queue(partitions=3)
    await queue.connect()
    env = agentic_env(redis_url, queue_name, AGENTIC_PARTITIONS="3")
    spawned = SpawnedWorkers()
    follower = spawned.spawn(
        agentic_argv("events", "--follow", "--since", "0", "--json"),
        env,
        stdout=subprocess.PIPE,
    )
    try:
        n = 60
        await queue.enqueue_many(
            [
                {"task_id": f"p{i}", "task_type": "flaky", "payload": {"failures": i % 2}}
                for i in range(n)
            ]
        )
        # Served until the follower saw every task complete (then SIGTERM), not --burst:
        # what the test pins is the follower, not when a worker calls the queue drained.
        spawned.spawn(
            agentic_argv("worker", "--app", "tests.support.worker_apps:registry", "-c", "8"),
            env,
        )
        assert follower.stdout is not None
        seen: list[dict[str, Any]] = []
        completed = 0
        while completed < n:
            line = await asyncio.to_thread(follower.stdout.readline)
            assert line, "the follower ended"
            seen.append(json.loads(line))
            completed += seen[-1]["event"] == "completed"
        spawned.kill(follower)
        assert await spawned.stop_all() == [0]  # the worker stops gracefully
    finally:
        for proc in spawned.alive():
            spawned.kill(proc)
        if follower.stdout is not None:
            follower.stdout.close()
    per_task: dict[str, list[str]] = defaultdict(list)
    for e in seen:
        per_task[e["task_id"]].append(e["event"])
    for i in range(n):
        expected = ["enqueued", "started", "completed"]
        if i % 2:
            expected = ["enqueued", "started", "retried", "started", "completed"]
        assert per_task[f"p{i}"] == expected, i
    assert {e["partition"] for e in seen} == {0, 1, 2}
    assert all(e["at"].startswith(str(datetime.now(UTC).year)) for e in seen)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agentic_argv(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


async def test_cli_prints_what_is_kept_filters_and_refuses_a_bad_since(
    queue: RedisTaskQueue, redis_url: str, queue_name: str
) -> None:
    await queue.enqueue("a", "dev", {})
    await queue.enqueue("b", "qa", {})
    await queue.cancel("b")
    env = agentic_env(redis_url, queue_name)
    out = await asyncio.to_thread(_cli, env, "events", "--json", "--type", "qa")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["task_id"], r["event"]) for r in rows] == [("b", "enqueued"), ("b", "cancelled")]
    out = await asyncio.to_thread(_cli, env, "events", "--event", "enqueued")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2
    assert " enqueued " in out.stdout and " a dev attempt=0" in out.stdout
    out = await asyncio.to_thread(_cli, env, "events", "--since", "yesterday")
    assert out.returncode == 2 and "--since" in out.stderr
    down = agentic_env("redis://127.0.0.1:1", queue_name)
    assert (await asyncio.to_thread(_cli, down, "events")).returncode == 69


async def test_an_events_key_of_another_type_never_fails_a_transition(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await raw_redis.set(queue.keys.events, "not a stream")
    await queue.enqueue("a", "t", {})
    (task,) = await queue.claim("w", 1)
    await queue.complete_task("a", {"ok": 1}, lease_token=task.lease_token)
    done = await queue.get_task("a")
    assert done is not None and done.state == TaskState.COMPLETED
    assert await raw_redis.get(queue.keys.events) == b"not a stream"
