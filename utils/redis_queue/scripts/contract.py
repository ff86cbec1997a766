"""Each Lua script's declaration (its KEYS and ARGV by name, its flags), the codes its
replies carry, and a typed builder per script: named arguments in, one ScriptCall out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from ..keys import QueueKeys, TaskTypes, validate_task_types
from ..models import RetryPolicy

if TYPE_CHECKING:
    from ..new_task import NewTask

# Where a completion's result goes: the hash (""), its blob key ("key") or, already put
# there, the queue's BlobStore ("ext").
BlobMode = Literal["", "key", "ext"]


class Code(IntEnum):
    """The negative first element of a script's error reply (lua/include/common.lua)."""

    NOT_FOUND = -1
    NOT_PROCESSING = -2
    LEASE_LOST = -3
    BAD_STATE = -4
    WRONGTYPE = -10
    BAD_ARGUMENT = -11
    SERVED_UNKNOWN = -12


class FailOutcome(IntEnum):
    """fail.lua's (and a settle_many fail item's) success codes."""

    RETRIED = 1
    DEAD_LETTERED = 2
    FAILED = 3  # the DLQ is off
    CANCELLED = 4  # a cancel was requested while it ran


BACKED_OFF = 5  # a back-off (a settle_many 'b' item): the task is pending again


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
        # The same check as named.keys() == set(self.args) (the names are distinct),
        # without a set per call: this runs once per enqueue.
        try:
            args = [named[name] for name in self.args]
        except KeyError:
            args = []
        if len(args) != len(named) or len(args) != len(self.args):
            raise TypeError(f"{self.name}.lua takes {self.args}, got {tuple(named)}")
        args.extend(rest)
        return ScriptCall(self, _key_list(keys, self.name), args)


@dataclass(frozen=True, slots=True)
class ScriptCall:
    script: Script
    keys: tuple[str, ...]
    args: list[Any]


@cache
def _key_list(keys: QueueKeys, script: str) -> tuple[str, ...]:
    # Keyed by the script's name: hashing the Script itself hashes all its fields.
    return tuple(getattr(keys, name) for name in SCRIPTS[script].keys)


_FAIL_POLICY = ("first_immediate", "base_ms", "factor", "cap_ms")
CANCEL = Script("cancel", ("delayed", "cancelled", "stats"), ("base", "id", "request", "events"))
CANCEL_TYPE = Script(
    "cancel_type",
    ("delayed", "cancelled", "stats"),
    ("base", "type", "where", "after", "limit", "events"),
)
_EVERY_STATE = ("processing", "delayed", "completed", "failed", "cancelled", "dlq", "dlq_order")
DELETE = Script("delete", (*_EVERY_STATE, "stats"), ("base", "id", "force", "events"))
PURGE = Script(
    "purge",
    ("delayed", "completed", "failed", "cancelled", "dlq", "dlq_order", "types", "stats"),
    ("base", "state", "limit", "events"),
)
CLAIM = Script(
    "claim",
    (
        *("processing", "delayed", "stats", "types", "dlq", "failed", "cancelled", "dlq_order"),
        "paused",
    ),
    (
        *("base", "worker_id", "lease_ms", "count", "max_lease_losses", "use_dlq", "suspects"),
        *("max_score", "want_head", "request", "blocked", "events"),
    ),
    rest="task types served",
)
CLEAR_FINISHED = Script("clear_finished", ("completed", "cancelled"), ("base", "age_ms", "limit"))
COMPLETE = Script(
    "complete",
    ("processing", "completed", "cancelled", "stats"),
    ("base", "id", "token", "keep_ms", "result", "blob", "events"),
)
ENQUEUE = Script(
    "enqueue", ("delayed", "stats", "types"), ("base", "events"), rest="tasks", flags=""
)
EXTEND = Script("extend", ("processing",), ("base", "id", "token", "lease_ms"))
EMIT = Script("emit", ("processing",), ("base", "id", "token", "max_len", "ttl_ms"), rest="entries")
FAIL = Script(
    "fail",
    ("processing", "delayed", "dlq", "failed", "cancelled", "stats", "dlq_order"),
    (
        *("base", "id", "token", "retry", "use_dlq", *_FAIL_POLICY, "jitter", "delay_ms"),
        *("max_retries", "corrupt", "error", "events"),
    ),
)
EXTEND_PERMITS = Script("extend_permits", ("limits",), ("base", "lease_ms"), rest="items")
PAUSE = Script("pause", ("paused",), ("target",))
PERMIT = Script("permit", ("limits",), ("base", "lease_ms"), rest="tasks")
PURGE_DLQ = Script("purge_dlq", ("dlq", "dlq_order"), ("base", "limit", "events"))
RESUME = Script("resume", ("paused", "types"), ("base", "target"))
RELEASE = Script("release", ("processing", "stats"), ("base", "id", "token", "events"))
RETRY_DLQ = Script(
    "retry_dlq", ("dlq", "failed", "stats", "dlq_order"), ("base", "id", "events"), flags=""
)
SCHEDULE_ADVANCE = Script(
    "schedule_advance",
    ("schedule_due", "schedule_last"),
    ("name", "expected", "next_due", "last_due", "skipped"),
)
# Adds data: refused whole under maxmemory like enqueue (no allow-oom).
SCHEDULE_SET = Script(
    "schedule_set", ("schedules", "schedule_due"), ("name", "definition", "first_due"), flags=""
)
SCHEDULES_DUE = Script(
    "schedules_due", ("schedules", "schedule_due"), ("limit",), flags="no-writes"
)
UNSCHEDULE = Script("unschedule", ("schedules", "schedule_due", "schedule_last"), ("name",))
SETTLE_MANY = Script(
    "settle_many",
    ("processing", "completed", "cancelled", "delayed", "dlq", "failed", "stats", "dlq_order"),
    ("base", "keep_ms", "use_dlq", *_FAIL_POLICY, "max_retries", "events"),
    rest="items",
)
UNPERMIT = Script("unpermit", ("limits",), ("base", "pause_ms", "pause_keys"), rest="items")
SIZES = Script(
    "sizes",
    ("processing", "delayed", "completed", "failed", "cancelled", "dlq", "stats", "types"),
    ("base",),
    flags="no-writes",
)
# Replaces this worker's entry and prunes a bounded number of silent ones.
WORKER_BEAT = Script(
    "worker_beat",
    ("workers", "worker_beats"),
    ("worker_id", "info", "prune_ms", "mode", "dead_after", "takeover_pid"),
)
SCRIPTS = {
    s.name: s
    for s in (
        CANCEL,
        CANCEL_TYPE,
        CLAIM,
        CLEAR_FINISHED,
        COMPLETE,
        DELETE,
        EMIT,
        ENQUEUE,
        EXTEND,
        EXTEND_PERMITS,
        FAIL,
        PAUSE,
        PERMIT,
        PURGE,
        PURGE_DLQ,
        RELEASE,
        RESUME,
        RETRY_DLQ,
        SCHEDULE_ADVANCE,
        SCHEDULE_SET,
        SCHEDULES_DUE,
        SETTLE_MANY,
        SIZES,
        UNPERMIT,
        UNSCHEDULE,
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


def enqueue(keys: QueueKeys, tasks: Sequence[NewTask], *, events: int) -> ScriptCall:
    """Three arguments per task: its header line, its meta JSON ('' = none), its payload.
    `events` (here and in every builder of a task transition): the events stream's
    MAXLEN, 0 = write no events. The three go as bytes: redis-py passes bytes through,
    where each str costs its encoder's Python-level checks (a third of packing a bulk
    call)."""
    rest: list[Any] = []
    for t in tasks:
        retries = "-" if t.stored_max_retries is None else t.stored_max_retries
        header = f"{t.task_id} {t.task_type} {t.priority} {retries} {t.delay_ms} {t.timeout_ms}"
        if t.limits:
            header += " l=" + ",".join(t.limits)
        if t.cost_tokens is not None:
            header += f" c={t.cost_tokens}"
        if t.group is not None:
            header += f" g={t.group}"
        if t.blob_ref is not None:
            header += f" e={t.blob_ref}"
        elif t.blob:
            header += " b=1"
        if t.unique_ms:
            header += f" u={t.unique_ms}:{t.digest}"
        if t.debounce:
            header += f" d={t.digest}"
        rest.append(header.encode())
        rest.append(t.meta_text.encode())
        rest.append(b"" if t.blob_ref is not None else t.payload_text.encode())
    return ENQUEUE.call(keys, {"base": keys.base, "events": events}, rest)


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
    max_score: int | None = None,
    want_head: bool = False,
    request: str = "",
    blocked: Sequence[str] = (),
    events: int,
    send_served: bool = False,
) -> ScriptCall:
    """More than SERVED_INLINE_MAX task types go as the digest of their set, which
    claim.lua keeps in Redis: the list itself only with send_served (the first claim, or
    after ServedTypesUnknown)."""
    named = {
        "base": keys.base,
        "worker_id": worker_id,
        "lease_ms": lease_ms,
        "count": count,
        "max_lease_losses": max_lease_losses,
        "use_dlq": _flag(use_dlq),
        "suspects": _flag(suspects),
        "max_score": "" if max_score is None else max_score,
        "want_head": _flag(want_head),
        "request": request,
        "blocked": " ".join(blocked),
        "events": events,
    }
    if len(task_types) <= SERVED_INLINE_MAX:
        return CLAIM.call(keys, named, task_types)
    ref = served_ref(task_types)
    return CLAIM.call(keys, named, [ref, *task_types] if send_served else [ref])


SERVED_INLINE_MAX = 8  # claim.lua's PER_TYPE_MAX: longer lists are kept in Redis


def served_ref(task_types: Sequence[str]) -> str:
    """'@' and the digest of a set of task types (claim.lua's `served:<digest>`)."""
    if not isinstance(task_types, TaskTypes):
        task_types = validate_task_types(task_types)
    return "@" + task_types.digest


def complete(
    keys: QueueKeys,
    *,
    task_id: str,
    token: str,
    keep_ms: int,
    result_text: str,
    result_blob: BlobMode = "",
    events: int,
) -> ScriptCall:
    """`result_blob` "key": the result goes into its blob key; "ext": it is in the
    queue's BlobStore and `result_text` is its reference, "<size>:<key>"."""
    named = {"base": keys.base, "id": task_id, "token": token, "keep_ms": keep_ms}
    blob = {"": "0", "key": "1", "ext": "e"}[result_blob]
    return COMPLETE.call(keys, {**named, "result": result_text, "blob": blob, "events": events})


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
    events: int,
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
        "events": events,
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
    tokens_used: int | None = None
    pause_ms: int | None = None  # a back-off: pause these limits (none: the task's) this long
    pause_limits: tuple[str, ...] = ()
    result_blob: BlobMode = ""  # claim-check, as in complete()


def settle_many(
    keys: QueueKeys,
    *,
    keep_ms: int,
    use_dlq: bool,
    policy: RetryPolicy,
    max_retries: int,
    items: Sequence[SettleItem],
    events: int,
) -> ScriptCall:
    named = {"base": keys.base, "keep_ms": keep_ms, "use_dlq": _flag(use_dlq)}
    named.update(_policy(policy), max_retries=max_retries, events=events)
    rest: list[Any] = []
    for item in items:
        used = item.tokens_used
        if item.pause_ms is not None:
            rest += [
                "b",
                item.task_id,
                item.token,
                f"{item.pause_ms} {','.join(item.pause_limits)}",
            ]
        elif item.error_text is None:
            if used is None:
                op = {"": "c", "key": "C", "ext": "E"}[item.result_blob]
                rest += [op, item.task_id, item.token, item.result_text]
            else:
                op = {"": "u", "key": "U", "ext": "V"}[item.result_blob]
                rest += [op, item.task_id, item.token, used, item.result_text]
        else:
            delay = _delay_ms(item.delay) or "-"
            options = f"{_flag(item.retry)} 0 {policy.jitter_multiplier()!r} {delay}"
            if used is not None:
                options += f" {used}"
            rest += ["f", item.task_id, item.token, options, item.error_text]
    return SETTLE_MANY.call(keys, named, rest)


def extend(keys: QueueKeys, *, task_id: str, token: str, lease_ms: int) -> ScriptCall:
    named = {"base": keys.base, "id": task_id, "token": token, "lease_ms": lease_ms}
    return EXTEND.call(keys, named)


@dataclass(frozen=True, slots=True)
class OutputEntry:
    """One entry of a task's output stream, for emit.lua: a kind ("text", "log", ...),
    its text, and for a progress entry the fraction done (0..1)."""

    kind: str
    text: str
    fraction: float | None = None


def emit(
    keys: QueueKeys,
    *,
    task_id: str,
    token: str,
    max_len: int,
    ttl_ms: int,
    entries: Sequence[OutputEntry],
) -> ScriptCall:
    named = {"base": keys.base, "id": task_id, "token": token, "max_len": max_len}
    rest: list[Any] = []
    for entry in entries:
        fraction = "" if entry.fraction is None else repr(float(entry.fraction))
        rest += [entry.kind, fraction, entry.text]
    return EMIT.call(keys, {**named, "ttl_ms": ttl_ms}, rest)


def release(keys: QueueKeys, *, task_id: str, token: str, events: int) -> ScriptCall:
    named = {"base": keys.base, "id": task_id, "token": token, "events": events}
    return RELEASE.call(keys, named)


def cancel(keys: QueueKeys, *, task_id: str, request: str = "", events: int) -> ScriptCall:
    named = {"base": keys.base, "id": task_id, "request": request, "events": events}
    return CANCEL.call(keys, named)


def retry_dlq(keys: QueueKeys, *, task_id: str, events: int) -> ScriptCall:
    return RETRY_DLQ.call(keys, {"base": keys.base, "id": task_id, "events": events})


def purge_dlq(keys: QueueKeys, *, limit: int, events: int) -> ScriptCall:
    return PURGE_DLQ.call(keys, {"base": keys.base, "limit": limit, "events": events})


def clear_finished(keys: QueueKeys, *, age_ms: int, limit: int) -> ScriptCall:
    return CLEAR_FINISHED.call(keys, {"base": keys.base, "age_ms": age_ms, "limit": limit})


def sizes(keys: QueueKeys) -> ScriptCall:
    return SIZES.call(keys, {"base": keys.base})


def worker_beat(
    keys: QueueKeys,
    *,
    worker_id: str,
    info: str,
    prune_ms: int,
    mode: str = "beat",
    dead_after: int = 0,
    takeover_pid: int | None = None,
) -> ScriptCall:
    """`mode` is 'beat', 'leave', or 'join' (refused while a live worker holds the id:
    one not silent for `dead_after` of its beat intervals, nor `takeover_pid`)."""
    named = {"worker_id": worker_id, "info": info, "prune_ms": prune_ms, "mode": mode}
    takeover = "" if takeover_pid is None else str(takeover_pid)
    return WORKER_BEAT.call(keys, {**named, "dead_after": dead_after, "takeover_pid": takeover})
