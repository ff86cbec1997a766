"""Loading the Lua sources and running script calls: EVALSHA, and on NOSCRIPT (a
restarted, flushed or newly promoted server) the same call as EVAL with the source, which
also caches the script on that server. EVAL goes where EVALSHA went (the node of the
call's keys on a cluster), so no SCRIPT LOAD has to reach every node."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.commands.core import Script as SyncScript
from redis.exceptions import AskError, MovedError, NoScriptError, RedisError, TryAgainError

from ..connection import translate_error
from ..errors import DurabilityError, TopologyError
from ..topology import AnyRedis
from .contract import SCRIPTS, ScriptCall
from .includes import splice
from .replies import raise_for_code


@cache
def load_source(name: str) -> str:
    """lua/<name>.lua with the helpers of its includes that it uses (includes.py)."""
    lua = resources.files("utils.redis_queue").joinpath("lua")

    def include(included: str) -> str:
        return lua.joinpath("include", f"{included}.lua").read_text()

    return splice(lua.joinpath(f"{name}.lua").read_text(), include)


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

    def __init__(self, redis: AnyRedis, url: str) -> None:
        self._redis = redis
        self._url = url

    async def run(self, call: ScriptCall, task_id: str = "") -> Any:
        name = call.script.name
        try:
            try:
                reply = await self._redis.evalsha(
                    script_sha(name), len(call.keys), *call.keys, *call.args
                )
            except NoScriptError:
                reply = await self._redis.eval(
                    script_source(name), len(call.keys), *call.keys, *call.args
                )
        except RedisError as exc:  # the hot path: no context manager
            raise translate_error(self._url, exc) from exc
        if reply and isinstance(reply[0], int) and reply[0] < 0:
            raise_for_code(reply, task_id, name.replace("_", " "))
        return reply

    async def run_durable(
        self, call: ScriptCall, task_ids: Sequence[str], min_replicas: int, timeout_ms: int
    ) -> Any:
        """The call, then WAIT on the same connection (one pipeline, one round trip):
        DurabilityError unless `min_replicas` replicas confirmed the write in time. The
        call's own error replies raise first (nothing to confirm then)."""
        name = call.script.name
        replies = await self._pipelined_with_wait(call, min_replicas, timeout_ms, sha=True)
        if isinstance(replies[0], NoScriptError):
            replies = await self._pipelined_with_wait(call, min_replicas, timeout_ms, sha=False)
        reply, acked = replies
        for item in replies:
            if isinstance(item, RedisError):
                raise translate_error(self._url, item) from item
        if reply and isinstance(reply[0], int) and reply[0] < 0:
            raise_for_code(reply, task_ids[0] if len(task_ids) == 1 else "", name.replace("_", " "))
        if int(acked) < min_replicas:
            raise DurabilityError(list(task_ids), int(acked), min_replicas, timeout_ms)
        return reply

    async def _pipelined_with_wait(
        self, call: ScriptCall, min_replicas: int, timeout_ms: int, *, sha: bool
    ) -> list[Any]:
        name = call.script.name
        script = ("EVALSHA", script_sha(name)) if sha else ("EVAL", script_source(name))
        command = (*script, len(call.keys), *call.keys, *call.args)
        try:
            if isinstance(self._redis, RedisCluster):
                return await self._on_node(command, min_replicas, timeout_ms, call.keys[0])
            pipe = self._redis.pipeline(transaction=False)
            pipe.execute_command(*command)
            pipe.execute_command("WAIT", min_replicas, timeout_ms)
            return list(await pipe.execute(raise_on_error=False))
        except RedisError as exc:
            raise translate_error(self._url, exc) from exc

    async def _on_node(
        self, command: tuple[Any, ...], min_replicas: int, timeout_ms: int, key: str
    ) -> list[Any]:
        """The script and WAIT on one connection of the node that serves `key`. WAIT counts
        the writes of its own connection, and a cluster pipeline neither keeps two
        commands on one connection nor takes scripts; MOVED/ASK (the slot moved) refreshes
        the slot table and tries again on the new owner."""
        assert isinstance(self._redis, RedisCluster)
        for _ in range(3):
            node = self._redis.get_node_from_key(key)
            if node is None:
                raise TopologyError(f"no node of the cluster at {self._url} serves {key!r}")
            pair = [
                PipelineCommand(0, *command),
                PipelineCommand(1, "WAIT", min_replicas, timeout_ms),
            ]
            await node.execute_pipeline(pair)
            if isinstance(pair[0].result, MovedError | AskError | TryAgainError):
                await self._redis.nodes_manager.initialize()  # the slot moved: learn where
                continue
            return [pair[0].result, pair[1].result]
        return [pair[0].result, pair[1].result]


class SyncScripts:
    """Runs ScriptCalls on one sync client (SyncRedisTaskQueue), each script registered
    once (redis-py's register_script: EVALSHA, the source loaded again on NOSCRIPT);
    negative replies raise the mapped error, redis-py's errors the queue's. Safe to share
    between threads, like the client."""

    def __init__(self, redis: SyncRedis | SyncRedisCluster, url: str) -> None:
        self._redis = redis
        self._url = url
        self._registered: dict[str, SyncScript] = {}

    def run(self, call: ScriptCall, task_id: str = "") -> Any:
        name = call.script.name
        script = self._registered.get(name)
        if script is None:  # two threads may both register: the same SHA, harmless
            script = self._registered[name] = self._redis.register_script(script_source(name))
        try:
            reply = script(keys=call.keys, args=call.args)
        except RedisError as exc:
            raise translate_error(self._url, exc) from exc
        return _checked(reply, task_id, name)

    def run_durable(
        self, call: ScriptCall, task_ids: Sequence[str], min_replicas: int, timeout_ms: int
    ) -> Any:
        """As Scripts.run_durable: the call, then WAIT on the same connection (on a
        cluster, a connection to the node of the call's keys)."""
        redis: Any = self._redis
        if isinstance(redis, SyncRedisCluster):
            node = redis.get_node_from_key(call.keys[0])  # type: ignore[no-untyped-call]
            if node is None:
                raise TopologyError(
                    f"no node of the cluster at {self._url} serves {call.keys[0]!r}"
                )
            redis = node.redis_connection
        name = call.script.name
        try:
            for sha in (True, False):  # EVAL with the source when the server lost the script
                pipe = redis.pipeline(transaction=False)
                if sha:
                    pipe.evalsha(script_sha(name), len(call.keys), *call.keys, *call.args)
                else:
                    pipe.eval(script_source(name), len(call.keys), *call.keys, *call.args)
                pipe.execute_command("WAIT", min_replicas, timeout_ms)
                reply, acked = pipe.execute(raise_on_error=False)
                if not isinstance(reply, NoScriptError):
                    break
            for item in (reply, acked):
                if isinstance(item, RedisError):
                    raise item
        except RedisError as exc:
            raise translate_error(self._url, exc) from exc
        _checked(reply, task_ids[0] if len(task_ids) == 1 else "", name)
        if int(acked) < min_replicas:
            raise DurabilityError(list(task_ids), int(acked), min_replicas, timeout_ms)
        return reply


def _checked(reply: Any, task_id: str, name: str) -> Any:
    if reply and isinstance(reply[0], int) and reply[0] < 0:
        raise_for_code(reply, task_id, name.replace("_", " "))
    return reply


def run_pipelined(redis: SyncRedis | SyncRedisCluster, calls: Sequence[ScriptCall]) -> list[Any]:
    """Many calls in one pipeline on a sync client (the lease keeper), loading the
    scripts again on NOSCRIPT. Replies are raw: failures are exception objects. On a
    cluster (whose sync pipelines refuse scripts) each call goes alone to its node."""
    if isinstance(redis, SyncRedisCluster):
        return [_run_alone(redis, call) for call in calls]

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


def _run_alone(redis: SyncRedisCluster, call: ScriptCall) -> Any:
    name = call.script.name
    try:
        try:
            return redis.evalsha(script_sha(name), len(call.keys), *call.keys, *call.args)
        except NoScriptError:
            return redis.eval(script_source(name), len(call.keys), *call.keys, *call.args)
    except RedisError as exc:
        return exc


def run_sync(redis: SyncRedis | SyncRedisCluster, call: ScriptCall) -> Any:
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
