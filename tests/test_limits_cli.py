"""`agentic limits set|list|remove`, `agentic info`'s limits and `enqueue --limit`: real
processes against real Redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import ROOT, agentic_argv, agentic_env
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def agentic(redis_url: str, queue_name: str) -> Iterator[Any]:
    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            agentic_argv(*args),
            cwd=ROOT,
            env=agentic_env(redis_url, queue_name),
            capture_output=True,
            text=True,
            timeout=30,
        )

    yield call


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_limits_set_list_and_remove(agentic: Any, queue: RedisTaskQueue) -> None:
    out = agentic("limits", "set", "openai", "--rate", "500", "--per", "60", "--concurrency", "4")
    assert out.returncode == 0, out.stderr
    assert "rate 500/60s (burst 500)" in out.stdout and "concurrency 4" in out.stdout
    limit = _json(agentic("limits", "set", "openai", "--tokens", "90000", "--json"))
    assert limit == {
        "key": "openai",
        "rate": 500.0,
        "per": 60.0,
        "burst": 500,
        "concurrency": 4,
        "tokens": 90000,
        "tokens_per": 60.0,
    }
    listed = _json(agentic("limits", "list", "--json"))
    assert [entry["key"] for entry in listed] == ["openai"]
    assert listed[0]["running"] == 0 and listed[0]["tokens_available"] == 90000
    text = agentic("limits", "list").stdout
    assert "running 0/4" in text and "tokens available 90,000" in text
    assert (await queue.get_limits())["openai"].limit.concurrency == 4
    assert agentic("limits", "remove", "openai").stdout.strip() == "removed"
    assert agentic("limits", "remove", "openai").stdout.strip() == "no limit 'openai'"
    assert agentic("limits", "list").stdout.strip() == "no limits"


def test_bad_limits_exit_2_with_the_reason(agentic: Any) -> None:
    for args, reason in [
        (("limits", "set", "openai"), "needs rate"),
        (("limits", "set", "openai", "--rate", "-1"), "rate must be"),
        (("limits", "set", "openai", "--concurrency", "0"), "concurrency must be"),
        (("limits", "set", "bad key", "--concurrency", "1"), "invalid limit key"),
        (("enqueue", "dev", "--limit", "a b"), "invalid limit key"),
        (("enqueue", "dev", "--cost-tokens", "-3"), "cost_tokens"),
        (("enqueue", "dev", "--group", "a b"), "invalid group"),
    ]:
        out = agentic(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert reason in out.stderr and "Traceback" not in out.stderr


async def test_info_shows_each_limits_use_and_the_tasks_it_holds_back(
    agentic: Any, queue: RedisTaskQueue
) -> None:
    assert agentic("limits", "set", "dev", "--concurrency", "1").returncode == 0
    for i in range(3):
        out = agentic(
            "enqueue", "dev", "--id", f"d{i}", "--limit", "openai", "--cost-tokens", "5",
            "--group", "tenant:a",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    task = await queue.get_task("d0")
    assert task is not None and (task.limits, task.cost_tokens) == (["openai"], 5)
    assert task.group == "tenant:a"
    await queue.claim_ready("w", 5)  # one runs, two are held back
    info = _json(agentic("info", "--json"))
    (dev,) = info["limits"]
    assert (dev["key"], dev["running"], dev["waiting"]) == ("dev", 1, 2)
    text = agentic("info").stdout
    assert "limits:" in text and "running 1/1" in text and "waiting 2" in text


def test_limits_aging_sets_shows_and_turns_off(agentic: Any) -> None:
    assert agentic("limits", "aging").stdout.strip() == "off (strict priority)"
    assert agentic("limits", "aging", "30").stdout.strip() == "30 s"
    assert agentic("limits", "aging").stdout.strip() == "30 s"
    assert agentic("limits", "aging", "off").stdout.strip() == "off (strict priority)"
    for bad in ("soon", "-5"):
        out = agentic("limits", "aging", bad)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
