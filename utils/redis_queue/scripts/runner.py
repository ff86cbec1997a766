"""Loading the Lua sources and running script calls: EVALSHA, and on NOSCRIPT (a
restarted or flushed server) the source is loaded and the call sent once more."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from ..connection import translate_error
from .contract import SCRIPTS, ScriptCall
from .replies import raise_for_code

_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)


@cache
def load_source(name: str) -> str:
    lua = resources.files("utils.redis_queue").joinpath("lua")

    def include(match: re.Match[str]) -> str:
        return lua.joinpath("include", f"{match.group(1)}.lua").read_text()

    return _INCLUDE.sub(include, lua.joinpath(f"{name}.lua").read_text())


@cache
def script_source(name: str) -> str:
    """The script as Redis runs it: the shebang with its flags (it must be the very first
    line), then load_source(name)."""
    flags = SCRIPTS[name].flags
    return (f"#!lua flags={flags}" if flags else "#!lua") + "\n" + load_source(name)


@cache
def script_sha(name: str) -> str:
    return hashlib.sha1(script_source(name).encode()).hexdigest()


class Scripts:
    """Runs ScriptCalls on one async client; negative replies raise the mapped error."""

    def __init__(self, redis: Redis, url: str) -> None:
        self._redis = redis
        self._url = url

    async def run(self, call: ScriptCall, task_id: str = "") -> Any:
        name = call.script.name
        sha = script_sha(name)
        try:
            try:
                reply = await self._redis.evalsha(sha, len(call.keys), *call.keys, *call.args)
            except NoScriptError:
                await self._redis.script_load(script_source(name))
                reply = await self._redis.evalsha(sha, len(call.keys), *call.keys, *call.args)
        except RedisError as exc:  # the hot path: no context manager
            raise translate_error(self._url, exc) from exc
        if reply and isinstance(reply[0], int) and reply[0] < 0:
            raise_for_code(reply, task_id, name.replace("_", " "))
        return reply


def run_pipelined(redis: SyncRedis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Many calls in one pipeline on a sync client (the lease keeper), loading the
    scripts again on NOSCRIPT. Replies are raw: failures are exception objects."""

    def send() -> list[Any]:
        pipe = redis.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(script_sha(call.script.name), len(call.keys), *call.keys, *call.args)
        return list(pipe.execute(raise_on_error=False))

    replies = send()
    missing = {c.script.name for c, r in zip(calls, replies, strict=True) if _noscript(r)}
    if missing:
        for name in missing:
            redis.script_load(script_source(name))
        replies = send()
    return replies


def run_sync(redis: SyncRedis, call: ScriptCall) -> Any:
    """One call on a sync client (the metrics collector); errors raise as in Scripts.run,
    but redis-py's own exceptions are not translated."""
    (reply,) = run_pipelined(redis, [call])
    if isinstance(reply, Exception):
        raise reply
    if reply and isinstance(reply[0], int) and reply[0] < 0:
        raise_for_code(reply, "", call.script.name.replace("_", " "))
    return reply


def _noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)
