"""`agentic queue purge`, `agentic task delete`, `agentic task cancel --type` and the
enqueue windows as a user runs them: real processes, real Redis, a real terminal (pty)
for the confirmation."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.processes import ROOT, agentic_argv, agentic_env
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def agentic(redis_url: str, queue_name: str) -> Iterator[Any]:
    def call(*args: str, answer: str | None = None, url: str = redis_url) -> Any:
        env = agentic_env(url, queue_name)
        if answer is None:
            return subprocess.run(
                agentic_argv(*args),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        master, slave = os.openpty()  # stdin is a terminal: the command asks
        try:
            os.write(master, answer.encode())
            return subprocess.run(
                agentic_argv(*args),
                cwd=ROOT,
                env=env,
                stdin=slave,
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            os.close(master)
            os.close(slave)

    yield call


async def _fill(queue: RedisTaskQueue, n: int, task_type: str = "dev") -> None:
    await queue.enqueue_many(
        {"task_id": f"{task_type}{i}", "task_type": task_type, "payload": {}} for i in range(n)
    )


async def test_purge_refuses_without_yes_when_not_a_terminal(
    agentic: Any, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await _fill(queue, 5)
    out = agentic("queue", "purge", "--state", "pending")
    assert out.returncode == 2 and "--yes" in out.stderr
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 5


async def test_purge_with_yes_prints_the_count_as_json(
    agentic: Any, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await _fill(queue, 2_500)
    out = agentic("queue", "purge", "--state", "pending", "--yes", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"state": "pending", "purged": 2_500}
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 0
    assert await raw_redis.exists(queue.keys.task("dev7")) == 0
    plain = agentic("queue", "purge", "--state", "dlq", "--yes")
    assert plain.returncode == 0 and plain.stdout.strip() == "purged 0 dlq task(s)"


async def test_purge_asks_on_a_terminal(
    agentic: Any, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await _fill(queue, 3)
    no = agentic("queue", "purge", "--state", "pending", answer="n\n")
    assert no.returncode == 1 and "Delete every pending task" in no.stdout
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 3
    yes = agentic("queue", "purge", "--state", "pending", answer="y\n")
    assert yes.returncode == 0, yes.stderr
    assert "purged 3 pending task(s)" in yes.stdout
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 0


async def test_task_delete_and_its_refusals(
    agentic: Any, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await _fill(queue, 2)
    out = agentic("task", "delete", "dev0", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"task_id": "dev0", "was": "pending"}
    assert await raw_redis.exists(queue.keys.task("dev0")) == 0
    assert agentic("task", "delete", "dev0").returncode == 1  # no such task
    assert await queue.dequeue("w", timeout=1) is not None  # dev1 runs
    running = agentic("task", "delete", "dev1")
    assert running.returncode == 1 and "--force" in running.stderr
    forced = agentic("task", "delete", "dev1", "--force")
    assert forced.returncode == 0 and forced.stdout.strip() == "deleted dev1 (was processing)"
    assert await raw_redis.zcard(queue.keys.processing) == 0


async def test_task_cancel_by_type(agentic: Any, queue: RedisTaskQueue, raw_redis: Redis) -> None:
    await _fill(queue, 1_200, "qa")
    await _fill(queue, 10, "dev")
    assert agentic("task", "cancel", "qa0", "--type", "qa").returncode == 2
    assert agentic("task", "cancel", "--type", "qa").returncode == 2  # not a terminal
    out = agentic("task", "cancel", "--type", "qa", "--yes", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"task_type": "qa", "cancelled": 1_200}
    assert await raw_redis.zcard(queue.keys.cancelled) == 1_200
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 10
    one = agentic("task", "cancel", "dev0", "--json")
    assert json.loads(one.stdout) == {"task_id": "dev0", "state": "cancelled"}


async def test_enqueue_unique_for_prints_the_standing_task(
    agentic: Any, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    first = agentic("enqueue", "mail", "--payload", '{"to":"x"}', "--unique-for", "60")
    again = agentic("enqueue", "mail", "--payload", '{"to":"x"}', "--unique-for", "60")
    assert first.returncode == again.returncode == 0, again.stderr
    assert first.stdout == again.stdout
    held = agentic("enqueue", "idx", "--debounce", "60", "--unique-key", "doc", "--json")
    last = agentic(
        "enqueue",
        "idx",
        "--payload",
        '{"v":2}',
        "--debounce",
        "60",
        "--unique-key",
        "doc",
        "--json",
    )
    assert json.loads(held.stdout)["task_id"] == json.loads(last.stdout)["task_id"]
    assert json.loads(last.stdout)["payload"] == {"v": 2}
    bad = agentic("enqueue", "idx", "--debounce", "1", "--delay", "1")
    assert bad.returncode == 2


def test_purge_exits_69_when_redis_is_unreachable(agentic: Any) -> None:
    out = agentic("queue", "purge", "--state", "completed", "--yes", url="redis://127.0.0.1:1")
    assert out.returncode == 69
