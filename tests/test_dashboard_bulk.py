"""The dashboard's delete, purge-by-state and cancel-by-type over real HTTP against a
real Redis: each deletes or cancels exactly what it says (checked in Redis), the bulk
ones answer 409 with the count until confirm=yes, a running task needs force, and CSRF
and --read-only refuse them all."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from pipeline.dashboard import DashboardOptions
from tests.support.dashboard import Population, dashboard_settings, drop_prefix, populate, serve
from utils.config import Settings
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(120)
ORDERED = ("delayed", "completed", "failed", "cancelled", "dlq")  # sorted sets / sets by state


@pytest.fixture
async def config(tmp_path: Path, redis_url: str) -> AsyncIterator[Settings]:
    settings = dashboard_settings(tmp_path, redis_url)
    yield settings
    await drop_prefix(redis_url, settings.key_prefix)


@pytest.fixture
async def population(config: Settings) -> Population:
    return await populate(config, with_run=False)


@pytest.fixture
async def site(config: Settings, population: Population) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(config) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture
async def queue(config: Settings) -> AsyncIterator[RedisTaskQueue]:
    async with RedisTaskQueue.from_settings(config) as q:
        yield q


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found, "every page carries its CSRF token"
    return found.group(1)


async def stored(raw: Redis, queue: RedisTaskQueue, task_id: str) -> bool:
    """Whether anything of the task is left in Redis: its record, its place in any
    state's set, its output stream."""
    keys = queue.keys_for(task_id)
    if await raw.exists(keys.task(task_id), keys.output(task_id)):
        return True
    for name in ORDERED:
        key = getattr(keys, name)
        if await raw.type(key) == b"set":
            if await raw.sismember(key, task_id):
                return True
        elif await raw.zscore(key, task_id) is not None:
            return True
    return await raw.zscore(keys.processing, task_id) is not None


async def test_delete_removes_the_task_and_every_key_of_it(
    site: httpx.AsyncClient, population: Population, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    done, waiting = population.ids["completed"][0], population.ids["pending"][0]
    page = await site.get(f"/queues/jobs/tasks/{done}")
    assert f"/tasks/{done}/delete" in page.text and "Delete" in page.text
    token = csrf_of(page)
    gone = await site.post(f"/queues/jobs/tasks/{done}/delete", data={"csrf": token})
    assert gone.status_code == 303 and gone.headers["location"].startswith("/queues/jobs?msg=")
    assert "deleted" in gone.headers["location"]
    api = await site.post(
        f"/api/queues/jobs/tasks/{waiting}/delete", headers={"X-CSRF-Token": token}
    )
    assert api.status_code == 200 and api.json()["ok"] and "was pending" in api.json()["message"]
    for task_id in (done, waiting):
        assert not await stored(raw_redis, queue, task_id)
        assert (await site.get(f"/api/queues/jobs/tasks/{task_id}")).status_code == 404
    assert not await raw_redis.zscore(queue.keys.pending("email"), waiting)
    sizes = await queue.get_queue_size()
    assert sizes["completed"] == 1 and sizes["pending"] == 3, "only those two went"
    again = await site.post(
        f"/api/queues/jobs/tasks/{done}/delete", headers={"X-CSRF-Token": token}
    )
    assert again.status_code == 404


async def test_a_running_task_is_deleted_only_with_force(
    site: httpx.AsyncClient, population: Population, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    running = population.ids["processing"][0]
    page = await site.get(f"/queues/jobs/tasks/{running}")
    assert "delete?force=yes" in page.text and "is running" in page.text
    token = csrf_of(page)
    path = f"/api/queues/jobs/tasks/{running}/delete"
    refused = await site.post(path, headers={"X-CSRF-Token": token})
    assert refused.status_code == 409 and "force=yes" in refused.json()["error"]
    html = await site.post(f"/queues/jobs/tasks/{running}/delete", data={"csrf": token})
    assert html.status_code == 409 and "force=yes" in html.text
    assert await raw_redis.zscore(queue.keys_for(running).processing, running) is not None
    task = await queue.get_task(running)
    assert task is not None and task.state == "processing", "refused means untouched"
    forced = await site.post(
        f"/queues/jobs/tasks/{running}/delete", data={"csrf": token, "force": "yes"}
    )
    assert forced.status_code == 303 and "was%20processing" in forced.headers["location"]
    assert not await stored(raw_redis, queue, running)
    assert (await queue.get_queue_size())["processing"] == 0


async def test_purge_asks_with_the_count_then_deletes_that_state(
    site: httpx.AsyncClient, population: Population, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    page = await site.get("/queues/jobs")
    assert 'action="/queues/jobs/purge"' in page.text and 'value="dead_letter"' in page.text
    token = csrf_of(page)
    asked = await site.post("/queues/jobs/purge", data={"csrf": token, "state": "pending"})
    assert asked.status_code == 200 and "Purge 4 pending task(s) of jobs?" in asked.text
    assert 'name="state" value="pending"' in asked.text, "the confirming POST repeats it"
    api_ask = await site.post(
        "/api/queues/jobs/purge?state=pending", headers={"X-CSRF-Token": token}
    )
    assert api_ask.status_code == 409 and api_ask.json()["count"] == 4
    assert (await queue.get_queue_size())["pending"] == 4, "nothing purged before confirming"
    done = await site.post(
        "/queues/jobs/purge", data={"csrf": token, "state": "pending", "confirm": "yes"}
    )
    assert done.status_code == 303 and "purged%204%20pending" in done.headers["location"]
    for task_id in population.ids["pending"]:
        assert not await stored(raw_redis, queue, task_id)
    assert await raw_redis.zcard(queue.keys.pending("email")) == 0
    sizes = await queue.get_queue_size()
    assert sizes == {**sizes, "pending": 0, "delayed": 1, "completed": 2, "dlq": 2}
    assert sizes["processing"] == 1 and sizes["cancelled"] == 1

    # Every other state, through the /api/ twin: the count it asked with is what went.
    for state, key in (
        ("delayed", "delayed"),
        ("completed", "completed"),
        ("cancelled", "cancelled"),
        ("dead_letter", "dlq"),
        ("failed", "failed"),
    ):
        path = f"/api/queues/jobs/purge?state={state}"
        count = (await site.post(path, headers={"X-CSRF-Token": token})).json()["count"]
        assert count == len(population.ids.get(state, []))
        purged = await site.post(f"{path}&confirm=yes", headers={"X-CSRF-Token": token})
        assert purged.status_code == 200 and f"purged {count} {state}" in purged.json()["message"]
        assert (await queue.get_queue_size())[key] == 0
        for task_id in population.ids.get(state, []):
            assert not await stored(raw_redis, queue, task_id)
    running = population.ids["processing"][0]
    task = await queue.get_task(running)
    assert task is not None and task.state == "processing", "a purge never takes a running task"


async def test_purge_of_an_unknown_or_running_state_is_a_bad_request(
    site: httpx.AsyncClient, population: Population, queue: RedisTaskQueue
) -> None:
    token = csrf_of(await site.get("/queues/jobs"))
    for query in ("?state=processing", "?state=bogus", ""):
        answer = await site.post(
            f"/api/queues/jobs/purge{query}{'&' if query else '?'}confirm=yes",
            headers={"X-CSRF-Token": token},
        )
        assert answer.status_code == 400, query
    assert (await queue.get_queue_size())["processing"] == 1


async def test_cancel_by_type_asks_with_the_count_then_cancels_queued_ones(
    site: httpx.AsyncClient, population: Population, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    page = await site.get("/queues/jobs")
    assert 'action="/queues/jobs/cancel-type"' in page.text
    token = csrf_of(page)
    asked = await site.post("/queues/jobs/cancel-type", data={"csrf": token, "type": "email"})
    assert asked.status_code == 200 and "Cancel 5 queued email task(s) of jobs?" in asked.text
    assert "4 pending and 1 delayed" in asked.text and 'name="type" value="email"' in asked.text
    api_ask = await site.post(
        "/api/queues/jobs/cancel-type?type=email", headers={"X-CSRF-Token": token}
    )
    assert api_ask.status_code == 409 and api_ask.json()["count"] == 5
    assert (await queue.get_queue_size())["pending"] == 4, "nothing cancelled before confirming"
    done = await site.post(
        "/queues/jobs/cancel-type", data={"csrf": token, "type": "email", "confirm": "yes"}
    )
    assert done.status_code == 303 and "cancelled%205%20queued%20email" in done.headers["location"]
    for task_id in population.ids["pending"] + population.ids["delayed"]:
        task = await queue.get_task(task_id)
        assert task is not None and task.state == "cancelled"
        assert await raw_redis.zscore(queue.keys.cancelled, task_id) is not None
    assert await raw_redis.zcard(queue.keys.pending("email")) == 0
    assert await raw_redis.zcard(queue.keys.delayed) == 0
    none_left = await site.post(
        "/api/queues/jobs/cancel-type?type=report", headers={"X-CSRF-Token": token}
    )
    assert none_left.json()["count"] == 0, "the running report task is not counted"
    assert (await queue.get_queue_size())["processing"] == 1


async def test_bulk_actions_at_scale_on_a_partitioned_queue(
    tmp_path: Path, redis_url: str, raw_redis: Redis
) -> None:
    """3,000 pending and 1,200 delayed tasks of one type over 4 partitions: more than a
    script batch (1,000) per state, and more than one page of the delayed count."""
    config = dashboard_settings(tmp_path, redis_url).model_copy(update={"partitions": 4})
    try:
        async with RedisTaskQueue.from_settings(config) as queue:
            await queue.enqueue_many(
                [{"task_id": f"b-{i}", "task_type": "bulk", "payload": {}} for i in range(3000)]
            )
            await queue.enqueue_many(
                [
                    {"task_id": f"l-{i}", "task_type": "bulk", "payload": {}, "delay": 600}
                    for i in range(1200)
                ]
            )
            await queue.enqueue_many(
                [{"task_id": f"o-{i}", "task_type": "other", "payload": {}} for i in range(10)]
            )
            async with serve(config) as url, httpx.AsyncClient(base_url=url, timeout=60) as site:
                token = csrf_of(await site.get("/queues/jobs"))
                headers = {"X-CSRF-Token": token}
                ask = await site.post("/api/queues/jobs/cancel-type?type=bulk", headers=headers)
                assert ask.status_code == 409 and ask.json()["count"] == 4200
                done = await site.post(
                    "/api/queues/jobs/cancel-type?type=bulk&confirm=yes", headers=headers
                )
                assert "cancelled 4200" in done.json()["message"]
                sizes = await queue.get_queue_size()
                assert sizes["cancelled"] == 4200 and sizes["pending"] == 10
                assert sizes["delayed"] == 0
                ask = await site.post("/api/queues/jobs/purge?state=cancelled", headers=headers)
                assert ask.json()["count"] == 4200
                done = await site.post(
                    "/api/queues/jobs/purge?state=cancelled&confirm=yes", headers=headers
                )
                assert "purged 4200 cancelled" in done.json()["message"]
                assert (await queue.get_queue_size())["cancelled"] == 0
                records = [key async for key in raw_redis.scan_iter(match=f"{config.key_prefix}:*")]
                left = [k for k in records if re.search(rb":task:(b|l)-\d+$", k)]
                assert left == [], "every record of a purged task is gone"
                assert (await queue.get_queue_size())["pending"] == 10
    finally:
        await drop_prefix(redis_url, config.key_prefix)


async def test_new_actions_without_the_csrf_token_are_refused(
    site: httpx.AsyncClient, population: Population, queue: RedisTaskQueue
) -> None:
    await site.get("/")  # the browser has its CSRF cookie
    done = population.ids["completed"][0]
    paths = [
        (f"/queues/jobs/tasks/{done}/delete", {}),
        ("/queues/jobs/purge", {"state": "pending"}),
        ("/queues/jobs/cancel-type", {"type": "email"}),
    ]
    for path, fields in paths:
        for extra in ({}, {"csrf": "forged"}, {"confirm": "yes"}):
            refused = await site.post(path, data={**fields, **extra})
            assert refused.status_code == 403, (path, extra)
            api = await site.post(f"/api{path}", data={**fields, **extra})
            assert api.status_code == 403 and "CSRF" in api.json()["error"]
        cross = await site.post(
            path,
            data={**fields, "csrf": site.cookies["agentic_csrf"], "confirm": "yes"},
            headers={"Origin": "http://evil.example"},
        )
        assert cross.status_code == 403, path
    sizes = await queue.get_queue_size()
    assert sizes["pending"] == 4 and sizes["completed"] == 2 and sizes["delayed"] == 1
    task = await queue.get_task(done)
    assert task is not None and task.state == "completed"


async def test_read_only_hides_and_refuses_the_new_actions(
    config: Settings, population: Population, queue: RedisTaskQueue
) -> None:
    options = DashboardOptions(read_only=True)
    async with serve(config, options) as url, httpx.AsyncClient(base_url=url) as client:
        done = population.ids["completed"][0]
        page = await client.get(f"/queues/jobs/tasks/{done}")
        assert "/delete" not in page.text
        queue_page = (await client.get("/queues/jobs")).text
        assert "/purge" not in queue_page and "cancel-type" not in queue_page
        token = csrf_of(page)
        for path, fields in (
            (f"/queues/jobs/tasks/{done}/delete", {"force": "yes"}),
            ("/queues/jobs/purge", {"state": "pending"}),
            ("/queues/jobs/cancel-type", {"type": "email"}),
        ):
            for confirm in ({}, {"confirm": "yes"}):
                refused = await client.post(path, data={"csrf": token, **fields, **confirm})
                assert refused.status_code == 403 and "read-only" in refused.text
                api = await client.post(
                    f"/api{path}", data={**fields, **confirm}, headers={"X-CSRF-Token": token}
                )
                assert api.status_code == 403 and "read-only" in api.json()["error"]
    sizes = await queue.get_queue_size()
    assert sizes["pending"] == 4 and sizes["completed"] == 2 and sizes["delayed"] == 1
    assert await queue.get_task(done) is not None
