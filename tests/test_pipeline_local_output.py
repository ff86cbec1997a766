"""The in-process manager's subtasks stream their output too: ctx.emit / ctx.progress reach
the run's listeners as "output" events, in order, before the subtask's result; a late
write of an attempt that has ended is refused (LeaseLost) like the queue refuses it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pipeline import EnhancedPipelineManager, RunEvent, RunStatus
from pipeline.local import LocalExecutor
from tests.support.pipeline import settings
from tests.test_pipeline_dag import Recorder, dag_spec
from utils.redis_queue import LeaseLost, TaskCancelled
from utils.redis_queue.handlers import HandlerRegistry, TaskContext
from utils.redis_queue.scripts import OutputEntry

pytestmark = pytest.mark.timeout(60)


class Talker(Recorder):
    async def dev(self, ctx: TaskContext) -> dict[str, Any]:
        for i in range(50):
            await ctx.emit(f"token{i} ")
        await ctx.progress(0.5, "half way")
        await ctx.emit("done\n", kind="log")
        return await super().dev(ctx)


async def test_local_subtasks_stream_their_output_to_the_runs_listeners(tmp_path: Path) -> None:
    events: list[RunEvent] = []
    manager = EnhancedPipelineManager(
        Talker(dev_seconds=0).registry(), settings=settings(tmp_path), on_event=events.append
    )
    async with manager:
        result = await manager.run(dag_spec({"a": [], "b": []}))
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    for subtask in ("a", "b"):
        mine = [e for e in events if e.subtask_id == subtask and e.stage == "dev"]
        output = [e for e in mine if e.kind == "output"]
        assert [e.message for e in output[:50]] == [f"token{i} " for i in range(50)]
        assert (output[50].data["kind"], output[50].data["fraction"]) == ("progress", 0.5)
        assert output[51].message == "done\n" and output[51].data["attempt"] == 1
        kinds = [e.kind for e in mine]
        assert kinds.index("finished") > max(i for i, k in enumerate(kinds) if k == "output")


async def test_a_local_attempt_that_ended_cannot_write_output() -> None:
    seen: list[tuple[str, int, list[OutputEntry]]] = []
    started, release = asyncio.Event(), asyncio.Event()
    contexts: list[TaskContext] = []

    async def slow(ctx: TaskContext) -> str:
        contexts.append(ctx)
        started.set()
        await release.wait()
        return "late"

    executor = LocalExecutor(
        HandlerRegistry({"slow": slow}),
        workers=1,
        on_output=lambda task, attempt, entries: seen.append((task, attempt, list(entries))),
    )
    await executor.start()
    try:
        await executor.submit("t1", "slow", {}, 1)
        await started.wait()
        await contexts[0].emit("while running")
        await executor.cancel("t1")  # the attempt ends
        with pytest.raises(TaskCancelled):
            await executor.outcome("t1", 5)
        with pytest.raises(LeaseLost):
            await contexts[0].emit("after its end")
    finally:
        await executor.stop()
    assert [(t, a, [e.text for e in es]) for t, a, es in seen] == [("t1", 1, ["while running"])]
