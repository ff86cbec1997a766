"""Scenario J: a pipeline run's overhead per subtask as it gets wider. N independent dev
subtasks (plus QA and deploy) through DistributedPipelineManager with no-op agents in
this process, for N from 10 up (to 10,000; to 200 in a quick run): seconds per subtask at
each width, and the widest against the narrowest (goal: within 1.5x). The narrowest run is
mostly fixed cost (QA, deploy, start-up), so the marginal cost per subtask past it, (T(N) -
T(10)) / (N - 10), is reported too."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness.context import Bench, Row, clear_keys
from pipeline import DistributedPipelineManager
from utils.config import Settings
from utils.redis_queue.handlers import HandlerRegistry, TaskContext

WIDTHS_FULL = (10, 100, 500, 1_000, 2_000, 10_000)
WIDTHS_QUICK = (10, 50, 200)
TARGET_GROWTH = 1.5


async def _dev(ctx: TaskContext) -> dict[str, Any]:
    return {"ok": True, "summary": "", "files": []}


async def _qa(ctx: TaskContext) -> dict[str, Any]:
    return {"ok": True, "passed": True}


async def _deploy(ctx: TaskContext) -> dict[str, Any]:
    return {"ok": True, "artifact": "none"}


async def one_run(bench: Bench, width: int) -> float:
    """Seconds one run of `width` dev subtasks takes, start to end."""
    queue_name = f"{bench.queue_name}-wide-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            redis_url=bench.url,
            pipeline={
                "queue_name": queue_name,
                "workspace_root": str(Path(scratch) / "ws"),
                "deploy_dir": str(Path(scratch) / "deploy"),
                "local_workers": 16,
            },
        )
        spec = {
            "name": "wide",
            "subtasks": [{"id": f"s{i}", "description": "no-op"} for i in range(width)],
        }
        handlers = HandlerRegistry({"dev": _dev, "qa": _qa, "deploy": _deploy})
        manager = DistributedPipelineManager(settings=settings, handlers=handlers, resume=False)
        async with manager:
            started = time.perf_counter()
            result = await manager.run(spec)
            took = time.perf_counter() - started
        if result.status != "succeeded":
            raise RuntimeError(f"the wide run of {width} ended {result.status}: {result.reasons}")
    await clear_keys(bench.admin, queue_name)
    return took


async def scenario_j(bench: Bench) -> Row:
    widths = WIDTHS_QUICK if bench.sizes.drain < 10_000 else WIDTHS_FULL
    per_subtask: dict[int, float] = {}
    took: dict[int, float] = {}
    for width in widths:
        took[width] = await one_run(bench, width)
        per_subtask[width] = took[width] / width
    first = widths[0]
    marginal = {w: (took[w] - took[first]) / (w - first) for w in widths[1:]}
    narrow, wide = per_subtask[widths[0]], per_subtask[widths[-1]]
    # the narrowest run is dominated by fixed costs (QA, deploy, start-up): compare the
    # widest with the second narrowest as well
    growth = wide / per_subtask[widths[1]]
    shown = ", ".join(f"{w}: {s * 1000:.1f} ms" for w, s in per_subtask.items())
    return Row(
        "J",
        "pipeline run, per dev subtask, by width",
        shown,
        baseline=f"{widths[1]}: {per_subtask[widths[1]] * 1000:.1f} ms",
        ratio=f"{growth:.2f}x",
        target=f"<= {TARGET_GROWTH}x",
        hit=growth <= TARGET_GROWTH,
        data={
            "ms_per_subtask": {str(w): round(s * 1000, 3) for w, s in per_subtask.items()},
            "growth_widest_vs_second": round(growth, 3),
            "growth_widest_vs_narrowest": round(wide / narrow, 3),
            "marginal_ms_per_subtask": {str(w): round(s * 1000, 3) for w, s in marginal.items()},
        },
    )
