"""Handlers the benchmark's `agentic worker` subprocesses serve (scenarios C, D and E).

    python -m pipeline.cli worker --app bench.apps:registry --concurrency 10

`noop` does nothing and returns None, so what is measured is the worker runtime and the
queue engine, not a handler.
"""

from __future__ import annotations

import sys
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
