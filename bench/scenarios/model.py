"""Scenario K: model-bound throughput against concurrency. 64 dev subtasks, each one model
call to a local chat-completions provider that answers after 1 s, run by one
`agentic worker --types dev -c C` process with the real agents (httpx backend, real
files written) for C in 8, 32 and 64. Measured at the provider (first request in to last
answer out, so the worker's start-up is not in it) against the ideal ceil(64 / C) s;
the goal is 64 subtasks at -c 64 within 1.5x of one call's latency."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from bench.harness.config import ROOT
from bench.harness.context import Bench, Row, clear_keys
from bench.harness.processes import worker_env
from pipeline.enhanced import DEFAULT_APP
from utils.redis_queue import RedisTaskQueue

SUBTASKS = 64
LATENCY = 1.0  # seconds the provider takes per call
CONCURRENCY = (8, 32, 64)
TARGET = 1.5
RUN_TIMEOUT = 120.0
# What the provider answers: one file, so the dev agent writes it and succeeds.
_REPLY = "Done.\n\nFile: calc.py\n```python\nX = 1\n```\n"
_PROVIDER = (
    "import sys\n"
    "from tests.support.model_server import ProviderServer\n"
    "p = ProviderServer()\n"
    f"p.delay, p.content = {LATENCY!r}, {_REPLY!r}\n"
    "print(p.url, flush=True)\n"
    "sys.stdin.read()\n"
    "p.close()\n"
)


class _Provider:
    """The provider in a process of its own (so its 64 threads do not share a GIL with
    this driver), until close()."""

    def __init__(self) -> None:
        env = {**os.environ, "no_proxy": "127.0.0.1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROVIDER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def stats(self) -> dict[str, Any]:
        with urlopen(self.url.removesuffix("/v1") + "/stats", timeout=5) as reply:
            stats: dict[str, Any] = json.loads(reply.read())
        return stats

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


async def _one(bench: Bench, concurrency: int, scratch: Path) -> dict[str, float]:
    """One worker at `concurrency` runs SUBTASKS dev subtasks against a fresh provider."""
    queue_name = f"{bench.queue_name}-model-{uuid.uuid4().hex[:6]}"
    queue = RedisTaskQueue(queue_name=queue_name, redis_url=bench.url)
    await queue.connect()
    provider = _Provider()
    try:
        tasks = []
        for i in range(SUBTASKS):
            workspace = scratch / f"c{concurrency}-{i}"
            workspace.mkdir(parents=True)
            subtask = {"id": f"s{i}", "description": "write calc.py", "files": ["calc.py"]}
            payload = {"subtask": subtask, "workspace": str(workspace), "run_id": "bench"}
            tasks.append({"task_id": f"dev-{i}", "task_type": "dev", "payload": payload})
        await queue.enqueue_many(tasks)
        env = worker_env(bench)
        env.update(
            AGENTIC_QUEUE_NAME=queue_name,
            AGENTIC_MODEL__BACKEND="openai",
            AGENTIC_MODEL__BASE_URL=provider.url,
            AGENTIC_MODEL__API_KEY="sk-bench",
            AGENTIC_MODEL__MAX_RETRIES="0",
            AGENTIC_PIPELINE__WORKSPACE_ROOT=str(scratch),  # agents refuse workspaces elsewhere
            no_proxy="127.0.0.1",
        )
        argv = [sys.executable, "-m", "pipeline.cli", "worker", "--app", DEFAULT_APP]
        argv += ["--types", "dev", "--concurrency", str(concurrency), "--burst"]
        started = time.perf_counter()
        worker = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, err = await asyncio.wait_for(worker.communicate(), RUN_TIMEOUT)
        wall = time.perf_counter() - started
        completed = (await queue.get_queue_size()).get("completed", 0)
        if worker.returncode != 0 or completed != SUBTASKS:
            tail = err.decode(errors="replace")[-2000:]
            raise RuntimeError(f"K at -c {concurrency}: {completed} of {SUBTASKS} done\n{tail}")
        stats = await asyncio.to_thread(provider.stats)
    finally:
        provider.close()
        await queue.close()
        await clear_keys(bench.admin, queue_name)
    return {"span": float(stats["span"]), "peak": float(stats["peak"]), "wall": wall}


async def scenario_k(bench: Bench) -> Row:
    measured: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for concurrency in CONCURRENCY:
            measured[concurrency] = await _one(bench, concurrency, Path(scratch))
    ideal = {c: math.ceil(SUBTASKS / c) * LATENCY for c in CONCURRENCY}
    widest = CONCURRENCY[-1]
    ratio = measured[widest]["span"] / LATENCY
    shown = ", ".join(
        f"-c {c}: {m['span']:.2f} s (peak {m['peak']:.0f})" for c, m in measured.items()
    )
    return Row(
        "K",
        f"{SUBTASKS} model calls of {LATENCY:.0f} s, by worker concurrency",
        shown,
        baseline=f"one call: {LATENCY:.1f} s",
        ratio=f"{ratio:.2f}x",
        target=f"-c {widest} <= {TARGET}x",
        hit=ratio <= TARGET,
        data={
            str(c): {**{k: round(v, 3) for k, v in m.items()}, "ideal": ideal[c]}
            for c, m in measured.items()
        },
    )
