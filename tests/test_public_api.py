"""The public surface is explicit and stable: the seed's imports work, __all__ is complete."""

from __future__ import annotations

import utils.redis_queue as rq
from utils.redis_queue import scripts


def test_seed_imports_work() -> None:
    from utils.redis_queue import RedisTask, RedisTaskQueue, TaskPriority, TaskState

    assert [p.value for p in TaskPriority] == [0, 1, 2, 3]
    assert TaskState.DEAD_LETTER == "dead_letter"
    assert RedisTask.__name__ == "RedisTask" and RedisTaskQueue.__name__ == "RedisTaskQueue"


def test_all_is_sorted_and_complete() -> None:
    assert rq.__all__ == sorted(rq.__all__)
    public = {name for name in dir(rq) if not name.startswith("_") and name[0].isupper()}
    assert public == set(rq.__all__)


def test_every_lua_script_has_a_header_and_is_registered() -> None:
    from importlib import resources

    lua = resources.files("utils.redis_queue").joinpath("lua")
    on_disk = sorted(p.name[:-4] for p in lua.iterdir() if p.name.endswith(".lua"))
    assert on_disk == sorted(scripts.SCRIPTS)
    for name in on_disk:
        source = scripts.load_source(name)
        assert source.lstrip().startswith("--[[") and "KEYS[1]" in source and "Returns" in source
        assert "--@include" not in source  # includes were expanded
