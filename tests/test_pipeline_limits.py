"""A pipeline spec names its model provider's limits: the queue enforces them, fleet-wide,
on the stages whose agents call the model (dev and fix), and not on QA or deploy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from agents import build_registry
from pipeline import DistributedPipelineManager, RunStatus, SpecError
from pipeline.spec import parse_spec
from tests.support.pipeline import settings, spec
from utils.config import Settings
from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config(tmp_path: Path, redis_url: str, queue_name: str) -> Settings:
    return settings(tmp_path, redis_url=redis_url, queue_name=queue_name)


@pytest.fixture(autouse=True)
async def _clean_queue(raw_redis: Redis, queue_name: str) -> AsyncIterator[None]:
    yield
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


async def test_a_runs_model_limits_bind_its_dev_and_fix_subtasks(
    config: Settings, raw_redis: Redis
) -> None:
    limits = {"key": "openai", "rpm": 600, "tpm": 200_000, "concurrency": 2}
    manager = DistributedPipelineManager(settings=config, handlers=build_registry(config))
    async with manager:
        result = await manager.run(spec("replay.json", model_limits=limits))
    assert result.status is RunStatus.SUCCEEDED
    queue = RedisTaskQueue(config.pipeline_queue_name(), config.redis_url)
    async with queue:
        status = (await queue.get_limits())["openai"]
        limit = status.limit
        assert (limit.rate, limit.per, limit.concurrency) == (600, 60, 2)
        assert (limit.tokens, limit.tokens_per) == (200_000, 60)
        assert status.running == 0  # every slot came back
        # Reserved 2,000 per call, charged what the replayed replies used instead.
        assert status.tokens_available is not None and status.tokens_available > 199_000
        stages = {r.stage: r.task_id for r in result.subtasks}
        for record in result.subtasks:
            task = await queue.get_task(record.task_id)
            assert task is not None
            if record.stage in ("dev", "fix"):
                assert (task.limits, task.cost_tokens) == (["openai"], 2000)
            else:
                assert (task.limits, task.cost_tokens) == ([], None)
        assert "dev" in stages and "qa" in stages


@pytest.mark.parametrize(
    "bad",
    [
        {"key": "openai"},  # nothing to limit
        {"rpm": 0},
        {"tpm": -5},
        {"concurrency": 0},
        {"key": "has space", "rpm": 5},
        {"rpm": 5, "api_key": "sk-x"},
    ],
)
def test_bad_model_limits_are_refused_by_the_spec(bad: dict[str, object]) -> None:
    with pytest.raises(SpecError, match="model_limits"):
        parse_spec(spec("replay.json", model_limits=bad))
