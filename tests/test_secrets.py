"""A model key never leaves the places it belongs (the Authorization header): not in an
error, a log line, a span, a metric, the run's state or anything stored in Redis, also when
the provider quotes the key back in an error, as OpenAI does."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import Redis

from agents import build_registry
from pipeline import DistributedPipelineManager, RunStatus
from tests.support.model_server import RecordedModel
from tests.support.pipeline import settings, spec
from utils.metrics import PipelineMetrics, QueueMetrics, install_model_metrics
from utils.redis_queue import RedisTaskQueue

SENTINEL = "sk-SENTINEL-7d1e0b55"
pytestmark = pytest.mark.timeout(90)


def _span_text(exporter: InMemorySpanExporter) -> str:
    parts = []
    for span in exporter.get_finished_spans():
        parts.append(span.name)
        parts.append(json.dumps(dict(span.attributes or {}), default=str))
        parts.append(str(span.status.description))
        for event in span.events:
            parts.append(json.dumps(dict(event.attributes or {}), default=str))
    return "\n".join(parts)


async def _redis_text(raw: Redis, queue_name: str) -> str:
    parts = []
    async for key in raw.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        parts.append(repr(await raw.dump(key)))
    return "\n".join(parts)


@pytest.mark.parametrize("behaviour", ["answers", "quotes-the-key-in-a-401"])
async def test_the_model_key_appears_in_no_error_log_span_metric_or_stored_state(
    tmp_path: Path,
    redis_url: str,
    queue_name: str,
    raw_redis: Redis,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    behaviour: str,
) -> None:
    model = RecordedModel(
        auth_failure="Incorrect API key provided: {key}." if behaviour != "answers" else None
    )
    registry = CollectorRegistry()
    install_model_metrics(registry)
    try:
        config = settings(
            tmp_path,
            redis_url=redis_url,
            queue_name=queue_name,
            model={"backend": "openai", "base_url": model.url, "api_key": SENTINEL,
                   "max_retries": 1, "prompt_price_per_1k": 0.001},
        )  # fmt: skip
        queue = RedisTaskQueue.from_settings(config, metrics=QueueMetrics(registry))
        without_model = {k: v for k, v in spec().items() if k != "model"}
        manager = DistributedPipelineManager(
            queue=queue,
            settings=config,
            handlers=build_registry(config),
            metrics=PipelineMetrics(registry),
        )
        with caplog.at_level(logging.DEBUG):
            async with manager:
                result = await manager.run(without_model)
                state = await manager.get_run(result.run_id)
    finally:
        model.close()
    expected = RunStatus.SUCCEEDED if behaviour == "answers" else RunStatus.FAILED
    assert result.status is expected, result.reasons
    assert set(model.authorizations) == {f"Bearer {SENTINEL}"}  # it was sent, and only there
    if behaviour != "answers":
        assert any("ModelAuthError" in reason for reason in result.reasons)
    places = {
        "result": result.model_dump_json(),
        "run state": state.model_dump_json(),
        "logs": "\n".join(
            f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
        ),
        "spans": _span_text(spans),
        "metrics": generate_latest(registry).decode(),
        "redis": await _redis_text(raw_redis, queue_name),
    }
    for place, text in places.items():
        assert SENTINEL not in text, f"the key appears in the {place}"
    assert places["spans"] and places["metrics"] and places["redis"]  # each was looked at


def test_the_settings_never_show_the_key() -> None:
    from utils.config import Settings

    config = Settings(model={"api_key": SENTINEL}, redis_url="redis://:pw@localhost:1/0")
    for text in (repr(config), str(config), repr(config.model), config.model_dump_json()):
        assert SENTINEL not in text


def test_a_key_quoted_whole_or_in_part_is_redacted() -> None:
    from agents.models.openai import redact_key

    key = "sk-proj-abcdefghijklmnop1234"
    assert redact_key(f"Incorrect API key provided: {key}.", key) == (
        "Incorrect API key provided: ***."
    )
    assert "abcdefgh" not in redact_key("key sk-proj-ab************1234 is wrong", key)
    assert redact_key("nothing here", key) == "nothing here"
    assert redact_key("short", None) == "short"
