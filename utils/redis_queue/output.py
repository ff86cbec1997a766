"""A task's streamed output: what one entry of its output stream is (`OutputChunk`), and
the writer a handler's `ctx.emit()` / `ctx.progress()` go through (`OutputWriter`).

Entries are written by lua/emit.lua only while the writer holds the task's lease; a
writer whose lease was lost gets LeaseLost and writes nothing. The writer commits in
groups: while one call is in flight, later emits wait in a buffer and go in the next call
together, so a model streaming hundreds of tokens a second costs a few calls, and a
handler that emits nothing costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .scripts import OutputEntry

__all__ = [
    "MAX_OUTPUT_TEXT",
    "MAX_PROGRESS_MESSAGE",
    "OutputChunk",
    "OutputSink",
    "OutputWriter",
]

MAX_OUTPUT_TEXT = 65_536  # characters of one entry; longer text is cut (and says so)
MAX_PROGRESS_MESSAGE = 64  # bytes: it also lives in the task hash, kept compact
_KINDS_MAX = 32


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """One entry of a task's output stream. `kind` is what the handler said ("text" for
    model tokens, "log", "progress", ...) or "end" (the task settled: `text` is its final
    state); `attempt` is the attempt that wrote it; `at_ms` the server time it was added."""

    entry_id: str
    attempt: int
    kind: str
    text: str
    fraction: float | None = None

    @property
    def at_ms(self) -> int:
        return int(self.entry_id.split("-", 1)[0])

    @property
    def is_end(self) -> bool:
        return self.kind == "end"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at_ms": self.at_ms}

    @classmethod
    def from_fields(cls, entry_id: str, fields: dict[str, str]) -> OutputChunk:
        fraction = fields.get("p")
        return cls(
            entry_id,
            int(fields.get("a") or 0),
            fields.get("k", ""),
            fields.get("t", ""),
            float(fraction) if fraction else None,
        )


class OutputSink(Protocol):
    """Where a writer sends its entries (RedisTaskQueue.emit_output)."""

    def emit_output(
        self, task_id: str, lease_token: int, entries: Sequence[OutputEntry]
    ) -> Awaitable[Any]: ...


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not kind or len(kind) > _KINDS_MAX or kind == "end":
        raise ValueError(f"kind must be a name of 1-{_KINDS_MAX} characters other than 'end'")
    return kind


def cut_text(text: str) -> str:
    if len(text) <= MAX_OUTPUT_TEXT:
        return text
    marker = " ...[cut]"
    return text[: MAX_OUTPUT_TEXT - len(marker)] + marker


def progress_entry(fraction: float, message: str) -> OutputEntry:
    """A progress entry: `fraction` in [0, 1], `message` cut to MAX_PROGRESS_MESSAGE bytes
    (on a character boundary)."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ValueError(f"fraction must be a number from 0 to 1, not {fraction!r}")
    if not 0.0 <= float(fraction) <= 1.0:  # also refuses NaN
        raise ValueError(f"fraction must be a number from 0 to 1, not {fraction!r}")
    raw = str(message).encode()[:MAX_PROGRESS_MESSAGE]
    return OutputEntry("progress", raw.decode("utf-8", "ignore"), float(fraction))


class OutputWriter:
    """Writes one attempt's entries in group commits (see the module docstring)."""

    __slots__ = ("_buffer", "_flushing", "_sink", "_task_id", "_token")

    def __init__(self, sink: OutputSink, task_id: str, lease_token: int) -> None:
        self._sink, self._task_id, self._token = sink, task_id, lease_token
        self._buffer: list[tuple[OutputEntry, asyncio.Future[None]]] = []
        self._flushing = False

    async def write(self, entry: OutputEntry) -> None:
        """Returns once the entry is in the stream; LeaseLost when the lease is gone."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer.append((entry, future))
        if not self._flushing:
            self._flushing = True
            try:
                while self._buffer:
                    batch, self._buffer = self._buffer, []
                    await self._send(batch)
            finally:
                self._flushing = False
                for _, waiting in self._buffer:  # the flusher was cancelled: none will send
                    waiting.cancel()
                self._buffer = []
        await future

    async def _send(self, batch: list[tuple[OutputEntry, asyncio.Future[None]]]) -> None:
        try:
            await self._sink.emit_output(self._task_id, self._token, [e for e, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for _, future in batch:
            if not future.done():
                future.set_result(None)
