"""The handler the fault suite's worker processes run; its behaviour comes from the payload.

    ms          sleep this long (asyncio)                  default 0
    first_ms    sleep this long instead on attempt 1
    block_s     block the event loop (time.sleep) this long on attempt 1
    fail        raise on attempts <= fail (retried by the policy)
    first_outcome  on attempt 1: "ok", "fail" (retry) or "dead" (PermanentFailure)
    crash       os._exit(3) on every attempt (a poison task)
    result_bytes  return a result of about this many bytes

Every run is written to the ledger (ledger.py): start, then done or fail. The result names
the process, attempt and lease that produced it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from tests.support.ledger import LedgerWriter, worker_writer
from utils.redis_queue.handlers import HandlerRegistry, PermanentFailure, TaskContext

registry = HandlerRegistry()
_writer: list[LedgerWriter | None] = []


def _log(kind: str, ctx: TaskContext) -> None:
    if not _writer:
        _writer.append(worker_writer())
    writer = _writer[0]
    if writer is not None:
        now = f"{time.monotonic():.6f}"
        writer.write(kind, ctx.task_id, ctx.attempt, os.getpid(), ctx.lease_token, now)


@registry.handler("work")
async def work(ctx: TaskContext) -> Any:
    p = ctx.payload
    first = ctx.attempt == 1
    _log("start", ctx)
    if p.get("crash"):
        os._exit(3)
    if first and p.get("block_s"):
        time.sleep(float(p["block_s"]))
    ms = p.get("first_ms", p.get("ms", 0)) if first else p.get("ms", 0)
    if ms:
        await asyncio.sleep(float(ms) / 1000)
    outcome = p.get("first_outcome", "ok") if first else "ok"
    if ctx.attempt <= int(p.get("fail", 0)) or outcome == "fail":
        _log("fail", ctx)
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    if outcome == "dead":
        _log("fail", ctx)
        raise PermanentFailure("planned permanent failure")
    _log("done", ctx)
    result: dict[str, Any] = {"pid": os.getpid(), "attempt": ctx.attempt, "token": ctx.lease_token}
    if p.get("result_bytes"):
        result["pad"] = "x" * int(p["result_bytes"])
    return result
