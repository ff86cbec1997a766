"""Hostile and odd input to enqueue and enqueue_many: a typed error (a QueueError) or
success, never another exception, and nothing half-written in Redis. Generated values
(hypothesis) on top of the cases a fault hunt found."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.support.state import assert_every_task_in_one_state
from tests.test_bad_input import assert_refused_without_writes, populate
from utils.redis_queue import (
    InvalidTaskError,
    QueueError,
    RedisTaskQueue,
    SerializationError,
    TaskState,
    codec,
)
from utils.redis_queue.codec import MAX_DEPTH

QueueFactory = Callable[..., RedisTaskQueue]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_a_payload_nested_deeper_than_the_limit_is_refused_and_the_limit_round_trips(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await populate(queue)
    for depth in (MAX_DEPTH + 1, 1000, 100_000):
        deep = _nested(depth)
        await assert_refused_without_writes(
            raw_redis, queue, SerializationError, lambda d=deep: queue.enqueue("deep", "dev", d)
        )
    deep_list: list[Any] = []
    for _ in range(5000):
        deep_list = [deep_list]
    await assert_refused_without_writes(
        raw_redis, queue, SerializationError, lambda: queue.enqueue("deep", "dev", {"l": deep_list})
    )
    await queue.enqueue("ok", "dev", _nested(MAX_DEPTH), priority=3)
    task = await queue.dequeue("w", timeout=1)
    assert task is not None and task.task_id == "ok" and task.payload == _nested(MAX_DEPTH)


async def test_a_task_hash_nested_too_deep_for_the_decoder_is_dead_lettered_not_fatal(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    """Written by hand (or by an older version): the claim dead-letters it with the reason
    and hands out the next task."""
    await queue.enqueue("good", "dev", {})
    await queue.enqueue("bomb", "dev", {}, priority=3)
    await raw_redis.hset(queue.keys.task("bomb"), "payload", "[" * 100_000 + "]" * 100_000)
    claimed = await queue.claim("w", 5)
    assert [t.task_id for t in claimed] == ["good"]
    bomb = await raw_redis.hgetall(queue.keys.task("bomb"))
    assert bomb[b"state"] == b"dead_letter" and b"corrupt task record" in bomb[b"error"]
    await assert_every_task_in_one_state(raw_redis, queue)


@pytest.mark.parametrize(
    "payload",
    [
        {1: "a", "1": "b"},
        {1: "a"},
        {None: 1},
        {True: 1},
        {"nested": {2.5: "x"}},
        {"in_list": [{(1, 2): 3}]},
    ],
    ids=["colliding", "int", "none", "bool", "nested-float", "tuple-in-list"],
)
async def test_a_payload_key_that_is_not_a_string_is_refused(
    queue: RedisTaskQueue, raw_redis: Redis, payload: dict[Any, Any]
) -> None:
    await populate(queue)
    error = await assert_refused_without_writes(
        raw_redis, queue, SerializationError, lambda: queue.enqueue("keys", "dev", payload)
    )
    assert "JSON object keys are strings" in str(error)


@pytest.mark.parametrize("field", ["delay", "timeout"])
@pytest.mark.parametrize("value", [1e308, math.inf, -1, 10 * 365 * 86400 + 1, float("nan")])
async def test_delays_and_timeouts_out_of_range_are_typed_errors(
    queue: RedisTaskQueue, raw_redis: Redis, field: str, value: float
) -> None:
    await populate(queue)
    kwargs = {field: value}
    await assert_refused_without_writes(
        raw_redis, queue, InvalidTaskError, lambda: queue.enqueue("t", "dev", {}, **kwargs)
    )
    await assert_refused_without_writes(
        raw_redis,
        queue,
        InvalidTaskError,
        lambda: queue.enqueue_many([{"task_id": "t", "task_type": "dev", "payload": {}, **kwargs}]),
    )


async def test_a_timeout_too_short_to_store_rounds_up_instead_of_vanishing(
    queue: RedisTaskQueue,
) -> None:
    await queue.enqueue("short", "dev", {}, timeout=0.0004)
    stored = await queue.get_task("short")
    assert stored is not None and stored.timeout == 0.001


@pytest.mark.parametrize(
    "items",
    [
        [{"task_id": "a", "task_type": "dev", "payload": {}}, "not a dict"],
        [{"task_id": "a", "task_type": "dev", "payload": {}}, None],
        [{"task_id": "a", "task_type": "dev", "payload": {}}, {"task_id": "b"}],
        [{"task_id": "a", "task_type": "dev", "payload": {}, "colour": "red"}],
        [[("task_id", "a"), ("task_type", "dev"), ("payload", {})]],
        [{"task_id": "a", "task_type": "dev", "payload": {}, "priority": "urgent"}],
        [{"task_id": "a", "task_type": "dev", "payload": {}, "max_retries": -1}],
    ],
    ids=["string", "none", "missing", "unknown", "pairs", "priority", "retries"],
)
async def test_bad_enqueue_many_items_are_typed_errors_and_nothing_is_written(
    queue: RedisTaskQueue, raw_redis: Redis, items: list[Any]
) -> None:
    await populate(queue)
    await assert_refused_without_writes(
        raw_redis, queue, InvalidTaskError, lambda: queue.enqueue_many(items)
    )


json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
odd_key = st.text(max_size=10) | st.integers() | st.none() | st.booleans() | st.floats()
json_like = st.recursive(
    json_leaf | st.binary(max_size=5) | st.sets(st.integers(), max_size=3),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(odd_key, children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=20,
)
odd_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["", " ", "a b", "{x}", "*", "é", "a" * 300, "HIGH", "high", "2"])
)
enqueue_kwargs = st.fixed_dictionaries(
    {"task_id": odd_scalar, "task_type": odd_scalar, "payload": json_like | odd_scalar},
    optional={
        "priority": odd_scalar,
        "delay": odd_scalar,
        "max_retries": odd_scalar,
        "timeout": odd_scalar,
        "meta": json_like | odd_scalar,
        "surprise": odd_scalar,
    },
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(enqueue_kwargs, min_size=1, max_size=4))
async def test_generated_input_is_a_typed_error_or_a_whole_success(
    make_queue: QueueFactory, raw_redis: Redis, batch: list[dict[str, Any]]
) -> None:
    queue = make_queue()
    await queue.connect()
    created: set[str] = set()
    try:
        for item in batch:
            # an unknown keyword is Python's own TypeError for enqueue(); enqueue_many's
            # items are data, so there it is a typed error (below)
            kwargs = {k: v for k, v in item.items() if k != "surprise"}
            try:
                task = await queue.enqueue(**kwargs)
            except QueueError:
                continue
            stored = await queue.get_task(task.task_id)
            assert stored is not None and stored.state in (TaskState.PENDING, TaskState.DELAYED)
            if task.task_id not in created:  # what was accepted comes back as JSON gives it
                created.add(task.task_id)
                assert stored.payload == json.loads(json.dumps(kwargs["payload"]))
        with contextlib.suppress(QueueError):
            await queue.enqueue_many(batch)
        await assert_every_task_in_one_state(raw_redis, queue)
    finally:
        async for key in raw_redis.scan_iter(match=f"{queue.keys.base}*", count=1000):
            await raw_redis.delete(key)


class _Level(enum.IntEnum):
    HIGH = 2


class _Name(str):
    pass


@settings(max_examples=500, deadline=None)
@given(value=json_like | odd_scalar)
def test_payload_json_is_the_standard_librarys_text_or_a_serialization_error(value: Any) -> None:
    """codec.dumps keeps one C encoder for every call (no circular-reference dict): the
    text must be json.dumps's, and what json.dumps refuses stays a SerializationError."""
    try:
        expected: str | None = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        expected = None
    try:
        text: str | None = codec.dumps(value, "payload")
    except SerializationError:
        text = None
    # check_round_trip refuses more than json.dumps (non-string keys), never less
    assert text is None or text == expected


def test_subclasses_and_cycles_encode_as_the_standard_library_or_are_refused() -> None:
    value = {
        "level": _Level.HIGH,
        "name": _Name("é\u2028"),
        "nested": collections.OrderedDict(a=[1.5]),
    }
    assert codec.dumps(value, "payload") == json.dumps(value, separators=(",", ":"))
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    looped: list[Any] = []
    looped.append(looped)
    for bad in (cycle, {"a": looped}):
        with pytest.raises(SerializationError):
            codec.dumps(bad, "payload")


spec_like = st.fixed_dictionaries(
    {},
    optional={
        "name": odd_scalar,
        "version": odd_scalar,
        "subtasks": st.lists(
            st.dictionaries(st.sampled_from(["id", "description", "files", "priority",
                                             "deadline", "blocking", "token", "x"]),
                            json_like | odd_scalar, max_size=5),
            max_size=3,
        ) | odd_scalar,
        "max_fix_rounds": odd_scalar,
        "model": st.dictionaries(st.text(max_size=8), json_like, max_size=3) | odd_scalar,
        "api_key": odd_scalar,
    },
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(doc=spec_like | json_like)
def test_the_spec_loader_gives_a_spec_or_a_spec_error_for_any_document(doc: Any) -> None:
    from pipeline.errors import SpecError
    from pipeline.spec import PipelineSpec, parse_spec

    try:
        assert isinstance(parse_spec(doc), PipelineSpec)
    except SpecError as exc:
        assert exc.__context__ is None and exc.__cause__ is None


cli_text = st.text(max_size=12) | st.sampled_from(
    ["", " ", "-1", "0", "1e308", "nan", "inf", "HIGH", "high", "3", "4", "{}", "[]", "{\"a\":1}",
     "@/nonexistent", "{\"1\": {\"1\": 2}}", "a b", "x" * 300, "--json", "--"]
)  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    task_type=cli_text,
    options=st.lists(
        st.tuples(
            st.sampled_from(["--payload", "--priority", "--id", "--delay", "--timeout"]), cli_text
        ),
        max_size=4,
    ),
)
def test_generated_enqueue_arguments_end_in_an_exit_code_never_a_traceback(
    redis_url: str, queue_name: str, task_type: str, options: list[tuple[str, str]]
) -> None:
    from click.testing import CliRunner

    from pipeline.cli import cli

    args = ["enqueue", task_type, *(part for pair in options for part in pair)]
    env = {"AGENTIC_REDIS_URL": redis_url, "AGENTIC_QUEUE_NAME": queue_name}
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=True)
    assert result.exit_code in (0, 1, 2), (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
    )
    assert "Traceback" not in result.output
    asyncio.run(_assert_sound(redis_url, queue_name))


async def _assert_sound(redis_url: str, queue_name: str) -> None:
    raw = Redis.from_url(redis_url)
    queue = RedisTaskQueue(queue_name, redis_url=redis_url)
    try:
        await assert_every_task_in_one_state(raw, queue)
    finally:
        await raw.aclose()
