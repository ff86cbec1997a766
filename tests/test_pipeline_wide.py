"""Wide runs: many dev subtasks at once, through Redis, on a small connection budget."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline import DistributedPipelineManager, RunStatus
from pipeline import store as store_module
from tests.support.pipeline import settings
from tests.test_pipeline_dag import Recorder, dag_spec

pytestmark = pytest.mark.timeout(120)


async def test_300_parallel_subtasks_on_8_connections_never_wait_for_redis(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    raw_redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each subtask's save holds a connection (WATCH) and the in-process worker's cancel
    # listener holds one outside the calls' bound: the pool once ran out ("Too many
    # connections"), and the run waited for Redis in a loop of back-offs.
    config = settings(tmp_path, redis_url=redis_url, queue_name=queue_name, max_connections=8)
    edges: dict[str, list[str]] = {f"s{i}": [] for i in range(300)}
    caplog.set_level(logging.WARNING)
    recorder = Recorder(dev_seconds=0)
    async with DistributedPipelineManager(
        settings=config, handlers=recorder.registry(), resume=False
    ) as manager:
        result = await manager.run(dag_spec(edges))
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert len(recorder.spans) == 300
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


async def test_each_save_writes_the_header_and_only_the_record_that_changed(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    raw_redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[int] = []
    records = store_module._records

    def counted(run: Any, only: Any) -> dict[str, str]:
        out = records(run, only)
        written.append(len(out))
        return out

    monkeypatch.setattr(store_module, "_records", counted)
    config = settings(tmp_path, redis_url=redis_url, queue_name=queue_name)
    edges: dict[str, list[str]] = {f"s{i}": [] for i in range(200)}
    async with DistributedPipelineManager(
        settings=config, handlers=Recorder(dev_seconds=0).registry(), resume=False
    ) as manager:
        result = await manager.run(dag_spec(edges))
        stored = await raw_redis.hgetall(manager.redis_queue.keys.run(result.run_id))
    assert result.status is RunStatus.SUCCEEDED
    assert {f"s:{r.task_id}" for r in result.subtasks} <= {k.decode() for k in stored}
    header = json.loads(stored[b"state"])
    assert "subtasks" not in header and "spec" not in header, "records and spec live apart"
    assert len(json.loads(stored[b"spec"])["subtasks"]) == 200
    assert max(written[1:-1]) == 1, "a save in the middle of a run writes one record"
    assert written[-1] == len(result.subtasks) == 202  # the last save writes them all
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


async def test_a_run_stored_in_one_document_is_read_and_split_on_its_next_save(
    tmp_path: Path, redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    config = settings(tmp_path, redis_url=redis_url, queue_name=queue_name)
    async with DistributedPipelineManager(
        settings=config, handlers=Recorder(dev_seconds=0).registry(), resume=False
    ) as manager:
        result = await manager.run(dag_spec({"a": [], "b": ["a"]}))
        key = manager.redis_queue.keys.run(result.run_id)
        whole = await manager.get_run(result.run_id)
        await raw_redis.delete(key)  # as the version before kept it: one document
        await raw_redis.hset(key, "state", whole.model_dump_json())
        old = await manager.get_run(result.run_id)
        assert [r.task_id for r in old.subtasks.values()] == [r.task_id for r in result.subtasks]
        assert old.stored_whole
        await manager.store.acquire(old.run_id, manager.manager_id, 10_000)
        await manager.store.save(old, manager.manager_id, ())  # a header-only save
        fields = {k.decode() for k in await raw_redis.hkeys(key)}
    assert {f"s:{r.task_id}" for r in result.subtasks} | {"spec"} <= fields
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)
