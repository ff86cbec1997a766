"""README's pipeline examples do what the README says."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from utils.redis_queue import RedisTask, TaskState
from utils.redis_queue.handlers import TaskContext

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


async def test_the_own_agent_example_registers_and_runs_with_a_recorded_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "myagents.py").write_text(python_block("class ReviewAgent"))
    replay = tmp_path / "replay.json"
    reply = {"content": "Looks good.", "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    replay.write_text(json.dumps({"model": "recorded", "replies": {"review:r1": reply}}))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AGENTIC_MODEL__REPLAY_FILE", str(replay))
    monkeypatch.setenv("AGENTIC_PIPELINE__WORKSPACE_ROOT", str(tmp_path.parent))
    module = importlib.import_module("myagents")
    try:
        spec = module.registry["review"]
        assert spec.timeout == 300 and {"dev", "qa", "fix", "deploy"} <= set(module.registry)
        payload = {"subtask": {"id": "r1", "description": "review it"}, "workspace": str(tmp_path)}
        task = RedisTask("t1", "review", payload, 1, TaskState.PROCESSING, attempts=1)
        result = await spec.func(TaskContext(task, "w", "q", 1))  # type: ignore[misc]
    finally:
        sys.modules.pop("myagents", None)
    assert result["ok"] is True and result["summary"] == "Looks good."
    assert result["usage"]["total_tokens"] == 10


async def test_the_flow_control_example_sets_its_limits_and_its_handler_backs_off(
    queue: Any,
) -> None:
    """The README's flow-control block, run against a real queue with a stand-in for the
    user's model call (the one name it leaves to the reader)."""
    from types import SimpleNamespace

    from utils.redis_queue import HandlerRegistry, RateLimited

    block = python_block('set_limit("openai"')
    source = "async def example():\n" + "".join(f"    {line}\n" for line in block.splitlines())
    source += "    return dev\n"
    replies: list[Any] = []

    async def call_model(payload: dict[str, Any]) -> Any:
        return replies.pop(0)

    registry = HandlerRegistry()
    scope: dict[str, Any] = {
        "queue": queue, "registry": registry, "payload": {"file": "a.py"},
        "call_model": call_model, "TaskContext": TaskContext, "RateLimited": RateLimited,
    }  # fmt: skip
    exec(compile(source, "README.md", "exec"), scope)
    dev = await scope["example"]()
    limits = await queue.get_limits()
    openai = limits["openai"].limit
    assert (openai.rate, openai.per, openai.tokens, openai.concurrency) == (500, 60, 90_000, 8)
    assert limits["tenant:acme"].limit.concurrency == 2 and limits["qa"].limit.burst == 5
    stored = await queue.get_task("t1")
    assert stored is not None and stored.limits == ["openai", "tenant:acme"]
    assert (stored.cost_tokens, stored.group) == (3_000, "tenant:acme")

    ctx = TaskContext(stored, "w", queue.queue_name, 1)
    usage = SimpleNamespace(total_tokens=1_234)
    replies += [SimpleNamespace(status=429, retry_after=7.0, usage=usage, result=None)]
    with pytest.raises(RateLimited) as refused:
        await dev(ctx)
    assert (refused.value.retry_after, refused.value.limits) == (7.0, ("openai",))
    replies += [SimpleNamespace(status=200, retry_after=None, usage=usage, result={"ok": 1})]
    assert await dev(ctx) == {"ok": 1} and ctx.tokens_used == 1_234
