"""A dashboard served over real HTTP by uvicorn in the test's event loop, in front of a
queue holding tasks in every state and a finished pipeline run, under a key prefix of
the test's own (so the dashboard sees only this test's queues)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from redis.asyncio import Redis

from agents import build_registry
from pipeline import DistributedPipelineManager
from pipeline.dashboard import DashboardOptions, create_app
from tests.support.pipeline import settings as pipeline_settings
from tests.support.pipeline import spec
from utils.config import Settings
from utils.redis_queue import RedisTaskQueue

SCRIPT_PAYLOAD = {"note": "<script>window.__pwned = 1</script>", "api_key": "sk-secret-1234"}


@dataclass
class Population:
    """What `populate` left in the queue: task ids by state, and the run's id."""

    queue: str
    ids: dict[str, list[str]] = field(default_factory=dict)
    run_id: str = ""
    hostile_id: str = ""


def dashboard_settings(tmp_path: Path, redis_url: str) -> Settings:
    prefix = f"d{uuid.uuid4().hex[:10]}"
    return pipeline_settings(
        tmp_path,
        redis_url=redis_url,
        key_prefix=prefix,
        queue_name="jobs",
        pipeline={"queue_name": "pipe"},
    )


async def populate(config: Settings, *, with_run: bool = True) -> Population:
    """Tasks in every state on queue `jobs` (a hostile payload among them) and, with
    `with_run`, one pipeline run to completion on queue `pipe`."""
    out = Population(queue=config.queue_name)
    queue = RedisTaskQueue.from_settings(config)
    async with queue:
        ids = out.ids
        ids["pending"] = [
            (await queue.enqueue(f"p-{i}", "email", {"n": i})).task_id for i in range(3)
        ]
        out.hostile_id = (await queue.enqueue("x-1", "email", SCRIPT_PAYLOAD)).task_id
        ids["pending"].append(out.hostile_id)
        ids["delayed"] = [(await queue.enqueue("d-1", "email", {}, delay=600)).task_id]
        for state, count in (("completed", 2), ("dead_letter", 2), ("processing", 1)):
            ids[state] = []
            for i in range(count):
                task_id = f"{state[:4]}-{i}"
                await queue.enqueue(task_id, "report", {"state": state})
                ids[state].append(task_id)
        claimed = await queue.claim("w-test", 10, task_types=["report"])
        by_id = {t.task_id: t for t in claimed}
        for task_id in ids["completed"]:
            await queue.complete_task(task_id, {"ok": True}, lease_token=by_id[task_id].lease_token)
        for task_id in ids["dead_letter"]:
            await queue.fail_task(
                task_id,
                "ValueError: boom\nTraceback (most recent call last): ...",
                retry=False,
                lease_token=by_id[task_id].lease_token,
            )
        ids["cancelled"] = [(await queue.enqueue("c-1", "email", {})).task_id]
        await queue.cancel("c-1")
    if with_run:
        manager = DistributedPipelineManager(settings=config, handlers=build_registry(config))
        async with manager:
            result = await manager.run(spec("replay.json"))
        out.run_id = result.run_id
    return out


@asynccontextmanager
async def serve(config: Settings, options: DashboardOptions | None = None) -> AsyncIterator[str]:
    """The dashboard on a free loopback port; yields its base URL."""
    app = create_app(config, options or DashboardOptions(refresh_seconds=1.0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # NODELAY
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)  # uvicorn has no started event to await
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def drop_prefix(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()
