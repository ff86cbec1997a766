"""`agentic task list|search` and `agentic dlq list` as a user runs them: real processes,
real Redis; --json prints exactly the engine's to_dict()."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import ROOT, agentic_argv, agentic_env
from utils.redis_queue import RedisTaskQueue, TaskState

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def agentic(redis_url: str, queue_name: str) -> Iterator[Any]:
    def call(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            agentic_argv(*args),
            cwd=ROOT,
            env=agentic_env(redis_url, queue_name, **env),
            capture_output=True,
            text=True,
            timeout=30,
        )

    yield call


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _same(value: Any) -> Any:
    """`value` as it reads back from JSON."""
    return json.loads(json.dumps(value))


async def _dead_letter(queue: RedisTaskQueue, count: int) -> None:
    await queue.enqueue_many(
        {"task_id": f"d{i}", "task_type": "dev" if i % 2 else "qa", "payload": {}}
        for i in range(count)
    )
    for _ in range(count):
        task = await queue.dequeue("w", timeout=1)
        assert task is not None
        await queue.fail_task(task.task_id, f"broke {task.task_id}\ntraceback", retry=False)
        await asyncio.sleep(0.002)  # distinct dead-letter times: a known order


async def test_task_list_json_is_the_page_and_its_cursor_continues(
    agentic: Any, queue: RedisTaskQueue
) -> None:
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {"i": i}} for i in range(5)
    )
    first = _json(agentic("task", "list", "--state", "pending", "--limit", "3", "--json"))
    expected = await queue.page_tasks(TaskState.PENDING, limit=3)
    assert first == _same(expected.to_dict())
    cursor = first["next_cursor"]
    rest = _json(agentic("task", "list", "--limit", "3", "--cursor", cursor, "--json"))
    assert [t["task_id"] for t in rest["tasks"]] == ["t3", "t4"] and rest["next_cursor"] is None
    table = agentic("task", "list", "--limit", "3", "--type", "dev")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "PRIORITY", "STATE", "ATTEMPTS", "AT", "ERROR"]
    assert [line.split()[:4] for line in lines[1:4]] == [
        [f"t{i}", "dev", "normal", "pending"] for i in range(3)
    ]
    assert "3 of 5 pending task(s)" in table.stdout
    assert f"--cursor {first['next_cursor']}" in table.stdout
    by_env = _json(agentic("task", "list", "--json", AGENTIC_TASK_LIST_STATE="completed"))
    assert by_env["state"] == "completed" and by_env["tasks"] == []


async def test_dlq_list_is_newest_first_paged_with_the_first_error_line(
    agentic: Any, queue: RedisTaskQueue
) -> None:
    await _dead_letter(queue, 5)
    page = _json(agentic("dlq", "list", "--limit", "2", "--json"))
    assert page == _same((await queue.page_tasks(TaskState.DEAD_LETTER, limit=2)).to_dict())
    assert [t["task_id"] for t in page["tasks"]] == ["d4", "d3"] and page["total"] == 5
    assert set(page["tasks"][0]) == {
        "task_id", "task_type", "priority", "state", "attempts", "retry_count", "created_at",
        "started_at", "completed_at", "worker_id", "error_line", "at",
    }  # fmt: skip
    table = agentic("dlq", "list", "--limit", "2", "--cursor", page["next_cursor"])
    assert table.returncode == 0, table.stderr
    assert [line.split()[0] for line in table.stdout.splitlines()[1:3]] == ["d2", "d1"]
    assert "broke d2" in table.stdout and "traceback" not in table.stdout
    assert "2 of 5 dead_letter task(s)" in table.stdout
    assert (await queue.get_queue_size())["dlq"] == 5  # listing moved nothing


async def test_task_search_prints_matches_and_what_it_read(
    agentic: Any, queue: RedisTaskQueue
) -> None:
    await _dead_letter(queue, 3)
    await queue.enqueue("needle-1", "dev", {"text": "a Haystack"})
    found = _json(agentic("task", "search", "haystack", "--json"))
    expected = await queue.search_tasks("haystack")
    assert found == _same(expected.to_dict())
    assert [t["task_id"] for t in found["tasks"]] == ["needle-1"]
    assert found["complete"] is True and found["scanned"] == 4
    out = agentic("task", "search", "BROKE", "--state", "dead_letter", "--scan-limit", "2")
    assert out.returncode == 0, out.stderr
    assert "2 match(es); 2 task(s) read, stopped there" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("task", "list", "--limit", "0"), "--limit"),
        (("task", "list", "--limit", "1001"), "--limit"),
        (("task", "list", "--state", "finished"), "--state"),
        (("task", "list", "--cursor", "garbage"), "invalid cursor"),
        (("task", "list", "--type", "bad type!"), "invalid task type"),
        (("task", "list", "--older-than", "soon"), "not a duration"),
        (("task", "list", "--older-than", "-2h"), "not a duration"),
        (("dlq", "list", "--limit", "0"), "--limit"),
        (("dlq", "list", "--limit", "-3"), "--limit"),
        (("task", "search", ""), "1-200 characters"),
        (("task", "search", "x" * 201), "1-200 characters"),
        (("task", "search", "x", "--scan-limit", "0"), "--scan-limit"),
        (("pipeline", "list", "--limit", "-1"), "--limit"),
        (("pipeline", "list", "--limit", "0"), "--limit"),
    ],
)
def test_listing_usage_errors_exit_2(agentic: Any, args: tuple[str, ...], message: str) -> None:
    out = agentic(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr and "Traceback" not in out.stderr


async def test_a_cursor_of_another_state_is_a_usage_error(
    agentic: Any, queue: RedisTaskQueue
) -> None:
    await _dead_letter(queue, 3)
    cursor = (await queue.page_tasks(TaskState.DEAD_LETTER, limit=1)).next_cursor
    assert cursor is not None
    out = agentic("task", "list", "--state", "pending", "--cursor", cursor)
    assert out.returncode == 2 and "belongs to a listing of 'dead_letter'" in out.stderr
