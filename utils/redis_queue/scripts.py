"""The script contract: every Lua script's KEYS and ARGV, built from named arguments, its
reply parsed into a typed value, its error codes mapped to exceptions, and the one way
scripts are loaded and run. No other module builds KEYS/ARGV or reads a reply by
position; tests/test_script_contract.py checks each declaration below against the header
of its lua/<name>.lua (key names, argument names, their order).

Loading: `--@include name` lines are replaced by lua/include/<name>.lua, and what Redis
runs (`script_source`) is a shebang with the script's flags, then the file. Scripts that
only drain or shrink the queue carry `allow-oom`, so under `maxmemory` with `noeviction`
workers can still claim, settle and clean up; the scripts that add work (enqueue,
retry_dlq) carry none, so Redis refuses them whole before their first command. `sizes` is
`no-writes`. Every call is EVALSHA; on NOSCRIPT (a restarted or flushed server) the source
is loaded and the call sent once more.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, NoReturn

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from . import codec
from .connection import translate_error
from .errors import (
    CorruptQueue,
    LeaseLost,
    QueueError,
    TaskNotFound,
    TaskNotProcessing,
    TaskStateError,
)
from .keys import QueueKeys
from .models import RetryPolicy, TaskPriority, TaskState
from .snapshot import QueueSnapshot

if TYPE_CHECKING:
    from .new_task import NewTask

__all__ = [
    "SCRIPTS",
    "CancelOutcome",
    "Code",
    "FailOutcome",
    "Script",
    "ScriptCall",
    "Scripts",
    "load_source",
    "pending_band",
    "raise_for_code",
    "run_pipelined",
    "run_sync",
    "script_source",
]


class Code(IntEnum):
    """The negative first element of a script's error reply (lua/include/common.lua)."""

    NOT_FOUND = -1
    NOT_PROCESSING = -2
    LEASE_LOST = -3
    BAD_STATE = -4
    WRONGTYPE = -10
    BAD_ARGUMENT = -11


class FailOutcome(IntEnum):
    """fail.lua's (and a settle_many fail item's) success codes."""

    RETRIED = 1
    DEAD_LETTERED = 2
    FAILED = 3  # the DLQ is off
    CANCELLED = 4  # a cancel was requested while it ran


class CancelOutcome(IntEnum):
    """cancel.lua's success codes."""

    CANCELLED = 1
    REQUESTED = 2  # it was running: its worker was told


@dataclass(frozen=True, slots=True)
class Script:
    """One lua/<name>.lua: its KEYS (QueueKeys attribute names), its named ARGV in order,
    what the variable tail after them holds ("" = none), and its Redis 7 flags."""

    name: str
    keys: tuple[str, ...]
    args: tuple[str, ...]
    rest: str = ""
    flags: str = "allow-oom"

    def call(self, keys: QueueKeys, named: dict[str, Any], rest: Iterable[Any] = ()) -> ScriptCall:
        if named.keys() != set(self.args):
            raise TypeError(f"{self.name}.lua takes {self.args}, got {tuple(named)}")
        args = [named[name] for name in self.args]
        args.extend(rest)
        return ScriptCall(self, _key_list(keys, self), args)


@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: Script
    keys: tuple[str, ...]
    args: list[Any]


@cache
def _key_list(keys: QueueKeys, script: Script) -> tuple[str, ...]:
    return tuple(getattr(keys, name) for name in script.keys)


_FAIL_POLICY = ("first_immediate", "base_ms", "factor", "cap_ms")
CANCEL = Script("cancel", ("delayed", "cancelled", "stats"), ("base", "id"))
CLAIM = Script(
    "claim",
    ("processing", "delayed", "stats", "types", "dlq", "failed", "cancelled"),
    ("base", "worker_id", "lease_ms", "count", "max_lease_losses", "use_dlq", "suspects"),
    rest="task types served",
)
CLEAR_FINISHED = Script("clear_finished", ("completed", "cancelled"), ("base", "age_ms", "limit"))
COMPLETE = Script(
    "complete",
    ("processing", "completed", "cancelled", "stats"),
    ("base", "id", "token", "keep_ms", "result"),
)
ENQUEUE = Script("enqueue", ("delayed", "stats", "types"), ("base",), rest="tasks", flags="")
EXTEND = Script("extend", ("processing",), ("base", "id", "token", "lease_ms"))
FAIL = Script(
    "fail",
    ("processing", "delayed", "dlq", "failed", "cancelled", "stats"),
    (
        *("base", "id", "token", "retry", "use_dlq", *_FAIL_POLICY, "jitter", "delay_ms"),
        *("max_retries", "corrupt", "error"),
    ),
)
PURGE_DLQ = Script("purge_dlq", ("dlq",), ("base", "limit"))
RELEASE = Script("release", ("processing", "stats"), ("base", "id", "token"))
RETRY_DLQ = Script("retry_dlq", ("dlq", "failed", "stats"), ("base", "id"), flags="")
SETTLE_MANY = Script(
    "settle_many",
    ("processing", "completed", "cancelled", "delayed", "dlq", "failed", "stats"),
    ("base", "keep_ms", "use_dlq", *_FAIL_POLICY, "max_retries"),
    rest="items",
)
SIZES = Script(
    "sizes",
    ("processing", "delayed", "completed", "failed", "cancelled", "dlq", "stats", "types"),
    ("base",),
    flags="no-writes",
)
# Replaces this worker's entry and prunes a bounded number of silent ones.
WORKER_BEAT = Script(
    "worker_beat", ("workers", "worker_beats"), ("worker_id", "info", "prune_ms", "mode")
)
SCRIPTS = {
    s.name: s
    for s in (
        CANCEL,
        CLAIM,
        CLEAR_FINISHED,
        COMPLETE,
        ENQUEUE,
        EXTEND,
        FAIL,
        PURGE_DLQ,
        RELEASE,
        RETRY_DLQ,
        SETTLE_MANY,
        SIZES,
        WORKER_BEAT,
    )
}


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _delay_ms(delay: float | None) -> str:
    return "" if delay is None else str(max(0, int(delay * 1000)))


def _policy(policy: RetryPolicy) -> dict[str, str]:
    return {
        "first_immediate": _flag(policy.first_immediate),
        "base_ms": str(int(policy.base_seconds * 1000)),
        "factor": repr(float(policy.factor)),
        "cap_ms": str(int(policy.cap_seconds * 1000)),
    }


# -- builders: named arguments in, one ScriptCall out ------------------------------------


def enqueue(keys: QueueKeys, tasks: Sequence[NewTask]) -> ScriptCall:
    """Three arguments per task: its header line, its meta JSON ('' = none), its payload."""
    rest: list[Any] = []
    for t in tasks:
        retries = "-" if t.stored_max_retries is None else t.stored_max_retries
        rest.append(f"{t.task_id} {t.task_type} {t.priority} {retries} {t.delay_ms} {t.timeout_ms}")
        rest.append(t.meta_text)
        rest.append(t.payload_text)
    return ENQUEUE.call(keys, {"base": keys.base}, rest)


def claim(
    keys: QueueKeys,
    *,
    worker_id: str,
    lease_ms: int,
    count: int,
    max_lease_losses: int,
    use_dlq: bool,
    suspects: bool,
    task_types: Sequence[str],
) -> ScriptCall:
    named = {
        "base": keys.base,
        "worker_id": worker_id,
        "lease_ms": lease_ms,
        "count": count,
        "max_lease_losses": max_lease_losses,
        "use_dlq": _flag(use_dlq),
        "suspects": _flag(suspects),
    }
    return CLAIM.call(keys, named, task_types)


def complete(
    keys: QueueKeys, *, task_id: str, token: str, keep_ms: int, result_text: str
) -> ScriptCall:
    named = {"base": keys.base, "id": task_id, "token": token, "keep_ms": keep_ms}
    return COMPLETE.call(keys, {**named, "result": result_text})


def fail(
    keys: QueueKeys,
    *,
    task_id: str,
    token: str,
    retry: bool,
    use_dlq: bool,
    policy: RetryPolicy,
    delay: float | None,
    max_retries: int,
    corrupt: bool,
    error_text: str,
) -> ScriptCall:
    named = {
        "base": keys.base,
        "id": task_id,
        "token": token,
        "retry": _flag(retry),
        "use_dlq": _flag(use_dlq),
        **_policy(policy),
        "jitter": repr(policy.jitter_multiplier()),
        "delay_ms": _delay_ms(delay),
        "max_retries": max_retries,
        "corrupt": _flag(corrupt),
        "error": error_text,
    }
    return FAIL.call(keys, named)


@dataclass(frozen=True, slots=True)
class SettleItem:
    """One settle_many item: a completion (`error_text` None) or a failure."""

    task_id: str
    token: str
    result_text: str = ""
    error_text: str | None = None
    retry: bool = True
    delay: float | None = None


def settle_many(
    keys: QueueKeys,
    *,
    keep_ms: int,
    use_dlq: bool,
    policy: RetryPolicy,
    max_retries: int,
    items: Sequence[SettleItem],
) -> ScriptCall:
    named = {"base": keys.base, "keep_ms": keep_ms, "use_dlq": _flag(use_dlq)}
    named.update(_policy(policy), max_retries=max_retries)
    rest: list[Any] = []
    for item in items:
        if item.error_text is None:
            rest += ["c", item.task_id, item.token, item.result_text]
        else:
            delay = _delay_ms(item.delay) or "-"
            options = f"{_flag(item.retry)} 0 {policy.jitter_multiplier()!r} {delay}"
            rest += ["f", item.task_id, item.token, options, item.error_text]
    return SETTLE_MANY.call(keys, named, rest)


def extend(keys: QueueKeys, *, task_id: str, token: str, lease_ms: int) -> ScriptCall:
    named = {"base": keys.base, "id": task_id, "token": token, "lease_ms": lease_ms}
    return EXTEND.call(keys, named)


def release(keys: QueueKeys, *, task_id: str, token: str) -> ScriptCall:
    return RELEASE.call(keys, {"base": keys.base, "id": task_id, "token": token})


def cancel(keys: QueueKeys, *, task_id: str) -> ScriptCall:
    return CANCEL.call(keys, {"base": keys.base, "id": task_id})


def retry_dlq(keys: QueueKeys, *, task_id: str) -> ScriptCall:
    return RETRY_DLQ.call(keys, {"base": keys.base, "id": task_id})


def purge_dlq(keys: QueueKeys, *, limit: int) -> ScriptCall:
    return PURGE_DLQ.call(keys, {"base": keys.base, "limit": limit})


def clear_finished(keys: QueueKeys, *, age_ms: int, limit: int) -> ScriptCall:
    return CLEAR_FINISHED.call(keys, {"base": keys.base, "age_ms": age_ms, "limit": limit})


def sizes(keys: QueueKeys) -> ScriptCall:
    return SIZES.call(keys, {"base": keys.base})


def worker_beat(
    keys: QueueKeys, *, worker_id: str, info: str, prune_ms: int, leave: bool = False
) -> ScriptCall:
    named = {"worker_id": worker_id, "info": info, "prune_ms": prune_ms}
    return WORKER_BEAT.call(keys, {**named, "mode": "leave" if leave else "beat"})


# -- replies --------------------------------------------------------------------------------


# Pending scores (lua/include/common.lua): a task of priority p scores in
# [-p * BAND, (1 - p) * BAND), so each priority is one score band of its type's set.
PENDING_BAND = 10**15


def pending_band(priority: int) -> tuple[int, int]:
    """The [low, high) score range of one priority in a pending set."""
    return -priority * PENDING_BAND, (1 - priority) * PENDING_BAND


def enqueue_reply(reply: list[Any]) -> tuple[int, list[Any]]:
    """(now_ms, per task: 1 created, or the existing task's flat HGETALL)."""
    return int(reply[0]), reply[1:]


def fail_state(reply: list[Any]) -> TaskState:
    """A fail reply's outcome as the task's new state."""
    outcome = FailOutcome(int(reply[0]))
    if outcome is FailOutcome.RETRIED:
        return TaskState.PENDING if int(reply[1]) <= 0 else TaskState.DELAYED
    return {
        FailOutcome.DEAD_LETTERED: TaskState.DEAD_LETTER,
        FailOutcome.FAILED: TaskState.FAILED,
        FailOutcome.CANCELLED: TaskState.CANCELLED,
    }[outcome]


def settle_state(reply: list[Any], task_id: str) -> TaskState | QueueError:
    """One settle_many item's reply: the new state, or the error that refused it."""
    if int(reply[0]) < 0:
        try:
            raise_for_code(reply, task_id, "settle")
        except QueueError as exc:
            return exc
    if len(reply) == 2 and int(reply[0]) == 0:  # complete: {0, now_ms}
        return TaskState.COMPLETED
    return fail_state(reply)


@dataclass(frozen=True, slots=True)
class ClaimReply:
    now_ms: int
    next_event_ms: int  # earliest delayed due time or lease deadline; -1 = none
    served: list[str]  # the task types the claim considered
    rows: list[tuple[str, int, list[Any]]]  # (task id, lease token, flat HGETALL)


def claim_reply(reply: list[Any]) -> ClaimReply:
    rows = [(raw_id.decode(), int(token), flat) for raw_id, token, flat in reply[3:]]
    served = [codec.as_text(t) for t in reply[2]]
    return ClaimReply(int(reply[0]), int(reply[1]), served, rows)


def cancel_outcome(reply: list[Any]) -> CancelOutcome:
    return CancelOutcome(int(reply[0]))


def sizes_reply(reply: list[Any]) -> QueueSnapshot:
    """sizes' {processing, delayed, completed, failed, cancelled, dlq, per type, stats}."""
    processing, delayed, completed, failed, cancelled, dlq = (int(v) for v in reply[:6])
    by_priority = {p.name.lower(): 0 for p in TaskPriority}
    by_type: dict[str, int] = {}
    per_type = reply[6]  # type, pending, then one count per priority, LOW first
    for i in range(0, len(per_type), 6):
        by_type[codec.as_text(per_type[i])] = int(per_type[i + 1])
        for p in TaskPriority:
            by_priority[p.name.lower()] += int(per_type[i + 2 + p.value])
    counters = {key: int(value) for key, value in codec.text_fields(reply[7]).items()}
    sizes = {
        "pending": sum(by_type.values()),
        "delayed": delayed,
        "processing": processing,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "dlq": dlq,
    }
    return QueueSnapshot(sizes, by_priority, by_type, counters)


def extend_cancel_requested(reply: list[Any]) -> bool:
    """extend's reply {0, deadline_ms, cancel}: whether a cancel was requested."""
    return int(reply[2]) == 1


def removed_count(reply: list[Any]) -> int:
    """clear_finished's and purge_dlq's {removed}."""
    return int(reply[0])


def raise_for_code(reply: list[Any], task_id: str, action: str) -> NoReturn:
    """The one place a script's error reply becomes an exception."""
    code = int(reply[0])
    detail = [codec.as_text(v) for v in reply[1:]]
    state = detail[0] if detail else ""
    if code == Code.NOT_FOUND:
        raise TaskNotFound(task_id)
    if code == Code.NOT_PROCESSING:
        message = f"cannot {action} task {task_id!r}: it is {state or 'gone'}, not processing"
        raise TaskNotProcessing(task_id, state, message)
    if code == Code.LEASE_LOST:
        raise LeaseLost(
            task_id,
            state,
            f"cannot {action} task {task_id!r}: its lease was lost "
            f"(state {state or 'unknown'}, current lease {detail[1] if len(detail) > 1 else '-'})",
        )
    if code == Code.BAD_STATE:
        raise TaskStateError(task_id, state, f"cannot {action} task {task_id!r} in state {state!r}")
    if code == Code.WRONGTYPE:
        raise CorruptQueue(f"key {detail[0]!r} holds a {detail[1]}, not what the queue expects")
    if code == Code.BAD_ARGUMENT:
        raise QueueError(f"{action} refused a malformed argument {detail[0]}={detail[1]!r}")
    raise QueueError(f"unexpected reply {reply!r} to {action} of {task_id!r}")


# -- loading and running ------------------------------------------------------------------

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
