"""The Agent base class: one task type, one queue handler, one JSON result.

An Agent instance is itself a queue handler: the worker calls `agent(ctx)`, which parses
ctx.payload into an AgentRequest (a malformed payload dead-letters the task with the
reason), runs `run(request)`, and maps model errors to the queue's outcomes (an auth error
or a missing recording dead-letters, a rate limit retries after its Retry-After).

Writing your own agent:

    from agents import Agent, AgentRequest

    class ReviewAgent(Agent):
        name = "review"  # the task type it serves

        async def run(self, request: AgentRequest) -> dict[str, Any]:
            messages = [{"role": "user", "content": request.subtask["description"]}]
            reply, usage = await self.ask(request, messages)  # key "review:<subtask id>"
            return self.result(ok=True, summary=reply.content[:200], usage=usage)

    registry = build_registry(settings)
    registry.register("review", ReviewAgent(settings.model, settings.pipeline), timeout=300)

`ask()` picks the backend (the worker's settings, or the payload's "model" override),
prices the reply and counts its tokens in the agentic_model_* metrics. `result()` builds
the common fields every agent returns: agent, ok, summary and usage. Under a worker, a
backend that streams (`supports_streaming`) passes the reply on as it arrives to the
task's output stream (ctx.emit: `agentic task tail`, `pipeline run --follow`).

A model error leaves the task as one line ("ModelTimeout: no answer from ... within 120
s"), the key and any bearer token already scrubbed from it; a wait the provider asked for
is handed to the queue capped at RETRY_AFTER_CAP, like the backend's own waits.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, cast

from utils.config import ModelSettings, PipelineSettings
from utils.metrics import record_model_usage
from utils.redaction import first_line
from utils.redis_queue.handlers import PermanentFailure, RateLimited, Retry, TaskContext

from .models import (
    RETRY_AFTER_CAP,
    Message,
    ModelBackend,
    ModelError,
    ModelRateLimited,
    ModelReply,
    ModelUsage,
    StreamingBackend,
    build_backend,
)
from .request import AgentRequest, InvalidRequest

__all__ = ["Agent", "BackendFactory"]

log = logging.getLogger("agentic.agents")

RATE_LIMITED_PAUSE = 5.0  # seconds, when a 429 came without a Retry-After

BackendFactory = Callable[[Mapping[str, Any] | None], ModelBackend]
"""overrides (the payload's "model" object, or None) -> the backend to call."""

# The tokens this attempt's model calls returned so far (ask() adds to it): an attempt that
# fails after a reply reports them, so the run's totals and budget count what was paid.
# A holder rather than the value: calls made in tasks of their own (gather) add to it too.
_spent: ContextVar[list[ModelUsage] | None] = ContextVar("agent_spent", default=None)


class BudgetExceeded(PermanentFailure):
    """The subtask's budget (its payload's `budget`) would be passed by another model
    call: the task ends at once, the run with it (pipeline/budget.py)."""


# The task whose output ask() streams the model's reply into and log() writes to (each
# handler runs in a task of its own, so this is per task); None when nothing reads it.
_task: ContextVar[TaskContext | None] = ContextVar("agent_task", default=None)


class Agent:
    """Base of the dev, QA, fix and deploy agents; see the module docstring."""

    name: ClassVar[str] = ""
    workspace_must_exist: ClassVar[bool] = True  # False for agents that create it

    def __init__(
        self,
        model: ModelSettings | None = None,
        pipeline: PipelineSettings | None = None,
        *,
        backend_factory: BackendFactory | None = None,
    ) -> None:
        self.model_settings = model or ModelSettings()
        self.pipeline_settings = pipeline or PipelineSettings()
        self.backend_factory: BackendFactory = backend_factory or functools.partial(
            build_backend, self.model_settings
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def timeout_seconds(self) -> float:
        """The longest one run may take: by default one model call, which its backend
        bounds by deadline_seconds across its retries. Agents that call no model, or do
        more, override it."""
        return self.model_settings.deadline_seconds

    async def run(self, request: AgentRequest) -> dict[str, Any]:
        raise NotImplementedError

    async def __call__(self, ctx: TaskContext) -> dict[str, Any]:
        _task.set(ctx if ctx.output is not None else None)
        request = AgentRequest.from_payload(
            ctx.payload,
            task_type=self.name,
            task_id=ctx.task_id,
            attempt=ctx.attempt,
            workspace_must_exist=self.workspace_must_exist,
            workspace_root=self.pipeline_settings.workspace_root,
        )
        spent = [ModelUsage()]
        reset = _spent.set(spent)
        try:
            result = await self._run_mapped(ctx, request)
        except BaseException:
            if spent[0].total_tokens:
                ctx.report_tokens(spent[0].total_tokens)
            raise
        finally:
            _spent.reset(reset)
        return self._settled(ctx, result)

    async def _run_mapped(self, ctx: TaskContext, request: AgentRequest) -> dict[str, Any]:
        try:
            return await self.run(request)
        except ModelRateLimited as exc:
            # The provider is saturated for everyone: pause its limit (the task's listed
            # ones, else its type's) fleet-wide; this attempt does not count.
            pause = exc.retry_after if exc.retry_after is not None else RATE_LIMITED_PAUSE
            raise RateLimited(
                min(pause, RETRY_AFTER_CAP), limits=ctx.task.limits or None, reason=str(exc)
            ) from exc
        except ModelError as exc:
            # One line for the task's error (and the run's reason): a model error's
            # traceback says nothing its message does not.
            reason = first_line(f"{type(exc).__name__}: {exc}", 500)
            log.warning("%s task %s: %s", self.name, ctx.task_id, reason)
            if not exc.retryable:
                raise PermanentFailure(reason) from exc
            delay = None if exc.retry_after is None else min(exc.retry_after, RETRY_AFTER_CAP)
            raise Retry(reason, delay=delay) from exc

    @staticmethod
    def _settled(ctx: TaskContext, result: dict[str, Any]) -> dict[str, Any]:
        usage = result.get("usage") if isinstance(result, dict) else None
        tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
        if isinstance(tokens, int) and tokens >= 0:
            ctx.report_tokens(tokens)  # token limits are charged this, not the reservation
        return result

    async def ask(
        self, request: AgentRequest, messages: list[Message]
    ) -> tuple[ModelReply, ModelUsage]:
        """Call the model with key "<name>:<subtask id>"; returns the reply and its usage."""
        check_budget(request.payload.get("budget"), self.spent())
        try:
            backend = self.backend_factory(request.model)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        key = f"{self.name}:{request.subtask_id}"
        ctx = _task.get()
        if ctx is not None and getattr(backend, "supports_streaming", False):
            streaming = cast(StreamingBackend, backend)
            reply = await streaming.complete(messages, key=key, on_chunk=ctx.emit)
        else:
            reply = await backend.complete(messages, key=key)
        usage = ModelUsage.of(reply, self.model_settings)  # counts in [0, 10**9]
        spent = _spent.get()
        if spent is not None:
            spent[0] += usage
        record_model_usage(self.name, usage.prompt_tokens, usage.completion_tokens, usage.cost_usd)
        log.info(
            "%s: %d prompt + %d completion tokens (%s)",
            key, usage.prompt_tokens, usage.completion_tokens, usage.model,
        )  # fmt: skip
        return reply, usage

    def spent(self) -> ModelUsage:
        """What this attempt's model calls used so far (for agents that call more than
        once and report the sum)."""
        spent = _spent.get()
        return spent[0] if spent else ModelUsage()

    async def log(self, text: str) -> None:
        """A log line (or lines) in the task's output stream (`agentic task tail`, `pipeline
        run --follow`); nothing outside a worker."""
        ctx = _task.get()
        if ctx is not None and text:
            await ctx.emit(text, kind="log")

    def result(
        self, *, ok: bool, summary: str, usage: ModelUsage | None = None, **fields: Any
    ) -> dict[str, Any]:
        """The fields every agent's result has, plus `fields`."""
        return {
            "agent": self.name,
            "ok": ok,
            "summary": summary,
            "usage": (usage or ModelUsage()).as_dict(),
            **fields,
        }


def check_budget(budget: Any, spent: ModelUsage) -> None:
    """Refuse another model call when the payload's `budget` (max_tokens, max_cost_usd,
    deadline: what the manager allowed this subtask when it sent it) is used up by this
    attempt's calls so far, or its deadline has passed."""
    if not isinstance(budget, Mapping):
        return
    deadline = budget.get("deadline")
    if isinstance(deadline, int | float) and time.time() >= deadline:
        raise BudgetExceeded("budget exceeded: no time left for another model call")
    max_tokens = budget.get("max_tokens")
    if isinstance(max_tokens, int | float) and spent.total_tokens >= max_tokens:
        raise BudgetExceeded(
            f"budget exceeded: {spent.total_tokens:,} tokens used, {max_tokens:,.0f} allowed"
        )
    max_cost = budget.get("max_cost_usd")
    if isinstance(max_cost, int | float) and spent.cost_usd >= max_cost:
        raise BudgetExceeded(
            f"budget exceeded: {spent.cost_usd:.4f} USD spent, {max_cost:.4f} allowed"
        )
