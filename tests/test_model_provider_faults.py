"""The OpenAI-compatible backend against a misbehaving provider (a real local HTTP server
switched into bad behaviours) and at concurrency: bounded time, connections freed, the key
in no output, usage validated, one cap on Retry-After, a healthy server served at once
afterwards by the same process."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agents import DevAgent, ModelAuthError, ModelTimeout, ModelUnavailable, OpenAIChatBackend
from agents.models import MAX_TOKENS_PER_CALL, RETRY_AFTER_CAP, ModelRateLimited, token_count
from tests.support.model_server import ProviderServer
from utils.config import ModelSettings, PipelineSettings
from utils.metrics import install_model_metrics
from utils.redis_queue import HandlerRegistry, RedisTaskQueue, TaskFailed, Worker
from utils.redis_queue.handlers import PermanentFailure, RateLimited, Retry, TaskContext
from utils.redis_queue.models import RedisTask

# The tests' workspaces are temporary directories: the agents must accept them.
TMP_PIPELINE = PipelineSettings(workspace_root=Path(tempfile.gettempdir()))
KEY = "sk-proj-Zq8mXv2LrT5nWc9Hd3Kp7Yb1"  # shaped like a real key, so prefixes are tried too
MESSAGES = [{"role": "user", "content": "say hi"}]
FILE_REPLY = "Done.\n\nFile: calc.py\n```python\nX = 1\n```\n"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 must not go through a proxy
    server = ProviderServer()
    try:
        yield server
    finally:
        server.close()


def backend(provider: ProviderServer, **kwargs: Any) -> OpenAIChatBackend:
    options: dict[str, Any] = {
        "base_url": provider.url,
        "name": "m",
        "api_key": KEY,
        "timeout": 0.5,
        "max_retries": 0,
        "backoff_base": 0.01,
    }
    options.update(kwargs)
    return OpenAIChatBackend(**options)


def _no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text and KEY[:8] not in text, text


async def _until(check: Callable[[], bool], seconds: float = 3.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.02)


# -- deadlines -------------------------------------------------------------------------------


async def test_a_trickling_reply_is_cut_at_the_deadline_and_its_connection_closed(
    provider: ProviderServer,
) -> None:
    provider.mode = "trickle"
    model = backend(provider, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ModelTimeout):
        await model.complete(MESSAGES, key="k")
    assert time.monotonic() - started < 1.0
    await _until(lambda: provider.cut_off == 1)  # the server saw the client hang up
    provider.mode = "ok"
    started = time.monotonic()
    assert (await model.complete(MESSAGES, key="k")).content == "hi there"
    assert time.monotonic() - started < 0.3  # served at once, by the same backend
    await model.aclose()


async def test_forty_trickles_at_once_starve_nothing(provider: ProviderServer) -> None:
    """40 dripping replies (more than the old 16-thread pool) all end at their deadline,
    and a healthy call right after is answered at once."""
    provider.mode = "trickle"
    model = backend(provider, timeout=0.5)
    started = time.monotonic()
    results = await asyncio.gather(
        *(model.complete(MESSAGES, key=f"k{i}") for i in range(40)), return_exceptions=True
    )
    assert all(isinstance(r, ModelTimeout) for r in results)
    assert time.monotonic() - started < 1.5
    await _until(lambda: provider.in_flight == 0)
    provider.mode = "ok"
    started = time.monotonic()
    await model.complete(MESSAGES, key="after")
    assert time.monotonic() - started < 0.3
    await model.aclose()


async def test_a_hanging_server_costs_one_deadline_across_all_retries(
    provider: ProviderServer,
) -> None:
    provider.mode = "hang"
    model = backend(provider, timeout=0.4, max_retries=10, deadline=1.0)
    started = time.monotonic()
    with pytest.raises(ModelTimeout):
        await model.complete(MESSAGES, key="k")
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.4  # the call's deadline, not 11 x 0.4 s
    assert provider.requests <= 3
    await model.aclose()


async def test_a_cancelled_call_returns_at_once_and_frees_its_connection(
    provider: ProviderServer,
) -> None:
    provider.mode = "trickle"
    model = backend(provider, timeout=30)
    call = asyncio.create_task(model.complete(MESSAGES, key="k"))
    await _until(lambda: provider.in_flight == 1)
    started = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert time.monotonic() - started < 0.2
    await _until(lambda: provider.cut_off == 1)
    await model.aclose()


def test_a_backends_connections_close_with_their_event_loop(provider: ProviderServer) -> None:
    """asyncio.run() ends the loop's async generators before closing it; the backend's
    pools close there, so a finished loop (a CLI run, a test) leaves no socket behind."""
    model = backend(provider)

    async def call() -> Any:
        await model.complete(MESSAGES, key="k")
        return model._clients[asyncio.get_running_loop()]

    pools = asyncio.run(call())
    assert pools.clients and all(client.is_closed for client in pools.clients)


# -- concurrency -----------------------------------------------------------------------------


async def test_64_calls_against_a_one_second_provider_run_at_once() -> None:
    """The provider runs in a process of its own, so its 64 threads do not share the
    client's GIL: what is measured is the backend."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.model_server", "1.0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "no_proxy": "127.0.0.1"},
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        model = OpenAIChatBackend(base_url=url, name="m", timeout=10, max_retries=0)
        started = time.monotonic()
        replies = await asyncio.gather(*(model.complete(MESSAGES, key=f"k{i}") for i in range(64)))
        elapsed = time.monotonic() - started
        async with httpx.AsyncClient() as client:
            stats = (await client.get(url.removesuffix("/v1") + "/stats")).json()
        await model.aclose()
    finally:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.close()
        server.wait(10)
        server.stdout.close()
    span = stats.pop("span")  # first request in to last answer out, at the provider
    print(f"64 calls at once against a 1 s provider: {elapsed:.2f} s ({span:.2f} s there)")
    assert len(replies) == 64 and stats == {"requests": 64, "peak": 64}
    assert span < 1.5, f"the provider saw 64 calls over {span:.2f} s"
    # ~1.25 s on an idle machine; the margin is for a loaded CI host
    assert elapsed < 2.0, f"64 calls took {elapsed:.2f} s"


async def test_a_worker_at_c64_runs_64_model_calls_at_once(
    provider: ProviderServer, make_queue: Callable[..., RedisTaskQueue], tmp_path: Path
) -> None:
    provider.delay = 1.0
    provider.content = FILE_REPLY
    queue = make_queue()
    await queue.connect()
    await queue.enqueue_many(
        {"task_id": f"dev-{i}", "task_type": "dev", "payload": _dev_payload(tmp_path / str(i))}
        for i in range(64)
    )
    worker = Worker(queue, _registry(provider, 10), concurrency=64, burst=True, worker_id=_wid())
    started = time.monotonic()
    stats = await worker.run()
    elapsed = time.monotonic() - started
    model_time = provider.last_at - provider.first_at
    print(f"64 dev subtasks at -c 64: {elapsed:.2f} s in all, {model_time:.2f} s of model calls")
    assert stats.done == 64 and provider.peak == 64
    assert model_time < 1.5, f"64 subtasks' model calls took {model_time:.2f} s"
    assert elapsed < 4.0  # with the worker's start (its lease keeper process) and stop


# -- the key in no output --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["echo-401", "echo-500"])
async def test_an_error_body_echoing_the_authorization_header_shows_no_key(
    provider: ProviderServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    provider.mode = mode
    model = backend(provider, max_retries=2)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises((ModelAuthError, ModelUnavailable)) as caught:
            await model.complete(MESSAGES, key="k")
        with pytest.raises((PermanentFailure, Retry)) as outcome:
            await DevAgent(pipeline=TMP_PIPELINE, backend_factory=lambda _: model)(
                _dev_context(tmp_path)
            )
    assert "Authorization: Bearer ***" in str(caught.value)  # what the server said, scrubbed
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    _no_key(str(caught.value), repr(caught.value), str(outcome.value), logs, repr(model))
    assert "\n" not in str(outcome.value)  # one line for the task's error
    await model.aclose()


async def test_a_key_of_any_shape_is_scrubbed_when_quoted_bare(provider: ProviderServer) -> None:
    """A key that looks like neither an sk- key nor a bearer token (a proxy's own token) is
    scrubbed as the configured key, whole and by its prefix."""
    provider.mode = "echo-401"
    plain = "proxytoken-0123456789abcdef"
    model = backend(provider, api_key=plain)
    with pytest.raises(ModelAuthError) as caught:
        await model.complete(MESSAGES, key="k")
    assert plain not in str(caught.value) and plain[:8] not in str(caught.value)
    assert "(key ***)" in str(caught.value)
    await model.aclose()


async def test_through_a_worker_the_task_error_in_redis_has_no_key_and_no_traceback(
    provider: ProviderServer,
    make_queue: Callable[..., RedisTaskQueue],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider.mode = "echo-500"
    queue = make_queue()
    await queue.connect()
    await queue.enqueue("dev-1", "dev", _dev_payload(tmp_path), max_retries=1)
    worker = Worker(queue, _registry(provider), concurrency=4, burst=True, worker_id=_wid())
    with caplog.at_level(logging.DEBUG):
        started = time.monotonic()
        await worker.run()
    assert time.monotonic() - started < 5
    task = await queue.get_task("dev-1")
    assert task is not None and task.state == "dead_letter"
    assert task.error is not None and "ModelUnavailable" in task.error
    assert "Traceback" not in task.error
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    _no_key(
        task.error, logs, repr(await queue.redis.hgetall(queue.keys_for("dev-1").task("dev-1")))
    )


async def test_after_a_trickle_the_same_worker_serves_a_healthy_provider_at_once(
    provider: ProviderServer, make_queue: Callable[..., RedisTaskQueue], tmp_path: Path
) -> None:
    provider.mode = "trickle"
    provider.content = FILE_REPLY
    queue = make_queue()
    await queue.connect()
    worker = Worker(queue, _registry(provider), concurrency=8, worker_id=_wid(), shutdown_grace=1)
    running = asyncio.create_task(worker.run())
    try:
        for i in range(20):
            await queue.enqueue(f"slow-{i}", "dev", _dev_payload(tmp_path / f"s{i}"), max_retries=0)
        await _until(lambda: provider.cut_off >= 8, 5)  # each attempt cut at its deadline
        for i in range(20):
            with pytest.raises(TaskFailed, match="ModelTimeout"):
                await queue.wait_for_result(f"slow-{i}", 5)
        provider.mode = "ok"
        started = time.monotonic()
        await queue.enqueue("fast", "dev", _dev_payload(tmp_path / "fast"))
        assert (await queue.wait_for_result("fast", 3))["ok"] is True
        assert time.monotonic() - started < 0.5
        # a stop while calls hang waits on none of them beyond the grace
        provider.mode = "hang"
        await queue.enqueue("hung", "dev", _dev_payload(tmp_path / "hung"))
        await _until(lambda: provider.in_flight == 1)
    finally:
        worker.request_stop()
        started = time.monotonic()
        await asyncio.wait_for(running, 10)
    assert time.monotonic() - started < 2.5


# -- usage and Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "counted", "flagged"),
    [
        ({"prompt_tokens": -50, "completion_tokens": 3}, (0, 3), True),
        ({"prompt_tokens": 10**12, "completion_tokens": 3}, (MAX_TOKENS_PER_CALL, 3), True),
        ({"prompt_tokens": 12.0, "completion_tokens": "7"}, (12, 7), False),
        ({"prompt_tokens": 1.5, "completion_tokens": "lots"}, (0, 0), True),
        ({"prompt_tokens": True, "completion_tokens": None}, (0, 0), True),
    ],
    ids=["negative", "huge", "float-and-string", "junk", "bool-and-null"],
)
async def test_bad_usage_is_clamped_and_flagged_and_the_reply_kept(
    provider: ProviderServer,
    tmp_path: Path,
    usage: dict[str, Any],
    counted: tuple[int, int],
    flagged: bool,
) -> None:
    provider.usage = usage
    provider.content = FILE_REPLY
    model = backend(provider)
    reply = await model.complete(MESSAGES, key="k")
    assert (reply.prompt_tokens, reply.completion_tokens) == counted
    assert bool(reply.usage_flags) is flagged
    registry = CollectorRegistry()
    install_model_metrics(registry)  # Counter.inc raised on a negative count
    ctx = _dev_context(tmp_path)
    result = await DevAgent(
        ModelSettings(prompt_price_per_1k=0.01), TMP_PIPELINE, backend_factory=lambda _: model
    )(ctx)
    assert result["ok"] is True and result["usage"]["total_tokens"] == sum(counted)
    assert bool(result["usage"].get("flags")) is flagged  # in the subtask's result, for the run
    assert result["usage"]["cost_usd"] <= MAX_TOKENS_PER_CALL / 1000 * 0.01
    assert ctx.tokens_used == sum(counted)
    assert provider.requests == 2  # one call each: a valid reply is never retried
    assert "agentic_model_prompt_tokens_total" in generate_latest(registry).decode()
    await model.aclose()


def test_token_count_never_raises() -> None:
    values: list[object] = [-1, 10**30, float("nan"), float("inf"), "9" * 5000, "--3", "²", []]
    for value in values:
        count, flag = token_count(value)
        assert 0 <= count <= MAX_TOKENS_PER_CALL and flag


async def test_a_long_retry_after_is_capped_the_same_in_the_backend_and_the_queue(
    provider: ProviderServer, tmp_path: Path
) -> None:
    provider.mode = "retry-after"
    model = backend(provider)
    with pytest.raises(ModelRateLimited) as caught:
        await model.complete(MESSAGES, key="k")
    assert caught.value.retry_after == RETRY_AFTER_CAP
    assert "Retry-After 3600 s, capped at 30 s" in str(caught.value)
    with pytest.raises(RateLimited) as paused:
        await DevAgent(pipeline=TMP_PIPELINE, backend_factory=lambda _: model)(
            _dev_context(tmp_path)
        )
    assert paused.value.retry_after == RETRY_AFTER_CAP  # not the provider's 3600
    # within a call the backend waits at most the cap, and never past the call's deadline
    retried = backend(provider, max_retries=3, deadline=0.5)
    started = time.monotonic()
    with pytest.raises(ModelRateLimited):
        await retried.complete(MESSAGES, key="k")
    assert time.monotonic() - started < 0.3 and provider.requests == 3
    await model.aclose()
    await retried.aclose()


# -- helpers ---------------------------------------------------------------------------------


def _wid() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _dev_payload(workspace: Path) -> dict[str, Any]:
    workspace.mkdir(parents=True, exist_ok=True)
    return {"subtask": {"id": "calc", "files": ["calc.py"]}, "workspace": str(workspace)}


def _dev_context(workspace: Path) -> TaskContext:
    task = RedisTask("t-1", "dev", _dev_payload(workspace), 1, "processing", attempts=1)
    return TaskContext(task=task, worker_id="w", queue_name="q", lease_token=1)


def _registry(provider: ProviderServer, timeout: float = 0.5) -> HandlerRegistry:
    settings = ModelSettings(
        backend="openai",
        base_url=provider.url,
        api_key=KEY,
        timeout_seconds=timeout,
        max_retries=1,
        deadline_seconds=3 * timeout,
    )
    registry = HandlerRegistry()
    agent = DevAgent(settings, TMP_PIPELINE)
    registry.register("dev", agent, timeout=agent.timeout_seconds() + 1)
    return registry


# -- what users read -------------------------------------------------------------------------


def test_a_failed_subtask_shows_one_line_without_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli.progress import ProgressPrinter, reason_line
    from pipeline.runs import RunEvent

    error = (
        f"ValueError: provider said Authorization: Bearer {KEY}\n"
        'Traceback (most recent call last):\n  File "agents/dev.py", line 3\n'
    )
    ProgressPrinter()(RunEvent("r-1", "failed", None, "calc", error))
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "Traceback" not in printed
    _no_key(printed, reason_line(error))
    assert reason_line(error) == "ValueError: provider said Authorization: Bearer ***"
