"""Shared fixtures: one private Redis per session, and a fresh queue per test.

Redis is found in this order: --redis-url / AGENTIC_TEST_REDIS_URL, else a private
server on a free port started here (see redis_server.py). Every test uses its own queue
name and deletes only that queue's keys.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer
from utils import tracing
from utils.redis_queue import RedisTaskQueue, RetryPolicy, telemetry
from utils.redis_queue.keys import queue_index

# Tests shrink the seed's 2 s / 4 s backoff instead of sleeping through it.
FAST_RETRY = RetryPolicy(first_immediate=True, base_seconds=0.05, factor=2.0, cap_seconds=0.2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--redis-url", default=None, help="use this Redis instead of a private one")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    url = request.config.getoption("--redis-url") or os.environ.get("AGENTIC_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def queue_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def make_queue(
    redis_url: str, queue_name: str, raw_redis: Redis
) -> AsyncIterator[Callable[..., RedisTaskQueue]]:
    """Factory for connected-on-demand queues on this test's queue name (several
    instances act as several workers); deletes the queue's keys afterwards."""
    made: list[RedisTaskQueue] = []

    def factory(**kwargs: object) -> RedisTaskQueue:
        options: dict[str, object] = {
            "retry_policy": FAST_RETRY,
            "queue_name": queue_name,
            "redis_url": redis_url,
        }
        options.update(kwargs)
        q = RedisTaskQueue(**options)  # type: ignore[arg-type]
        made.append(q)
        return q

    yield factory
    for q in made:
        await q.close()
        await raw_redis.srem(queue_index(q.layout.prefix), q.queue_name)  # registered at connect
    # `{<queue>}` and each partition's `{<queue>:<i>...}` (queue names here are unique)
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}*}}:*", count=1000):
        await raw_redis.delete(key)


@pytest.fixture
async def queue(make_queue: Callable[..., RedisTaskQueue]) -> AsyncIterator[RedisTaskQueue]:
    q = make_queue()
    await q.connect()
    yield q


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, to kill, restart or reconfigure."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test only, into memory (synchronously: no flush races)."""
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.setup_tracing(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()
        assert telemetry.tracer is None  # the next test runs untraced


@pytest.fixture(params=["local", "redis"])
async def pipeline_managers(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    raw_redis: Redis,
) -> AsyncIterator[Callable[..., Any]]:
    """A factory of pipeline managers, once in process and once through Redis, for the
    tests that must hold on both (DAG, approval, budget); deletes the queue's keys after."""
    from pipeline import DistributedPipelineManager, EnhancedPipelineManager
    from tests.support.pipeline import settings

    def factory(handlers: Any, *, settings_overrides: Any = None, **kwargs: Any) -> Any:
        overrides = {"redis_url": redis_url, "queue_name": queue_name, **(settings_overrides or {})}
        config = settings(tmp_path, **overrides)
        if request.param == "local":
            return EnhancedPipelineManager(handlers, settings=config, **kwargs)
        return DistributedPipelineManager(
            settings=config, handlers=handlers, resume=False, **kwargs
        )

    yield factory
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)
