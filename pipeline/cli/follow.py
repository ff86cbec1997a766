"""`agentic pipeline run --follow`: each subtask's output printed as it arrives, read
from the task's output stream (the same one `agentic task tail` reads)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from utils.redis_queue import OutputChunk, QueueError, RedisTaskQueue

from ..runs import RunEvent
from .output_cmds import ChunkPrinter

__all__ = ["LocalOutputPrinter", "OutputFollower"]

log = logging.getLogger("agentic.pipeline")


MAX_READERS = 32  # subtasks followed at once; the others wait their turn (nothing is lost)


class OutputFollower:
    """A RunEvent listener: from a subtask's "submitted" event on, its output lines are
    printed, each prefixed with "stage:subtask" (the progress lines say how it ended).

    The readers (an XREAD BLOCK each) have connections of their own, at most MAX_READERS
    at once, so following a wide run never takes a connection the run waits on; a subtask
    beyond them is read from its stream's start when its turn comes."""

    def __init__(self, queue: RedisTaskQueue, *, max_readers: int = MAX_READERS) -> None:
        self.queue = RedisTaskQueue(
            queue.queue_name,
            queue.redis_url,
            key_prefix=queue.layout.prefix,
            password=queue.password,
            cluster=queue.cluster,
            partitions=queue.partitions,
            max_connections=max_readers,
            max_blocking_connections=max_readers,
        )
        self._turns = asyncio.Semaphore(max_readers)
        self._connecting = asyncio.Lock()
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
            async with self._turns:
                async with self._connecting:
                    await self.queue.connect()  # once; later calls return at once
                async for chunk in self.queue.stream_output(task_id):
                    if chunk.is_end:
                        break
                    printer.print(chunk)
        except QueueError as exc:  # a display must not break the run
            log.warning("cannot follow %s's output: %s", label, exc)
        finally:
            printer.close()

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Lets the readers print what is left (each ends at its task's end), for at most
        `grace` seconds, then stops those still waiting and closes the connections."""
        if self._readers:
            await asyncio.wait(list(self._readers), timeout=grace)
        for reader in list(self._readers):
            reader.cancel()
        for reader in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await self.queue.close()


class LocalOutputPrinter:
    """`pipeline run --local --follow`: the in-process manager's "output" events (what
    its subtasks emitted) printed like OutputFollower prints the streams."""

    def __init__(self) -> None:
        self._printers: dict[str, ChunkPrinter] = {}

    def __call__(self, event: RunEvent) -> None:
        label = f"{event.stage}:{event.subtask_id}"
        if event.kind in ("finished", "failed"):  # a line left open ends with its subtask
            done = self._printers.pop(label, None)
            if done is not None:
                done.close()
            return
        if event.kind != "output":
            return
        printer = self._printers.setdefault(label, ChunkPrinter(label))
        attempt, fraction = event.data.get("attempt"), event.data.get("fraction")
        printer.print(
            OutputChunk(
                "0-0",
                attempt if isinstance(attempt, int) else 0,
                str(event.data.get("kind") or "text"),
                event.message,
                fraction if isinstance(fraction, float | int) else None,
            )
        )
