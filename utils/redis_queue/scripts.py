"""Loads lua/*.lua once per client and exposes one typed call per script.

Each script is registered with redis-py (`register_script`), which runs EVALSHA and
reloads the source on NOSCRIPT, also inside pipelines. `--@include name` lines are
replaced by lua/include/<name>.lua when the file is read.

What is sent to Redis (`script_source`) is a shebang line with the script's flags, then
the file: its header comment first, as on disk. Scripts that only drain or shrink the
queue run with `allow-oom`, so under `maxmemory` with `noeviction` workers can still
claim, settle, extend and clean up; the scripts that add work (enqueue, retry_dlq) carry
no flags, so Redis refuses them whole with an OOM error before their first command
instead of failing halfway. `sizes` is `no-writes`.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["SCRIPT_FLAGS", "SCRIPT_NAMES", "Scripts", "load_source", "script_source"]

SCRIPT_NAMES = (
    "cancel",
    "claim",
    "clear_finished",
    "complete",
    "enqueue",
    "extend",
    "fail",
    "purge_dlq",
    "release",
    "retry_dlq",
    "settle_many",
    "sizes",
    "worker_beat",
)
# Redis 7 script flags (the `#!lua flags=...` line); "" = a shebang without flags.
SCRIPT_FLAGS = {
    "cancel": "allow-oom",
    "claim": "allow-oom",
    "clear_finished": "allow-oom",
    "complete": "allow-oom",
    "enqueue": "",
    "extend": "allow-oom",
    "fail": "allow-oom",
    "purge_dlq": "allow-oom",
    "release": "allow-oom",
    "retry_dlq": "",
    "settle_many": "allow-oom",
    "sizes": "no-writes",
    "worker_beat": "allow-oom",  # replaces this worker's entry: bounded by the workers
}
# (script name, keys, args) of one call in a batch
ScriptCall = tuple[str, list[str], list[Any]]
_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)


@cache
def load_source(name: str) -> str:
    lua = resources.files(__package__).joinpath("lua")

    def include(match: re.Match[str]) -> str:
        return lua.joinpath("include", f"{match.group(1)}.lua").read_text()

    return _INCLUDE.sub(include, lua.joinpath(f"{name}.lua").read_text())


@cache
def script_source(name: str) -> str:
    """The script as Redis runs it: the shebang with its flags (it must be the very first
    line), then load_source(name)."""
    flags = SCRIPT_FLAGS[name]
    return (f"#!lua flags={flags}" if flags else "#!lua") + "\n" + load_source(name)


class Scripts:
    """The registered scripts of one client."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._by_name: dict[str, AsyncScript] = {
            name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script on NOSCRIPT (a restarted or flushed server).
        Calls evalsha directly: AsyncScript.__call__ costs a few microseconds more."""
        script = self._by_name[name]
        try:
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            script.sha = await self._redis.script_load(script.script)
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
