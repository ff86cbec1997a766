"""`agentic pipeline run --follow`: each subtask's output printed as it arrives, read
from the task's output stream (the same one `agentic task tail` reads)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from utils.redis_queue import QueueError, RedisTaskQueue

from ..runs import RunEvent
from .output_cmds import ChunkPrinter

__all__ = ["OutputFollower"]

log = logging.getLogger("agentic.pipeline")


class OutputFollower:
    """A RunEvent listener: from a subtask's "submitted" event on, its output lines are
    printed, each prefixed with "stage:subtask" (the progress lines say how it ended).
    One reader (an XREAD BLOCK) per subtask running at the time."""

    def __init__(self, queue: RedisTaskQueue) -> None:
        self.queue = queue
        self._readers: set[asyncio.Task[None]] = set()

    def __call__(self, event: RunEvent) -> None:
        task_id = event.data.get("task_id") if event.kind == "submitted" else None
        if not isinstance(task_id, str):
            return
        label = f"{event.stage}:{event.subtask_id}"
        reader = asyncio.get_running_loop().create_task(self._follow(task_id, label))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)

    async def _follow(self, task_id: str, label: str) -> None:
        printer = ChunkPrinter(label)
        try:
            async for chunk in self.queue.stream_output(task_id):
                if chunk.is_end:
                    break
                printer.print(chunk)
        except QueueError as exc:  # a display must not break the run
            log.warning("cannot follow %s's output: %s", label, exc)
        finally:
            printer.close()

    async def aclose(self) -> None:
        """Stops the readers still waiting (a run that ended before its tasks did)."""
        for reader in list(self._readers):
            reader.cancel()
        for reader in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError):
                await reader
