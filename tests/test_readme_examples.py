"""README's pipeline examples do what the README says."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

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
