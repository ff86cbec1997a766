"""What a Worker runs: handlers keyed by task type, their context and outcome conventions.

A handler takes a TaskContext and returns the task's result (JSON). Raising fails the task
with retry; raising Retry(delay=...) asks for a specific delay; raising PermanentFailure
dead-letters it at once. Async handlers run on the event loop; plain functions run in a
thread so they never block it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .models import RedisTask
from .output import OutputSink, OutputWriter, check_kind, cut_text, progress_entry
from .scripts import OutputEntry

__all__ = [
    "AppLoadError",
    "Handler",
    "HandlerRegistry",
    "PermanentFailure",
    "RateLimited",
    "RegisteredHandler",
    "Retry",
    "TaskContext",
    "as_registry",
    "import_object",
    "load_app",
]


@dataclass(slots=True)
class TaskContext:
    """What a handler knows about the task it runs."""

    task: RedisTask
    worker_id: str
    queue_name: str
    lease_token: int  # fencing token: pass it to external systems to reject stale writers
    extra: dict[str, Any] = field(default_factory=dict)
    tokens_used: int | None = None  # what report_tokens() added up
    # where emit() and progress() write (the worker's queue); None: they write nothing
    output: OutputSink | None = field(default=None, repr=False)
    _writer: OutputWriter | None = field(default=None, repr=False)

    async def emit(self, text: str, *, kind: str = "text") -> None:
        """Appends `text` to the task's output stream (kind "text" for model tokens,
        "log" for log lines, or any short name), tagged with this attempt. Returns once it
        is stored; raises LeaseLost when this attempt no longer holds the lease (nothing
        is written then). Text past 64 KB is cut."""
        await self._write(OutputEntry(check_kind(kind), cut_text(str(text))))

    async def progress(self, fraction: float, message: str = "") -> None:
        """Reports how far the task is (`fraction` from 0 to 1) and what it does now:
        stored on the task (get_task: progress, progress_message) and as an entry of its
        output stream. LeaseLost as emit(); the message is cut to 64 bytes."""
        await self._write(progress_entry(fraction, message))

    async def _write(self, entry: OutputEntry) -> None:
        if self.output is None:
            return
        if self._writer is None:
            self._writer = OutputWriter(self.output, self.task.task_id, self.lease_token)
        await self._writer.write(entry)

    def report_tokens(self, tokens: int) -> None:
        """Add `tokens` to what this attempt used: at settle, the token limits it is bound
        by are charged this instead of the `cost_tokens` it reserved."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens must be an int >= 0, not {tokens!r}")
        self.tokens_used = (self.tokens_used or 0) + tokens

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def payload(self) -> dict[str, Any]:
        return self.task.payload

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry or recovery, ..."""
        return self.task.attempts


Handler = Callable[[TaskContext], Awaitable[Any]] | Callable[[TaskContext], Any]


class Retry(Exception):
    """Fail this attempt and retry after `delay` seconds (None: the queue's policy)."""

    def __init__(self, reason: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class PermanentFailure(Exception):
    """Fail the task for good: dead-letter it now, without retries."""


class RateLimited(Exception):
    """The provider refused for now (an HTTP 429): the limits named (default: every limit
    the task is bound by) admit nothing for `retry_after` seconds across the whole fleet,
    and the task goes back to pending without counting the attempt or a retry."""

    def __init__(
        self,
        retry_after: float,
        *,
        limits: str | Sequence[str] | None = None,
        reason: str = "rate limited by the provider",
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.limits: tuple[str, ...] = (limits,) if isinstance(limits, str) else tuple(limits or ())


@dataclass(frozen=True, slots=True)
class RegisteredHandler:
    func: Handler
    timeout: float | None = None  # seconds; None = the worker's default

    @property
    def is_async(self) -> bool:
        func: Any = self.func
        return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None)  # noqa: B004 - async callable objects
        )


class HandlerRegistry(Mapping[str, RegisteredHandler]):
    """Handlers by task type, with optional per-type timeouts.

    registry = HandlerRegistry()

    @registry.handler("dev", timeout=600)
    async def dev(ctx: TaskContext) -> dict: ...
    """

    def __init__(
        self, handlers: Mapping[str, Handler] | None = None, *, default_queue: str | None = None
    ) -> None:
        # the queue `agentic worker` serves these on when no queue is given explicitly
        self.default_queue = default_queue
        self._handlers: dict[str, RegisteredHandler] = {}
        for task_type, func in (handlers or {}).items():
            self.register(task_type, func)

    def register(self, task_type: str, func: Handler, *, timeout: float | None = None) -> None:
        if not callable(func):
            raise TypeError(f"handler for {task_type!r} is not callable: {func!r}")
        self._handlers[task_type] = RegisteredHandler(func, timeout)

    def handler(
        self, task_type: str, *, timeout: float | None = None
    ) -> Callable[[Handler], Handler]:
        def decorate(func: Handler) -> Handler:
            self.register(task_type, func, timeout=timeout)
            return func

        return decorate

    def __getitem__(self, task_type: str) -> RegisteredHandler:
        return self._handlers[task_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


def as_registry(app: object) -> HandlerRegistry:
    """A HandlerRegistry from what `--app` names: a registry, an object with a `registry`
    or `handlers` attribute, or a dict of task type -> handler."""
    if isinstance(app, HandlerRegistry):
        return app
    for attribute in ("registry", "handlers"):
        inner = getattr(app, attribute, None)
        if inner is not None and not callable(inner):
            return as_registry(inner)
    if isinstance(app, Mapping):
        return HandlerRegistry(dict(app))
    raise TypeError(
        f"expected a dict of task type -> handler or a HandlerRegistry, not {type(app).__name__}"
    )


class AppLoadError(ValueError):
    """An app path (MODULE:ATTR) that cannot be imported or is not a set of handlers."""


def import_object(path: str) -> object:
    """The object named MODULE:ATTR (imports MODULE); AppLoadError when that fails."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise AppLoadError(f"{path!r}: use MODULE:ATTR, e.g. agents.app:registry")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise AppLoadError(f"cannot load {path}: {exc}") from exc


def load_app(path: str) -> HandlerRegistry:
    """The handlers MODULE:ATTR names (what `agentic worker --app` serves)."""
    try:
        return as_registry(import_object(path))
    except TypeError as exc:
        raise AppLoadError(f"{path}: {exc}") from exc
