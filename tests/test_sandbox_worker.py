"""A real `agentic worker` serving the agents under the sandbox: hostile generated code in
one QA task after another (delivered by the replay backend through the dev agent), each
stopped and named, the worker serving the next; a payload aiming outside the base
directory dead-lettered with the reason; a SIGKILLed worker leaves no sandboxed process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.processes import ROOT, agentic_argv, agentic_env
from tests.test_sandbox import processes_with
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(180)

MODES = [
    pytest.param(
        "bubblewrap",
        marks=pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap not installed"),
    ),
    pytest.param(
        "unshare",
        marks=pytest.mark.skipif(not shutil.which("unshare"), reason="util-linux unshare missing"),
    ),
]
HOSTILE = {  # subtask id -> the body of its one test, and what QA must say
    "spin": ("while True:\n    pass", "killed: CPU time limit 2 s (during tests)"),
    "memory": ("block = bytearray(8 * 1024 ** 3)", "stopped by the memory limit 512 MiB"),
    "forks": (
        "for _ in range(10_000):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n        os._exit(0)",
        "stopped by the process limit 64",
    ),
    "good": ("self.assertEqual(1 + 1, 2)", "1 tests passed"),
}


def reply(body: str) -> str:
    indented = "\n".join("        " + line for line in body.splitlines())
    code = (
        "import os, sys, time, unittest\n\n"
        "class Hostile(unittest.TestCase):\n"
        f"    def test_it(self):\n{indented}\n"
    )
    return f"File: test_it.py\n```python\n{code}```\n"


@pytest.mark.parametrize("mode", MODES)
async def test_the_worker_survives_hostile_code_and_refuses_outside_workspaces(
    tmp_path: Path, mode: str, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    root = tmp_path / "workspaces"
    replay = tmp_path / "replay.json"
    replies = {f"dev:{sid}": {"content": reply(body)} for sid, (body, _) in HOSTILE.items()}
    replay.write_text(json.dumps({"model": "m", "replies": replies}))

    def payload(sid: str, workspace: Path | str) -> dict[str, object]:
        return {
            "subtask": {"id": sid, "description": sid, "files": ["test_it.py"]},
            "run_id": "r-1",
            "workspace": str(workspace),
            "model": {"backend": "replay", "replay_file": str(replay)},
        }

    env = agentic_env(
        redis_url,
        queue_name,
        AGENTIC_MAX_RETRIES="0",
        AGENTIC_PIPELINE__WORKSPACE_ROOT=str(root),
        AGENTIC_PIPELINE__SANDBOX=mode,
        AGENTIC_PIPELINE__SANDBOX_CPU_SECONDS="2",
        AGENTIC_PIPELINE__SANDBOX_MEMORY_MIB="512",
        AGENTIC_PIPELINE__SANDBOX_MAX_PROCESSES="64",
    )

    def drain() -> None:
        worker = subprocess.run(
            agentic_argv("worker", "--app", "agents.app:registry", "--burst"),
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr[-3000:]

    async with RedisTaskQueue(queue_name=queue_name, redis_url=redis_url, max_retries=0) as queue:
        for sid in HOSTILE:
            await queue.enqueue(f"dev-{sid}", "dev", payload(sid, root / sid))
        await queue.enqueue("dev-out", "dev", payload("good", tmp_path / "elsewhere"))
        drain()
        for sid in HOSTILE:  # one worker process runs them all
            await queue.enqueue(f"qa-{sid}", "qa", payload(sid, root / sid))
        await queue.enqueue("qa-etc", "qa", payload("good", "/etc"))
        drain()
        for sid, (_, summary) in HOSTILE.items():
            task = await queue.get_task(f"qa-{sid}")
            assert task is not None and task.state == "completed", (sid, task)
            assert task.result["sandbox"] == mode
            assert summary in task.result["summary"], (sid, task.result)
        for task_id in ("qa-etc", "dev-out"):
            task = await queue.get_task(task_id)
            assert task is not None and task.state == "dead_letter"
            assert "outside the base directory" in str(task.error)
    assert not (tmp_path / "elsewhere").exists()


async def wait_for(check: Callable[[], bool], seconds: float) -> bool:
    """Polls the process table (nothing to await on for another process's children)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


@pytest.mark.parametrize("mode", MODES)
async def test_sandboxed_code_dies_with_a_sigkilled_worker(
    tmp_path: Path, mode: str, redis_url: str, queue_name: str
) -> None:
    marker = f"orphan-{uuid.uuid4().hex}"
    ws = tmp_path / "workspaces" / "r-1"
    ws.mkdir(parents=True)
    (ws / "test_hang.py").write_text(
        "import os, subprocess, sys, time, unittest\n\n"
        "class T(unittest.TestCase):\n"
        "    def test_hangs(self):\n"
        "        subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)',\n"
        f"                          '{marker}'], start_new_session=True)\n"
        "        time.sleep(600)\n"
    )
    env = agentic_env(
        redis_url,
        queue_name,
        AGENTIC_PIPELINE__WORKSPACE_ROOT=str(tmp_path / "workspaces"),
        AGENTIC_PIPELINE__SANDBOX=mode,
    )
    payload = {"subtask": {"id": "hang"}, "run_id": "r-1", "workspace": str(ws)}
    async with RedisTaskQueue(queue_name=queue_name, redis_url=redis_url) as queue:
        await queue.enqueue("qa-hang", "qa", payload)
    worker = subprocess.Popen(
        agentic_argv("worker", "--app", "agents.app:registry"),
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert await wait_for(lambda: bool(processes_with(marker)), 60)
        os.kill(worker.pid, signal.SIGKILL)  # the worker only: no chance to clean up
        worker.wait(10)
        assert await wait_for(lambda: not processes_with(marker), 15), processes_with(marker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
