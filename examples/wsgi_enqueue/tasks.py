"""The handlers a worker serves for the WSGI example: `agentic worker --app
examples.wsgi_enqueue.tasks:handlers` (run from the repository's root)."""

from __future__ import annotations

from typing import Any

from utils.redis_queue import HandlerRegistry, PermanentFailure, TaskContext

handlers = HandlerRegistry()


@handlers.handler("word_count")
async def word_count(ctx: TaskContext) -> dict[str, Any]:
    text = ctx.payload.get("text")
    if not isinstance(text, str):
        raise PermanentFailure("payload.text must be a string")
    return {"words": len(text.split()), "chars": len(text)}
