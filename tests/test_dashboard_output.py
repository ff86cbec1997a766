"""The dashboard's task page shows the task's progress and the newest entries of its
output stream (escaped, secrets scrubbed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.dashboard import dashboard_settings, drop_prefix, populate, serve
from utils.config import Settings
from utils.redis_queue import RedisTaskQueue, TaskContext

pytestmark = pytest.mark.timeout(60)
KEY = "sk-proj-Zq8mXv2LrT5nWc9Hd3Kp7Yb1"


@pytest.fixture
async def config(tmp_path: Path, redis_url: str) -> AsyncIterator[Settings]:
    settings = dashboard_settings(tmp_path, redis_url)
    yield settings
    await drop_prefix(redis_url, settings.key_prefix)


async def test_the_task_page_shows_progress_and_the_output_escaped_and_scrubbed(
    config: Settings,
) -> None:
    async with RedisTaskQueue.from_settings(config) as queue:
        await queue.enqueue("o-1", "dev", {})
        (task,) = await queue.claim("w", 1, task_types=["dev"])
        ctx = TaskContext(task, "w", queue.queue_name, task.lease_token or 0, output=queue)
        await ctx.emit("Here is <script>alert(1)</script> ")
        await ctx.emit(f"and the key {KEY}\n")
        await ctx.emit("installing", kind="log")
        await ctx.progress(0.4, "running tests")
        for i in range(300):  # more than the page shows
            await ctx.emit(f"{i} ")
        await queue.enqueue("o-2", "idle", {})  # never claimed: no output
    async with serve(config) as url, httpx.AsyncClient(base_url=url, timeout=10) as site:
        doc = (await site.get("/api/queues/jobs/tasks/o-1")).json()
        assert doc["progress"] == 0.4 and doc["progress_message"] == "running tests"
        assert len(doc["output"]) == 200 and doc["output"][-1]["text"] == "299 "
        assert doc["output_text"].endswith("298 299 ")
        page = await site.get("/queues/jobs/tasks/o-1")
        assert page.status_code == 200
        assert "40% · running tests" in page.text
        assert 'id="output"' in page.text and "299 " in page.text
        quiet = await site.get("/queues/jobs/tasks/o-2")
        assert '<p class="muted" id="output">none</p>' in quiet.text
    async with RedisTaskQueue.from_settings(config) as queue:
        await queue.enqueue("o-3", "dev", {})
        (task,) = await queue.claim("w", 1, task_types=["dev"])
        ctx = TaskContext(task, "w", queue.queue_name, task.lease_token or 0, output=queue)
        await ctx.emit("Here is <script>alert(1)</script> ")
        await ctx.emit(f"and the key {KEY}\n")
        await ctx.emit("installing", kind="log")
    async with serve(config) as url, httpx.AsyncClient(base_url=url, timeout=10) as site:
        page = await site.get("/queues/jobs/tasks/o-3")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<script>alert" not in page.text
        assert KEY not in page.text and KEY[:8] not in page.text
        assert "[log] installing" in page.text
        api = (await site.get("/api/queues/jobs/tasks/o-3")).json()
        assert KEY not in str(api["output"])


async def test_the_run_page_lists_the_events_of_its_event_stream(config: Settings) -> None:
    population = await populate(config)
    async with serve(config) as url, httpx.AsyncClient(base_url=url, timeout=10) as site:
        events = (await site.get(f"/api/runs/{population.run_id}/events")).json()
        assert events[0]["kind"] == "started" and events[-1]["kind"] == "ended"
        assert all(e["run_id"] == population.run_id and e["at"] > 0 for e in events)
        assert any(e["kind"] == "finished" and e["stage"] == "deploy" for e in events)
        page = (await site.get(f"/runs/{population.run_id}")).text
        assert page.count('<tr class="event-') == len(events)
        assert '<tr class="event-ended">' in page
        none = (await site.get("/api/runs/no-such-run/events")).json()
        assert none == []
