"""Listing tasks by state: each state's order, stable cursors while tasks move, the merge
over partitions, type filters, and the bounds on what a page reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.listing import Recorder, all_pages, entries_in
from tests.support.state import queue_keys_dump
from utils.redis_queue import InvalidTaskType, RedisTaskQueue, TaskState
from utils.redis_queue.models import Settlement
from utils.redis_queue.queue import listing
from utils.redis_queue.summaries import encode_cursor

pytestmark = pytest.mark.timeout(60)
QueueFactory = Callable[..., RedisTaskQueue]


def _tasks(ids: list[str], task_type: str = "noop", **extra: Any) -> list[dict[str, Any]]:
    return [{"task_id": i, "task_type": task_type, "payload": {}, **extra} for i in ids]


async def _claim_all(queue: RedisTaskQueue, count: int) -> list[Any]:
    claimed = await queue.claim("w", count)
    assert len(claimed) == count
    return claimed


# -- each state's order ------------------------------------------------------------------


async def test_pending_pages_follow_dequeue_order_across_types_and_priorities(
    queue: RedisTaskQueue,
) -> None:
    for i in range(30):
        await queue.enqueue(f"p{i}", "abc"[i % 3], {}, priority=i % 4)
    first = await queue.page_tasks(TaskState.PENDING, limit=4)
    assert first.total == 30 and len(first.tasks) == 4 and first.next_cursor is not None
    pages = await all_pages(queue, TaskState.PENDING, 4)
    listed = [t.task_id for page in pages for t in page.tasks]
    assert [t.task_id for t in first.tasks] == listed[:4]
    assert all(t.state == "pending" and t.at is None for p in pages for t in p.tasks)
    claimed = await _claim_all(queue, 30)  # what a worker takes, in the order it takes it
    assert listed == [t.task_id for t in claimed]


async def test_delayed_by_due_time_and_processing_by_lease_deadline(
    queue: RedisTaskQueue,
) -> None:
    for seconds in (30, 10, 20):
        await queue.enqueue(f"d{seconds}", "noop", {}, delay=seconds)
    delayed = await queue.page_tasks("delayed")
    assert [t.task_id for t in delayed.tasks] == ["d10", "d20", "d30"]
    ats = [t.at for t in delayed.tasks]
    assert None not in ats and ats == sorted(ats)  # type: ignore[type-var]
    for i in range(3):
        await queue.enqueue(f"r{i}", "noop", {})
    for _ in range(3):  # one claim each: later leases end later
        await queue.claim("w", 1)
        await asyncio.sleep(0.003)
    processing = await queue.page_tasks(TaskState.PROCESSING, limit=2)
    assert [t.task_id for t in processing.tasks] == ["r0", "r1"]
    assert processing.total == 3 and processing.tasks[0].worker_id == "w"
    rest = await queue.page_tasks(TaskState.PROCESSING, limit=2, cursor=processing.next_cursor)
    assert [t.task_id for t in rest.tasks] == ["r2"] and rest.next_cursor is None


async def test_finished_states_list_newest_first(
    make_queue: QueueFactory, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks([f"f{i}" for i in range(9)]))
    claimed = await _claim_all(queue, 6)
    for task in claimed[:3]:
        await queue.complete_task(task.task_id, {"n": task.task_id})
        await asyncio.sleep(0.002)
    for task in claimed[3:]:
        await queue.fail_task(task.task_id, f"broke {task.task_id}\nsecond line", retry=False)
        await asyncio.sleep(0.002)
    for i in (6, 7, 8):
        await queue.cancel(f"f{i}")
        await asyncio.sleep(0.002)
    completed = await queue.page_tasks(TaskState.COMPLETED)
    assert [t.task_id for t in completed.tasks] == ["f2", "f1", "f0"]
    assert completed.total == 3 and completed.tasks[0].at == completed.tasks[0].completed_at
    dead = await queue.page_tasks(TaskState.DEAD_LETTER)
    assert [t.task_id for t in dead.tasks] == ["f5", "f4", "f3"]
    assert [t.error_line for t in dead.tasks] == ["broke f5", "broke f4", "broke f3"]
    # the ordered index and the set the seed reads with SCARD hold the same ids
    keys = queue.keys
    assert set(await raw_redis.zrange(keys.dlq_order, 0, -1)) == await raw_redis.smembers(keys.dlq)
    cancelled = await queue.page_tasks(TaskState.CANCELLED)
    assert [t.task_id for t in cancelled.tasks] == ["f8", "f7", "f6"]

    no_dlq = make_queue(queue_name=f"{queue.queue_name}-nodlq", enable_dlq=False)
    await no_dlq.connect()
    await no_dlq.enqueue_many(_tasks(["x0", "x1"]))
    for task in await _claim_all(no_dlq, 2):
        await no_dlq.fail_task(task.task_id, "no", retry=False)
        await asyncio.sleep(0.002)
    failed = await no_dlq.page_tasks(TaskState.FAILED)
    assert [t.task_id for t in failed.tasks] == ["x1", "x0"] and failed.total == 2


async def test_older_than_starts_a_finished_state_at_the_cutoff(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks(["c0", "c1", "c2", "c3"]))
    for task in await _claim_all(queue, 4):
        await queue.complete_task(task.task_id, {"ok": task.task_id})
    now_ms = int(time.time() * 1000)
    for age_h, task_id in ((3, "c0"), (2, "c1")):  # finished hours ago
        await raw_redis.zadd(queue.keys.completed, {task_id: now_ms - age_h * 3_600_000})

    first = await queue.page_tasks(TaskState.COMPLETED, older_than=3600, limit=1)
    assert [t.task_id for t in first.tasks] == ["c1"] and first.total is None
    rest = await queue.page_tasks(TaskState.COMPLETED, older_than=3600, cursor=first.next_cursor)
    assert [t.task_id for t in rest.tasks] == ["c0"] and rest.next_cursor is None
    everything = await queue.page_tasks(TaskState.COMPLETED)
    assert {t.task_id for t in everything.tasks[:2]} == {"c2", "c3"} and everything.total == 4
    assert await queue.list_tasks(TaskState.COMPLETED, older_than=5 * 3600) == []
    for bad in (-1, float("nan"), "1h", True):
        with pytest.raises(ValueError, match="older_than"):
            await queue.page_tasks(TaskState.PENDING, older_than=bad)  # type: ignore[arg-type]


async def test_older_than_finds_old_pending_tasks_among_new_ones(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks([f"t{i}" for i in range(300)]))
    now_ms = int(time.time() * 1000)
    old = {f"t{i}" for i in range(0, 300, 7)}
    for task_id in old:
        await raw_redis.hset(queue.keys.task(task_id), "created", now_ms - 3_600_000)
    page = await queue.page_tasks(TaskState.PENDING, older_than=600, limit=1000)
    assert {t.task_id for t in page.tasks} == old and page.total is None
    tasks = await queue.list_tasks(TaskState.PENDING, older_than=600, limit=5)
    assert [t.task_id for t in tasks] == sorted(old, key=lambda i: int(i[1:]))[:5]


async def test_seed_list_tasks_returns_whole_tasks_with_type_and_cursor(
    queue: RedisTaskQueue,
) -> None:
    await queue.enqueue_many(_tasks([f"a{i}" for i in range(5)], "a"))
    await queue.enqueue_many(_tasks([f"b{i}" for i in range(5)], "b"))
    for task in await _claim_all(queue, 4):
        await queue.fail_task(task.task_id, "broken", retry=False)
    dlq_tasks = await queue.list_tasks(state=TaskState.DEAD_LETTER)
    assert len(dlq_tasks) == 4 and all(t.error == "broken" for t in dlq_tasks)
    assert [t.task_id for t in await queue.list_tasks(task_type="b")] == [f"b{i}" for i in range(5)]
    first = await queue.page_tasks(TaskState.PENDING, limit=3)
    after = await queue.list_tasks(TaskState.PENDING, limit=100, cursor=first.next_cursor)
    assert [t.task_id for t in after] == ["b2", "b3", "b4"]


# -- paging at scale -------------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_paging_100k_pending_visits_each_once_reading_at_most_a_page_per_call(
    queue: RedisTaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"k{i:06d}" for i in range(100_000)]
    for start in range(0, len(ids), 1000):
        await queue.enqueue_many(_tasks(ids[start : start + 1000], "abcd"[start // 1000 % 4]))
    recorder = Recorder.install(monkeypatch)
    started = time.perf_counter()
    pages = await all_pages(queue, TaskState.PENDING, 1000)
    took = time.perf_counter() - started
    seen = [t.task_id for page in pages for t in page.tasks]
    assert len(seen) == len(set(seen)) == 100_000 and seen == ids  # FIFO within one priority
    assert len(pages) == 100 and {p.total for p in pages} == {100_000}
    # Each set read at most a page plus the margin a window reaches back: never a scan.
    assert max(recorder.spans) <= 1000 + 1 + 64
    assert took < 120, took
    print(f"100k pending in {len(pages)} pages of 1,000: {took:.2f} s")


async def test_5000_tasks_finishing_in_the_same_milliseconds_page_7_at_a_time(
    queue: RedisTaskQueue, raw_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.enqueue_many(_tasks([f"s{i:05d}" for i in range(5000)]))
    claimed = await _claim_all(queue, 5000)
    await queue.settle_many(Settlement(t.task_id, t.lease_token, {"ok": 1}) for t in claimed)
    expected = await entries_in(raw_redis, [queue.keys.completed], descending=True)
    assert len({score for score, _ in expected}) <= 1000  # ties: a settle call ends ~25 per ms
    recorder = Recorder.install(monkeypatch)
    pages = await all_pages(queue, TaskState.COMPLETED, 7)
    listed = [t.task_id for page in pages for t in page.tasks]
    assert listed == [member.decode() for _, member in expected]
    assert max(recorder.spans) <= 7 + 1 + 64


async def test_tasks_moving_between_pages_are_never_listed_twice_nor_skipped(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks([f"m{i:03d}" for i in range(300)]))
    listed: list[str] = []
    gone: set[str] = set()
    cursor = None
    added = 0
    while True:
        page = await queue.page_tasks(TaskState.PENDING, limit=10, cursor=cursor)
        listed.extend(t.task_id for t in page.tasks)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        await queue.claim("w", 4)  # from the head: tasks already listed
        pending = queue.keys.pending("noop")
        score = await raw_redis.zscore(pending, listed[-1])
        await queue.cancel(listed[-1])  # the cursor's own task leaves the set
        nexts = await raw_redis.zrange(pending, f"({score}", "+inf", byscore=True, offset=0, num=2)
        for later in nexts:  # tasks not listed yet leave too: they must not be listed
            await queue.cancel(later.decode())
            gone.add(later.decode())
        if added < 5:  # new tasks queue behind everything
            await queue.enqueue(f"new{added}", "noop", {})
            added += 1
    assert len(listed) == len(set(listed))
    still_pending = {m.decode() for m in await raw_redis.zrange(queue.keys.pending("noop"), 0, -1)}
    assert still_pending and still_pending <= set(listed)
    assert {f"new{i}" for i in range(5)} <= set(listed) and not gone & set(listed)


async def test_a_dead_letter_walk_survives_retries_of_the_cursor_task_inside_a_tie(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks([f"q{i:04d}" for i in range(1000)]))
    claimed = await _claim_all(queue, 1000)
    await queue.settle_many(
        Settlement(t.task_id, t.lease_token, error="dead", retry=False) for t in claimed
    )
    at_start = {m.decode() for m in await raw_redis.smembers(queue.keys.dlq)}
    listed: list[str] = []
    cursor = None
    while True:
        page = await queue.page_tasks(TaskState.DEAD_LETTER, limit=25, cursor=cursor)
        listed.extend(t.task_id for t in page.tasks)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        await queue.retry_dlq_task(listed[-1])  # its id leaves a block of equal times
    assert len(listed) == len(set(listed)) == 1000 and set(listed) == at_start
    assert await raw_redis.zcard(queue.keys.dlq_order) == await raw_redis.scard(queue.keys.dlq)


async def test_pages_merge_three_partitions_in_one_order(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    pq = make_queue(partitions=3)
    await pq.connect()
    await pq.enqueue_many(
        {"task_id": f"z{i}", "task_type": "ab"[i % 2], "payload": {}, "priority": i % 4}
        for i in range(120)
    )
    pending_sets = [k.pending(t) for k in pq.layout.parts for t in ("a", "b")]
    expected = await entries_in(raw_redis, pending_sets, descending=False)
    assert all([await raw_redis.zcard(key) for key in pending_sets])  # every partition has some
    pages = await all_pages(pq, TaskState.PENDING, 7)
    assert [t.task_id for p in pages for t in p.tasks] == [m.decode() for _, m in expected]
    claimed: list[Any] = []
    while len(claimed) < 120:  # a claim serves one partition at a time
        claimed += await pq.claim("w", 120 - len(claimed))
    await pq.settle_many(Settlement(t.task_id, t.lease_token, None) for t in claimed)
    done_sets = [k.completed for k in pq.layout.parts]
    expected = await entries_in(raw_redis, done_sets, descending=True)
    pages = await all_pages(pq, TaskState.COMPLETED, 7)
    assert [t.task_id for p in pages for t in p.tasks] == [m.decode() for _, m in expected]
    assert pages[0].total == 120


# -- type filters -----------------------------------------------------------------------


async def test_a_type_filter_reads_pending_from_its_index_and_scans_others_bounded(
    queue: RedisTaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.enqueue_many(
        {"task_id": f"t{i:04d}", "task_type": "rare" if i % 300 == 7 else "common", "payload": {}}
        for i in range(3000)
    )
    rare = [f"t{i:04d}" for i in range(3000) if i % 300 == 7]
    pending = await queue.page_tasks(TaskState.PENDING, task_type="rare", limit=4)
    assert [t.task_id for t in pending.tasks] == rare[:4] and pending.total == len(rare)
    claimed = await _claim_all(queue, 3000)
    await queue.settle_many(Settlement(t.task_id, t.lease_token, None) for t in claimed)
    whole = await queue.page_tasks(TaskState.COMPLETED, task_type="rare", limit=100)
    assert whole.total is None and whole.next_cursor is None
    assert sorted(t.task_id for t in whole.tasks) == rare
    monkeypatch.setattr(listing, "TYPE_SCAN", 500)  # a page examines at most 500 ids
    pages = await all_pages(queue, TaskState.COMPLETED, 100, task_type="rare")
    assert len(pages) >= 3000 // 500
    found = [t.task_id for p in pages for t in p.tasks]
    assert sorted(found) == rare and len(found) == len(set(found))
    assert {p.total for p in pages} == {None}


# -- bad input ------------------------------------------------------------------------


async def test_bad_limits_cursors_states_and_search_text_are_refused_before_any_write(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks(["a", "b", "c"]))
    before = await queue_keys_dump(raw_redis, queue)
    for limit in (0, -1, 1001, True, "5", 2.0):
        with pytest.raises(ValueError, match="limit must be"):
            await queue.page_tasks(TaskState.PENDING, limit=limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be"):
        await queue.list_tasks(TaskState.PENDING, limit=0)
    other_state = encode_cursor(TaskState.COMPLETED, (1.0, b"a"))
    for cursor, message in (
        ("not a cursor", "invalid cursor"),
        ("", "invalid cursor"),
        ("x" * 2000, "invalid cursor"),
        ("WyJwZW5kaW5nIl0", "invalid cursor"),  # ["pending"]
        (encode_cursor(TaskState.PENDING, (1.0, b"a")).upper(), "invalid cursor"),
        (other_state, "belongs to a listing of 'completed' tasks"),
    ):
        with pytest.raises(ValueError, match=message):
            await queue.page_tasks(TaskState.PENDING, cursor=cursor)
    with pytest.raises(ValueError, match="unknown task state"):
        await queue.page_tasks("finished")
    with pytest.raises(InvalidTaskType):
        await queue.page_tasks(TaskState.PENDING, task_type="no such type!")
    for text in ("", "x" * 201, None):
        with pytest.raises(ValueError, match="search text"):
            await queue.search_tasks(text)  # type: ignore[arg-type]
    for scan_limit in (0, 100_001, False):
        with pytest.raises(ValueError, match="scan_limit"):
            await queue.search_tasks("a", scan_limit=scan_limit)
    assert await queue_keys_dump(raw_redis, queue) == before


# -- search ------------------------------------------------------------------------------


async def test_search_finds_by_id_payload_result_and_error_in_any_case(
    queue: RedisTaskQueue,
) -> None:
    await queue.enqueue_many(
        {"task_id": f"job-{i}", "task_type": "noop", "payload": {"n": i}} for i in range(200)
    )
    await queue.enqueue("greet", "noop", {"msg": 'Hello "World"', "who": "Élodie"})
    claimed = {t.task_id: t for t in await _claim_all(queue, 201)}
    await queue.complete_task("job-3", {"answer": "Forty-Two"})
    await queue.fail_task("job-4", "KaBoom: the disk\nis full", retry=False)
    await queue.complete_task("greet", None)

    by_id = await queue.search_tasks("job-17")
    assert by_id.tasks[0].task_id == "job-17" and by_id.complete
    assert {t.task_id for t in by_id.tasks} == {"job-17", *(f"job-17{i}" for i in range(10))}
    assert by_id.scanned == 201  # every record, once
    assert [t.task_id for t in (await queue.search_tasks('hello "world"')).tasks] == ["greet"]
    assert [t.task_id for t in (await queue.search_tasks("élodie")).tasks] == ["greet"]
    assert [t.task_id for t in (await queue.search_tasks("forty-two")).tasks] == ["job-3"]
    boom = await queue.search_tasks("kaboom", state=TaskState.DEAD_LETTER)
    assert [t.task_id for t in boom.tasks] == ["job-4"] and boom.scanned == 1
    assert boom.tasks[0].error_line == "KaBoom: the disk"
    assert (await queue.search_tasks("job-5", task_type="other")).tasks == []
    assert len(claimed) == 201


async def test_search_stops_at_its_scan_limit_and_its_match_limit(queue: RedisTaskQueue) -> None:
    await queue.enqueue_many(_tasks([f"n{i}" for i in range(100)]))
    short = await queue.search_tasks("nothing matches", scan_limit=10)
    assert short.tasks == [] and short.scanned == 10 and short.complete is False
    capped = await queue.search_tasks("n", limit=5)
    assert len(capped.tasks) == 5 and capped.complete is False and capped.scanned == 5
    whole = await queue.search_tasks("n", limit=1000)
    assert len(whole.tasks) == 100 and whole.complete is True and whole.scanned == 100
    assert whole.to_dict()["tasks"][0]["task_id"] == "n0"


# -- the queue registry -------------------------------------------------------------------


async def test_queue_names_lists_every_queue_whose_client_connected(
    make_queue: QueueFactory, queue_name: str, raw_redis: Redis
) -> None:
    first = make_queue()
    second = make_queue(queue_name=f"{queue_name}-other")
    try:
        await first.connect()
        await second.connect()
        names = await first.queue_names()
        assert {queue_name, f"{queue_name}-other"} <= set(names) and names == sorted(names)
        assert await raw_redis.sismember("agentic:queues", f"{queue_name}-other")
        apart = make_queue(key_prefix="elsewhere")
        await apart.connect()
        assert await apart.queue_names() == [queue_name]
    finally:
        await raw_redis.delete("elsewhere:queues")
