"""What every command shares: settings from options and environment, exit codes, output."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

from pipeline.errors import PipelineError
from utils.config import Settings
from utils.metrics import RedisQueueCollector
from utils.redis_queue import (
    InvalidRedisUrl,
    InvalidTaskError,
    QueueError,
    RedisAuthError,
    RedisTaskQueue,
    RedisUnavailable,
    TopologyError,
    WorkerIdInUse,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE (sysexits.h): Redis could not be reached
EXIT_NOPERM = 77  # EX_NOPERM (sysexits.h): Redis refused the credentials or the command

T = TypeVar("T")
log = logging.getLogger("agentic.cli")


def setup_tracing_from_environment() -> None:
    """The CLI's one telemetry set-up: tracing when OTEL_TRACES_EXPORTER names an exporter
    (utils.tracing.setup_tracing; OpenTelemetry is not even imported otherwise). Metrics
    are served by the commands that take --metrics-port."""
    if os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower() in ("", "none"):
        return
    from utils.tracing import setup_tracing

    try:
        setup_tracing()
    except Exception as exc:  # e.g. an unwritable AGENTIC_TRACES_FILE: run, untraced
        log.warning("tracing is off: %s", exc)


class CliState:
    """Options of the `agentic` group, resolved against the environment lazily."""

    def __init__(
        self,
        redis_url: str | None,
        queue_name: str | None,
        *,
        cluster: bool | None = None,
        partitions: int | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.cluster = cluster
        self.partitions = partitions
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            overrides: dict[str, Any] = {}
            if self.redis_url:
                overrides["redis_url"] = self.redis_url
            if self.queue_name:
                overrides["queue_name"] = self.queue_name
            if self.cluster is not None:
                overrides["redis_cluster"] = self.cluster
            if self.partitions is not None:
                overrides["partitions"] = self.partitions
            try:
                self._settings = Settings(**overrides)
            except ValueError as exc:
                raise click.UsageError(f"invalid configuration: {exc}") from exc
        return self._settings

    def default_queue(self, name: str | None) -> None:
        """Use queue `name` unless one was given (--queue, AGENTIC_QUEUE_NAME)."""
        if name and "queue_name" not in self.settings.model_fields_set:
            self.queue_name, self._settings = name, None

    def queue(self, **overrides: Any) -> RedisTaskQueue:
        return RedisTaskQueue.from_settings(self.settings, **overrides)


pass_state = click.make_pass_decorator(CliState)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run one async operation, mapping queue errors to exit codes (69: Redis down)."""
    try:
        return asyncio.run(_awaited(factory))
    except RedisUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except RedisAuthError as exc:
        fail(str(exc), EXIT_NOPERM)
    # bad input or settings; a worker id held by a live worker
    except (InvalidTaskError, InvalidRedisUrl, TopologyError, WorkerIdInUse) as exc:
        fail(str(exc), EXIT_USAGE)
    except (QueueError, PipelineError) as exc:
        fail(str(exc))


async def _awaited(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def redis_collector(settings: Settings, queue_name: str | None = None) -> RedisQueueCollector:
    """The scrape-time Redis gauges of `queue_name` (default: the configured queue)."""
    return RedisQueueCollector(
        settings.redis_url,
        [queue_name or settings.queue_name],
        key_prefix=settings.key_prefix,
        password=settings.password(),
        cluster=settings.redis_cluster,
        partitions=settings.partitions,
    )
