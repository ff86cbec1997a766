"""`agentic queue pause|resume`, `agentic schedule add|list|remove`, `agentic info`'s paused
state and schedules, and the dashboard's pause and resume: real processes and a real HTTP
server against real Redis."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.support.dashboard import dashboard_settings, drop_prefix, populate, serve
from tests.support.processes import ROOT, agentic_argv, agentic_env
from utils.config import Settings
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def agentic(redis_url: str, queue_name: str) -> Iterator[Any]:
    def call(*args: str, url: str = redis_url) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            agentic_argv(*args),
            cwd=ROOT,
            env=agentic_env(url, queue_name),
            capture_output=True,
            text=True,
            timeout=30,
        )

    yield call


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_queue_pause_and_resume_from_the_command_line(
    agentic: Any, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    paused = _json(agentic("queue", "pause", "--json"))
    assert paused["target"] == "*" and paused["changed"] is True and "*" in paused["paused"]
    assert await raw_redis.hexists(queue.keys.paused, "*")
    again = agentic("queue", "pause")
    assert again.returncode == 0 and "already paused" in again.stdout
    typed = _json(agentic("queue", "pause", "dev", "--json"))
    assert set(typed["paused"]) == {"*", "dev"}
    info = _json(agentic("info", "--json"))
    assert set(info["paused"]) == {"*", "dev"}
    text = agentic("info")
    assert "PAUSED: the whole queue" in text.stdout and "PAUSED: task type dev" in text.stdout
    resumed = _json(agentic("queue", "resume", "--json"))
    assert resumed["changed"] is True and set(resumed["paused"]) == {"dev"}
    assert _json(agentic("queue", "resume", "dev", "--json"))["paused"] == {}
    assert await raw_redis.exists(queue.keys.paused) == 0
    assert agentic("queue", "pause", "bad{type}").returncode == 2
    assert agentic("queue", "pause", url="redis://127.0.0.1:1").returncode == 69


async def test_schedule_add_list_and_remove_from_the_command_line(
    agentic: Any, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    added = _json(
        agentic(
            "schedule", "add", "nightly", "report", "--cron", "0 2 * * *",
            "--timezone", "Europe/Paris", "--payload", '{"k": 1}', "--priority", "high",
            "--catch-up", "3", "--json",
        )
    )  # fmt: skip
    assert added["cron"] == "0 2 * * *" and added["catch_up"] == 3 and added["priority"] == 2
    assert added["next_due"] is not None
    assert (
        _json(agentic("schedule", "add", "often", "dev", "--every", "30", "--json"))["every"] == 30
    )
    assert await raw_redis.hlen(queue.keys.schedules) == 2
    listed = _json(agentic("schedule", "list", "--json"))
    assert [s["name"] for s in listed] == ["nightly", "often"]
    assert "every 30.0 s" in agentic("schedule", "list").stdout
    assert [s["name"] for s in _json(agentic("info", "--json"))["schedules"]] == [
        "nightly",
        "often",
    ]
    assert _json(agentic("schedule", "remove", "nightly", "--json")) == {
        "name": "nightly",
        "removed": True,
    }
    assert agentic("schedule", "remove", "nightly").returncode == 1
    assert await raw_redis.hkeys(queue.keys.schedules) == [b"often"]
    for bad in (
        ("schedule", "add", "x", "dev"),  # neither --cron nor --every
        ("schedule", "add", "x", "dev", "--cron", "61 * * * *"),
        ("schedule", "add", "x", "dev", "--every", "5", "--timezone", "Nowhere/Land"),
        ("schedule", "add", "x", "dev", "--every", "5", "--catch-up", "0"),
    ):
        out = agentic(*bad)
        assert out.returncode == 2, (bad, out.stderr)
    assert await raw_redis.hkeys(queue.keys.schedules) == [b"often"]


# -- the dashboard ------------------------------------------------------------------------------


@pytest.fixture
async def config(tmp_path: Path, redis_url: str) -> AsyncIterator[Settings]:
    settings = dashboard_settings(tmp_path, redis_url)
    yield settings
    await drop_prefix(redis_url, settings.key_prefix)


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def test_the_dashboard_pauses_and_resumes_a_queue_and_a_type(config: Settings) -> None:
    await populate(config)
    queue = RedisTaskQueue.from_settings(config, queue_name="jobs")
    async with serve(config) as url, httpx.AsyncClient(base_url=url, timeout=10) as site, queue:
        page = await site.get("/queues/jobs")
        assert "Pause" in page.text and "paused since" not in page.text
        token = _csrf(page)
        done = await site.post("/queues/jobs/pause", data={"csrf": token})
        assert done.status_code == 303 and "queue%20paused" in done.headers["location"]
        assert set(await queue.get_paused()) == {"*"}
        assert "paused since" in (await site.get("/queues/jobs")).text
        assert (await site.get("/api/overview")).json()["queues"][0]["paused"] == ["*"]
        assert "paused</span>" in (await site.get("/")).text
        api = await site.post("/api/queues/jobs/pause?type=dev", headers={"X-CSRF-Token": token})
        assert api.status_code == 200 and api.json()["ok"]
        info = (await site.get("/api/queues/jobs")).json()
        assert set(info["paused"]) == {"*", "dev"}
        await site.post("/api/queues/jobs/resume", headers={"X-CSRF-Token": token})
        await site.post("/queues/jobs/resume", data={"csrf": token, "type": "dev"})
        assert await queue.get_paused() == {}
        refused = await site.post("/queues/jobs/pause", data={})
        assert refused.status_code == 403
        assert await queue.get_paused() == {}
