"""JSON in and out of Redis: payloads, results and the task hash.

Blobs (payload, result, error) are stored in the task hash as chunks of at most 64 bytes
(`payload`, `payload.1`, ...; the scripts cut them). Redis keeps a hash whose values are
all <= 64 bytes (hash-max-listpack-value) as a compact listpack; one longer value turns
the whole hash into a hashtable, which costs ~300 more bytes per task. A payload or
result above the queue's blob threshold is stored claim-check instead: in a string key of
its own, the hash holding `payload.blob` / `result.blob` = its size in bytes; whoever
reads the task whole puts its value back as the `payload` / `result` field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from .errors import PayloadTooLarge, SerializationError
from .models import RedisTask, TaskState

__all__ = ["MAX_DEPTH", "check_round_trip", "decode_task", "dumps", "error_text", "iso_from_ms"]

MAX_ERROR_CHARS = 8192


# Containers inside containers: a decoder's recursion (about 1,000 frames in CPython)
# stays far away, so a worker can always read back what was accepted.
MAX_DEPTH = 64
_CONTAINERS = (dict, list, tuple)  # a tuple: isinstance() checks it faster than a union

# json.dumps() with these arguments builds an encoder per call: one, shared, encodes the same.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _not_serialisable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# JSONEncoder.encode() still makes a C encoder (and a dict for its circular-reference check)
# per call, about half of a small payload's cost. One C encoder, made once, encodes the same
# text; circular values never reach it (check_round_trip refuses them as too deep first).
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(
        None,
        _not_serialisable,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
)


def _encode(value: Any) -> str:
    if _C_ENCODER is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


def dumps(value: Any, what: str, limit: int | None = None) -> str:
    """Compact ASCII JSON (so chunks split on character boundaries), or a typed error.
    Refuses what would not come back as given (see check_round_trip)."""
    if value is None and (limit is None or limit >= 4):  # what most handlers return
        return "null"
    check_round_trip(value, what)
    try:
        text = _encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} is not JSON-serialisable: {exc}") from exc
    if limit is not None and len(text) > limit:
        raise PayloadTooLarge(f"{what} is {len(text)} bytes of JSON; the limit is {limit}")
    return text


def check_round_trip(value: Any, what: str) -> None:
    """SerializationError for JSON that would not decode to what was given: an object key
    that is not a string (JSON turns 1 into "1", so {1: "a", "1": "b"} would lose a key),
    or containers nested deeper than MAX_DEPTH. Tuples are accepted; they come back as
    lists."""
    if type(value) is dict:  # the common case: a flat object, checked without a stack
        for key, item in value.items():
            if type(key) is not str or isinstance(item, _CONTAINERS):
                break
        else:
            return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise SerializationError(
                        f"{what} has the key {key!r} ({type(key).__name__}): JSON object keys "
                        f"are strings, so it would come back as {json.dumps(str(key))}"
                    )
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise SerializationError(f"{what} is nested more than {MAX_DEPTH} levels deep")
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, dict | list | tuple)
        )


def error_text(error: str) -> str:
    """An error message as stored: at most MAX_ERROR_CHARS, ASCII only (the script cuts
    it into 64-byte chunks, which must not split a character)."""
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "... [truncated]"
    return error.encode("ascii", "backslashreplace").decode("ascii")


def join_blob(fields: dict[str, str], name: str) -> str | None:
    first = fields.get(name)
    if first is None:
        return None
    return _joined(fields, name, first)


def _joined(fields: dict[str, str], name: str, first: str) -> str:
    parts = [first]
    i = 1
    while (part := fields.get(f"{name}.{i}")) is not None:
        parts.append(part)
        i += 1
    return "".join(parts)


def iso_from_ms(value: str | None) -> str | None:
    if not value:
        return None
    return _iso_text(value)


@lru_cache(maxsize=1024)
def _iso_text(value: str) -> str:
    # By the text as stored: a decoded task's timestamps hit the cache without an int().
    return _iso(int(value))


@lru_cache(maxsize=1024)
def _iso(ms: int) -> str:
    # Tasks enqueued or claimed together share their millisecond: format it once.
    return datetime.fromtimestamp(ms / 1000).isoformat()


def as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def text_fields(raw: Mapping[Any, Any] | list[Any]) -> dict[str, str]:
    """A hash as returned by HGETALL (a dict, or a flat list from a script) as text."""
    if isinstance(raw, Mapping):
        return {as_text(k): as_text(v) for k, v in raw.items()}
    # Every claimed task comes through here: all bytes of valid UTF-8 (the common case)
    # are decoded in C, without a Python call per item.
    try:
        items = list(map(bytes.decode, raw))
    except (TypeError, UnicodeDecodeError):
        items = [as_text(v) for v in raw]
    it = iter(items)
    return dict(zip(it, it, strict=True))


def blob_sizes(fields: Mapping[str, str]) -> dict[str, int]:
    """What of a task is stored claim-check: "payload"/"result" -> its size in bytes."""
    return {
        name: int(fields[f"{name}.blob"])
        for name in ("payload", "result")
        if f"{name}.blob" in fields
    }


# State names to states: a dict lookup, not an Enum call per decoded task.
_STATES: dict[str, TaskState] = {state.value: state for state in TaskState}
_BLOB_FIELDS = ("payload.blob", "result.blob")


def decode_task(
    task_id: str, fields: dict[str, str], default_max_retries: int, *, whole: bool = True
) -> RedisTask:
    """Build a RedisTask from its hash. Counters absent from the hash are 0 and an absent
    max_retries is the queue's. Raises ValueError naming the field when the record is
    corrupt (missing fields, wrong types, payload or result that is not JSON). `whole`:
    a claim-checked payload or result must have been put back (else the record is
    corrupt); not whole, it is left out (payload {}, result None; see RedisTask.blobs).
    Every claimed task is decoded here, so the common case (no blob, no result, no
    error, one or two payload chunks) takes the short way: one lookup per field."""
    field = "?"
    get = fields.get
    try:
        field = "payload"
        blobs: dict[str, int] = {}
        if _BLOB_FIELDS[0] in fields or _BLOB_FIELDS[1] in fields:
            blobs = blob_sizes(fields)
            if whole and any(name not in fields for name in blobs):
                raise ValueError("its claim-check blob key is missing")
        payload_text = get("payload")
        if payload_text is None:
            payload = {}
        else:
            if "payload.1" in fields:
                payload_text = _joined(fields, "payload", payload_text)
            payload = json.loads(payload_text)
            if not isinstance(payload, dict):
                raise TypeError(f"a {type(payload).__name__}, not an object")
        field = "result"
        result_text = get("result")
        result = None
        if result_text is not None:
            result = json.loads(_joined(fields, "result", result_text))
        field = "meta"
        meta_text = get("meta")
        meta = json.loads(_joined(fields, "meta", meta_text)) if meta_text else {}
        field = "type"
        task_type = fields["type"]
        field = "prio"
        priority = int(fields["prio"])
        field = "state"
        state_text = fields["state"]
        state = _STATES.get(state_text)
        if state is None:
            raise ValueError(f"{state_text!r} is not a valid TaskState")
        field = "counters"
        lease = get("lease")
        error = get("error")
        timeout = get("timeout")
        limits = get("limits")
        cost = get("cost")
        progress = get("progress")
        return RedisTask(
            task_id=task_id,
            task_type=task_type,
            payload=payload,
            priority=priority,
            state=state,
            retry_count=int(get("retries", 0)),
            max_retries=int(get("max_retries", default_max_retries)),
            created_at=iso_from_ms(get("created")) or "",
            started_at=iso_from_ms(get("started")),
            completed_at=iso_from_ms(get("completed")),
            worker_id=get("worker"),
            error=None if error is None else _joined(fields, "error", error),
            result=result,
            attempts=int(get("attempts", 0)),
            lease_token=int(lease) if lease else None,
            lease_losses=int(get("lease_losses", 0)),
            cancel_requested=get("cancel") == "1",
            timeout=int(timeout) / 1000 if timeout else None,
            meta=meta,
            limits=limits.split() if limits else [],
            cost_tokens=int(cost) if cost else None,
            group=get("group"),
            blobs=blobs,
            progress=float(progress) if progress else None,
            progress_message=get("progress.msg"),
        )
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"corrupt task record {task_id!r}: bad {field} field ({exc})") from exc
