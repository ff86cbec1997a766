"""Wide runs: many dev subtasks at once, through Redis, on a small connection budget."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pipeline import DistributedPipelineManager, RunStatus
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
