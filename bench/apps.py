"""Handlers the benchmark's `agentic worker` subprocesses serve (scenarios C, D, E and P).

    python -m pipeline.cli worker --app bench.apps:registry --concurrency 10

`noop` does nothing and returns None, so what is measured is the worker runtime and the
queue engine, not a handler. `stamp` (scenario P) records when it started.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.redis_queue.handlers import HandlerRegistry, TaskContext  # noqa: E402

NOOP_TYPE = "noop"

registry = HandlerRegistry()


@registry.handler(NOOP_TYPE)
async def noop(ctx: TaskContext) -> None:
    """The cheapest possible task: no work, no result."""
    return None


STAMP_TYPE = "stamp"


@registry.handler(STAMP_TYPE)
async def stamp(ctx: TaskContext) -> None:
    """Appends "<task id> <wall-clock start>" to the file `ledger` names, then sleeps
    `seconds` (scenario P: when tasks start around a pause and a resume)."""
    with Path(ctx.payload["ledger"]).open("a") as f:
        f.write(f"{ctx.task_id} {time.time():.6f}\n")
    await asyncio.sleep(float(ctx.payload.get("seconds", 0)))
