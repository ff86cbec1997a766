"""examples/wsgi_enqueue: the WSGI app (a real wsgiref server process) enqueues on POST
with SyncRedisTaskQueue, a real `agentic worker` process runs the tasks, and the app
reads and waits for their results."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from redis.asyncio import Redis

from tests.support.processes import SpawnedWorkers, agentic_argv, agentic_env
from utils.redis_queue.keys import QueueLayout, queue_index

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def spawned() -> Iterator[SpawnedWorkers]:
    procs = SpawnedWorkers()
    try:
        yield procs
    finally:
        procs.cleanup()


def _start_app(procs: SpawnedWorkers, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    argv = [sys.executable, "-m", "examples.wsgi_enqueue.app", "--port", "0"]
    app = procs.spawn(argv, env, stdout=subprocess.PIPE)
    assert app.stdout is not None
    line = app.stdout.readline().decode()  # printed once the socket listens
    assert line.startswith("listening on "), line
    return app, line.split()[-1]


async def test_the_wsgi_example_enqueues_on_post_and_serves_results(
    spawned: SpawnedWorkers, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    env = agentic_env(redis_url, queue_name)
    app, base = await asyncio.to_thread(_start_app, spawned, env)
    keys = QueueLayout("agentic", queue_name, 1).wide
    try:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            posts = [
                http.post(
                    "/tasks",
                    json={
                        "task_id": f"w{i}",
                        "task_type": "word_count",
                        "payload": {"text": "a b " * i},
                    },
                )
                for i in range(100)  # at once: the app's threads share one queue object
            ]
            answers = await asyncio.gather(*posts)
            assert {r.status_code for r in answers} == {202}
            assert answers[3].json() == {"task_id": "w3", "state": "pending"}
            assert await raw_redis.zcard(keys.pending("word_count")) == 100

            waiting = http.get("/tasks/w7/result", params={"timeout": 15})
            worker = agentic_argv(
                "worker", "--app", "examples.wsgi_enqueue.tasks:handlers", "--burst"
            )
            spawned.spawn(worker, env)
            reply = await waiting
            assert reply.status_code == 200 and reply.json() == {
                "result": {"words": 14, "chars": 28}
            }
            results = await asyncio.gather(
                *(http.get(f"/tasks/w{i}/result", params={"timeout": 15}) for i in range(100))
            )
            assert [r.json()["result"]["words"] for r in results] == [2 * i for i in range(100)]
            shown = (await http.get("/tasks/w2")).json()
            assert shown["task_id"] == "w2" and shown["result"] == {"words": 4, "chars": 8}
            for i in range(100):
                assert await raw_redis.hget(keys.task(f"w{i}"), "state") == b"completed"

            bad = await http.post("/tasks", json={"task_type": "word_count", "payload": {}})
            assert bad.status_code == 202  # accepted; the handler fails it for good
            failed = await http.get(f"/tasks/{bad.json()['task_id']}/result", params={"timeout": 0})
            assert failed.status_code in (409, 504)
            assert (
                await http.post("/tasks", json={"task_type": "", "payload": {}})
            ).status_code == 400
            assert (await http.post("/tasks", content=b"not json")).status_code == 400
            assert (await http.get("/tasks/nope")).status_code == 404
            assert (await http.get("/tasks/nope/result")).status_code == 404
    finally:
        spawned.cleanup()
        assert app.stdout is not None
        app.stdout.close()
        async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}*}}:*", count=1000):
            await raw_redis.delete(key)
        await raw_redis.srem(queue_index("agentic"), queue_name)
