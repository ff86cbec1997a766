"""`agentic pipeline run --follow`: the subtasks' output, read from their output streams,
printed as it arrives next to the progress lines."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pipeline.cli.follow import OutputFollower
from pipeline.runs import RunEvent, Stage
from tests.support.pipeline import EXAMPLE
from tests.support.processes import agentic_argv, agentic_env
from utils.redis_queue import HandlerRegistry, RedisTaskQueue, TaskContext, Worker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
async def _clean_queue(raw_redis: Redis, queue_name: str) -> AsyncIterator[None]:
    yield
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


def _agentic(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agentic_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=100
    )


async def test_run_follow_prints_each_subtasks_model_output(
    tmp_path: Path, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    env = agentic_env(redis_url, queue_name)
    done = _agentic(
        "pipeline", "run", str(EXAMPLE / "spec.json"), "--follow", "--workers", "yes",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_each_reply_printed(done.stdout)
    # The streams stay in Redis (with their TTL) for `agentic task tail` after the run.
    streams = [k async for k in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:out:*")]
    assert len(streams) >= 3  # dev calc, dev textstats, fix-1
    for key in streams:
        assert await raw_redis.ttl(key) > 0


def test_local_run_follow_prints_the_same_output_from_its_events(tmp_path: Path) -> None:
    done = _agentic(
        "pipeline", "run", str(EXAMPLE / "spec.json"), "--local", "--follow",
        env=dict(os.environ), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_each_reply_printed(done.stdout)


async def test_following_hundreds_of_subtasks_loses_nothing_and_takes_no_run_connection(
    make_queue: Callable[..., RedisTaskQueue], capsys: pytest.CaptureFixture[str]
) -> None:
    """300 subtasks followed at once: every line of each is printed, under its label, by
    at most 8 readers on connections of their own (the run's queue keeps its own)."""
    queue = make_queue(max_blocking_connections=2)
    await queue.connect()

    async def talk(ctx: TaskContext) -> None:
        for line in range(3):
            await ctx.emit(f"{ctx.task_id} line {line}\n")

    follower = OutputFollower(queue, max_readers=8)
    ids = [f"w{i}" for i in range(300)]
    for task_id in ids:
        await queue.enqueue(task_id, "dev", {})
        follower(RunEvent("r", "submitted", Stage.DEV, task_id, "", {"task_id": task_id}))
    await Worker(queue, HandlerRegistry({"dev": talk}), concurrency=50, burst=True).run()
    await follower.aclose(grace=60)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 900
    for task_id in ids:
        mine = [line for line in lines if line.startswith(f"[dev:{task_id}] ")]
        assert mine == [f"[dev:{task_id}] {task_id} line {n}" for n in range(3)]
    assert follower.queue is not queue and follower.queue.max_blocking_connections == 8


def _assert_each_reply_printed(stdout: str) -> None:
    """Every dev and fix reply of the example, line by line under its label, and QA's
    unittest output in its log lines: the failing round, then the passing one."""
    replies = json.loads((EXAMPLE / "replay.json").read_text())["replies"]
    lines = stdout.splitlines()
    for key, reply in replies.items():
        stage, subtask = key.split(":", 1)
        if f"{stage}:{subtask}" == "fix:fix-2":
            continue  # the example's run passes after one fix round
        printed = [line.split("] ", 1)[1] for line in lines if line.startswith(f"[{key}] ")]
        expected = reply["content"].rstrip("\n").split("\n")
        if key.startswith(("dev:", "fix:")):
            assert printed == expected, key
    qa_lines = [line for line in lines if line.startswith("[qa:qa-")]
    assert any("FAILED (failures=1)" in line for line in qa_lines if line.startswith("[qa:qa-0]"))
    assert any(line.endswith("] OK") for line in qa_lines if line.startswith("[qa:qa-1]"))
    assert " succeeded in " in stdout
