"""The script contract (utils/redis_queue/scripts/) against the Lua files it describes.

Each lua/<name>.lua opens with a header naming every KEYS[i] and ARGV[i]; each Script
declaration names the same, in the same order, and every builder goes through its
declaration, so a key or argument added on one side only fails here, not in Redis.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest
from redis.asyncio import Redis

from utils.redis_queue import QueueError, RedisTaskQueue, RetryPolicy, TaskState, scripts
from utils.redis_queue.keys import QueueKeys
from utils.redis_queue.new_task import new_task

_LUA = resources.files("utils.redis_queue").joinpath("lua")
_KEY = re.compile(r"^\s*KEYS\[(\d+)\]\s+(\w+)", re.MULTILINE)
_ARG = re.compile(r"(?:^|,)\s*ARGV\[(\d+)\]\s+(\w+)", re.MULTILINE)
_REST = re.compile(r"^\s*ARGV\[(\d+)\.\.\]", re.MULTILINE)


def _header(name: str) -> str:
    text = _LUA.joinpath(f"{name}.lua").read_text()
    assert text.startswith("--[["), f"{name}.lua does not open with its header"
    return text[: text.index("]]")]


def test_every_lua_file_has_a_declaration_and_every_declaration_a_file() -> None:
    on_disk = {p.name[:-4] for p in _LUA.iterdir() if p.name.endswith(".lua")}
    assert on_disk == set(scripts.SCRIPTS)


@pytest.mark.parametrize("name", sorted(scripts.SCRIPTS))
def test_declaration_matches_the_header(name: str) -> None:
    script = scripts.SCRIPTS[name]
    header = _header(name)
    keys = [(int(i), key) for i, key in _KEY.findall(header)]
    assert [i for i, _ in keys] == list(range(1, len(keys) + 1)), "KEYS numbered 1..n"
    assert tuple(key for _, key in keys) == script.keys
    args = [(int(i), arg) for i, arg in _ARG.findall(header)]
    assert [i for i, _ in args] == list(range(1, len(args) + 1)), "ARGV numbered 1..n"
    assert tuple(arg for _, arg in args) == script.args
    rest = _REST.findall(header)
    if script.rest:
        assert rest == [str(len(script.args) + 1)], f"{name}.lua: no ARGV[n..] line for the rest"
    else:
        assert not rest
    for key in script.keys:
        assert isinstance(getattr(QueueKeys("p", "q"), key), str), f"QueueKeys has no {key}"
    assert "Returns" in header and ("Errors" in header or name == "worker_beat")


def test_builders_fill_every_declared_key_and_argument() -> None:
    keys = QueueKeys("agentic", "q")
    policy = RetryPolicy()
    task = new_task(3, 1000, "t1", "dev", {"a": 1}, delay=1.5, timeout=0.0004, meta={"m": "v"})
    calls = {
        "cancel": scripts.cancel(keys, task_id="t", events=9),
        "permit": scripts.permit(
            keys, lease_ms=5, tasks=[scripts.PermitItem("t", "dev", ["openai"], 10)]
        ),
        "unpermit": scripts.unpermit(
            keys, items=[scripts.HeldItem("t", "openai", 10, None)], pause_ms=5, pause_keys=["x"]
        ),
        "extend_permits": scripts.extend_permits(keys, lease_ms=5, held=[("t", "openai")]),
        "claim": scripts.claim(
            keys,
            worker_id="w",
            lease_ms=1,
            count=2,
            max_lease_losses=3,
            use_dlq=True,
            suspects=False,
            task_types=["a", "b"],
            events=9,
        ),
        "clear_finished": scripts.clear_finished(keys, age_ms=0, limit=5),
        "complete": scripts.complete(
            keys, task_id="t", token="1", keep_ms=2, result_text="{}", events=9
        ),
        "enqueue": scripts.enqueue(keys, [task, task], events=9),
        "extend": scripts.extend(keys, task_id="t", token="1", lease_ms=3),
        "emit": scripts.emit(
            keys,
            task_id="t",
            token="1",
            max_len=10,
            ttl_ms=1000,
            entries=[scripts.OutputEntry("text", "hi"), scripts.OutputEntry("progress", "m", 0.5)],
        ),
        "fail": scripts.fail(
            keys,
            task_id="t",
            token="1",
            retry=True,
            use_dlq=False,
            policy=policy,
            delay=None,
            max_retries=3,
            corrupt=False,
            error_text="e",
            events=9,
        ),
        "purge_dlq": scripts.purge_dlq(keys, limit=5, events=9),
        "purge": scripts.purge(keys, state=TaskState.DEAD_LETTER, limit=5, events=9),
        "delete": scripts.delete(keys, task_id="t", force=False, events=9),
        "cancel_type": scripts.cancel_type(
            keys, task_type="dev", delayed=True, after="^", limit=5, events=9
        ),
        "release": scripts.release(keys, task_id="t", token="1", events=9),
        "retry_dlq": scripts.retry_dlq(keys, task_id="t", events=9),
        "settle_many": scripts.settle_many(
            keys,
            keep_ms=1,
            use_dlq=True,
            policy=policy,
            max_retries=3,
            items=[scripts.SettleItem("a", "1", "{}"), scripts.SettleItem("b", "2", "", "e")],
            events=9,
        ),
        "sizes": scripts.sizes(keys),
        "worker_beat": scripts.worker_beat(keys, worker_id="w", info="{}", prune_ms=1),
        "pause": scripts.pause(keys, target="*"),
        "resume": scripts.resume(keys, target="dev"),
        "schedule_set": scripts.schedule_set(keys, name="s", definition="{}", first_due_ms=1),
        "unschedule": scripts.unschedule(keys, name="s"),
        "schedules_due": scripts.schedules_due(keys, limit=5),
        "schedule_advance": scripts.schedule_advance(
            keys, name="s", expected_ms=1, next_due_ms=2, last_due_ms=1, skipped=0
        ),
    }
    assert set(calls) == set(scripts.SCRIPTS)
    for name, call in calls.items():
        script = scripts.SCRIPTS[name]
        assert call.script is script
        assert call.keys == tuple(getattr(keys, k) for k in script.keys)
        assert len(call.args) >= len(script.args)
        if not script.rest:
            assert len(call.args) == len(script.args), name
    assert calls["claim"].args[-2:] == ["a", "b"]
    header = calls["enqueue"].args[2]
    assert header == b"t1 dev 1 - 1500 1"  # a timeout too short to store rounds up, never to 0
    assert calls["enqueue"].args[3:5] == [b'{"m":"v"}', b'{"a":1}']
    assert calls["settle_many"].args[len(scripts.SETTLE_MANY.args) :][0] == "c"


def test_a_builder_that_misses_a_declared_argument_is_refused() -> None:
    with pytest.raises(TypeError, match="takes"):
        scripts.CANCEL.call(QueueKeys("p", "q"), {"base": "x"})


def test_codes_and_outcomes_are_the_ones_the_lua_helpers_return() -> None:
    common = _LUA.joinpath("include", "common.lua").read_text()
    for code in scripts.Code:
        assert re.search(rf"^local E_{code.name} = {code.value}$", common, re.MULTILINE), code


async def test_a_malformed_number_is_refused_before_any_write(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    """The scripts check their numeric arguments first: a caller that passes garbage
    gets a typed error and Redis is unchanged."""
    await queue.enqueue("a", "dev", {})
    before = await raw_redis.hgetall(queue.keys.task("a"))
    call = scripts.claim(
        queue.keys,
        worker_id="w",
        lease_ms="soon",  # type: ignore[arg-type]
        count=1,
        max_lease_losses=3,
        use_dlq=True,
        suspects=True,
        task_types=[],
        events=0,
    )
    with pytest.raises(QueueError, match="lease_ms"):
        await queue.run(call)
    bad_items = scripts.SETTLE_MANY.call(
        queue.keys,
        {
            "base": queue.keys.base,
            "keep_ms": 1,
            "use_dlq": "1",
            "first_immediate": "1",
            "base_ms": "1",
            "factor": "2",
            "cap_ms": "9",
            "max_retries": 3,
            "events": 0,
        },
        ["c", "a", "", "{}", "f", "a", ""],  # a complete, then a truncated fail item
    )
    with pytest.raises(QueueError, match="item"):
        await queue.run(bad_items)
    assert await raw_redis.hgetall(queue.keys.task("a")) == before
    assert (await queue.get_queue_size())["pending"] == 1
