"""Model replies streamed as they arrive: the OpenAI-compatible backend with stream=true
against a local HTTP server speaking server-sent events (tests/support/model_server.py),
the replay backend's chunks, and an agent under a real worker passing them to the task's
output stream."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents import DevAgent, ModelAuthError, ModelTimeout, ModelUnavailable, OpenAIChatBackend
from agents.models import ModelResponseError, ReplayBackend
from agents.models.openai import RETRY_NOTICE
from agents.models.replay import split_chunks
from tests.support.model_server import ProviderServer
from utils.config import ModelSettings, PipelineSettings
from utils.redis_queue import HandlerRegistry, RedisTaskQueue, Worker

pytestmark = pytest.mark.timeout(30)

# The tests' workspaces are temporary directories: the agents must accept them.
TMP_PIPELINE = PipelineSettings(workspace_root=Path(tempfile.gettempdir()))
KEY = "sk-proj-Zq8mXv2LrT5nWc9Hd3Kp7Yb1"
MESSAGES = [{"role": "user", "content": "say hi"}]
FILE_REPLY = "Done.\n\nFile: calc.py\n```python\nX = 1\n```\n"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
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
        "timeout": 2.0,
        "max_retries": 0,
        "backoff_base": 0.01,
    }
    options.update(kwargs)
    return OpenAIChatBackend(**options)


class Collector:
    def __init__(self, wake_at: int = 0) -> None:
        self.chunks: list[str] = []
        self.wake_at = wake_at
        self.reached = asyncio.Event()

    async def __call__(self, text: str) -> None:
        self.chunks.append(text)
        if len(self.chunks) >= self.wake_at:
            self.reached.set()


async def test_chunks_arrive_before_the_reply_ends_and_join_to_it(
    provider: ProviderServer,
) -> None:
    provider.content = "The quick brown fox jumps over the lazy dog."
    provider.hold_after = 4  # the server stops after four pieces until the test lets it go
    model = backend(provider)
    seen = Collector(wake_at=4)
    call = asyncio.create_task(model.complete(MESSAGES, key="k", on_chunk=seen))
    await asyncio.wait_for(seen.reached.wait(), 5)
    assert not call.done() and seen.chunks == ["The", " qu", "ick", " br"]
    provider.hold.set()
    reply = await call
    assert reply.content == "".join(seen.chunks) == provider.content
    assert (reply.prompt_tokens, reply.completion_tokens, reply.model) == (12, 3, "m-1")
    body = provider.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # Without on_chunk the same backend asks for (and parses) a whole reply, as before.
    plain = await model.complete(MESSAGES, key="k")
    assert plain.content == provider.content and "stream" not in provider.bodies[-1]
    await model.aclose()


async def test_a_streamed_reply_of_thousands_of_events_is_whole_and_in_order(
    provider: ProviderServer,
) -> None:
    provider.content = "".join(f"{i:05d}" for i in range(20_000))  # 100 KB
    provider.piece = 5
    model = backend(provider, timeout=20)
    seen = Collector()
    reply = await model.complete(MESSAGES, key="k", on_chunk=seen)
    assert len(seen.chunks) == 20_000 and seen.chunks[-1] == "19999"
    assert reply.content == provider.content
    await model.aclose()


async def test_a_streamed_usage_is_checked_like_a_whole_reply(provider: ProviderServer) -> None:
    provider.usage = {"prompt_tokens": -5, "completion_tokens": 10**12}
    model = backend(provider)
    reply = await model.complete(MESSAGES, key="k", on_chunk=Collector())
    assert (reply.prompt_tokens, reply.completion_tokens) == (0, 10**9)
    assert len(reply.usage_flags) == 2 and "negative" in reply.usage_flags[0]
    await model.aclose()


async def test_a_stream_cut_before_done_is_retried_and_the_reader_told(
    provider: ProviderServer,
) -> None:
    provider.mode = "stream-cut"
    provider.content = "abcdefghijklmnop"
    model = backend(provider, max_retries=1)
    seen = Collector()
    with pytest.raises(ModelUnavailable):
        await model.complete(MESSAGES, key="k", on_chunk=seen)
    assert provider.requests == 2
    assert seen.chunks == ["abc", "def", RETRY_NOTICE, "abc", "def"]
    await model.aclose()


async def test_an_event_that_is_not_json_is_a_response_error(provider: ProviderServer) -> None:
    provider.mode = "stream-garbage"
    model = backend(provider, max_retries=3)
    with pytest.raises(ModelResponseError, match="not a chat completion event"):
        await model.complete(MESSAGES, key="k", on_chunk=Collector())
    assert provider.requests == 1  # not retried: the provider is broken, not busy
    await model.aclose()


async def test_a_dripping_stream_is_cut_at_the_deadline(provider: ProviderServer) -> None:
    provider.mode = "trickle"
    provider.drip = 0.2
    provider.content = "x" * 300
    model = backend(provider, timeout=0.5)
    seen = Collector()
    started = time.monotonic()
    with pytest.raises(ModelTimeout):
        await model.complete(MESSAGES, key="k", on_chunk=seen)
    assert time.monotonic() - started < 1.5
    assert len(seen.chunks) <= 3  # what came before the deadline was passed on


async def test_an_error_answer_to_a_streamed_request_shows_no_key(
    provider: ProviderServer,
) -> None:
    provider.mode = "echo-401"
    model = backend(provider)
    with pytest.raises(ModelAuthError) as caught:
        await model.complete(MESSAGES, key="k", on_chunk=Collector())
    assert KEY not in str(caught.value) and KEY[:8] not in str(caught.value)
    await model.aclose()


async def test_the_replay_backend_streams_the_recording_in_chunks(tmp_path: Path) -> None:
    content = "line one of the answer\nline two, which is a little longer than one chunk\n"
    recording = tmp_path / "replay.json"
    reply = {"content": content, "usage": {"prompt_tokens": 1}}
    recording.write_text(json.dumps({"replies": {"dev:a": reply}}))
    model = ReplayBackend(recording, chunk_chars=10, chunk_delay=0.001)
    seen = Collector()
    reply = await model.complete(MESSAGES, key="dev:a", on_chunk=seen)
    assert reply.content == content == "".join(seen.chunks)
    assert len(seen.chunks) > 5 and all(len(c) <= 10 for c in seen.chunks)
    assert seen.chunks[0] == "line one "  # cut after a space
    assert await model.complete(MESSAGES, key="dev:a") == reply  # and whole without on_chunk
    assert split_chunks("", 5) == [] and split_chunks("abcdefghij", 3) == ["abc", "def", "ghi", "j"]


async def test_a_dev_agent_under_a_worker_streams_the_reply_into_the_task_output(
    provider: ProviderServer, make_queue: Callable[..., RedisTaskQueue], tmp_path: Path
) -> None:
    provider.content = FILE_REPLY
    provider.hold_after = 5
    queue = make_queue()
    await queue.connect()
    settings = ModelSettings(backend="openai", base_url=provider.url, api_key=KEY, max_retries=0)
    agent = DevAgent(settings, TMP_PIPELINE)
    registry = HandlerRegistry()
    registry.register("dev", agent, timeout=30)
    payload = {
        "subtask": {"id": "calc", "description": "a calculator"},
        "workspace": str(tmp_path),
    }
    await queue.enqueue("dev-1", "dev", payload)
    running = asyncio.create_task(Worker(queue, registry, burst=True).run())
    texts: list[str] = []
    async for chunk in queue.stream_output("dev-1"):
        if chunk.kind == "text":
            texts.append(chunk.text)
        if len(texts) == 5:
            task = await queue.get_task("dev-1")
            assert task is not None and task.state == "processing"  # the model is mid-reply
            provider.hold.set()
        if chunk.is_end:
            assert chunk.text == "completed", await queue.get_task("dev-1")
    await running
    assert "".join(texts) == FILE_REPLY
    assert (tmp_path / "calc.py").read_text() == "X = 1\n"


async def test_a_server_that_ignores_stream_true_is_read_as_a_whole_reply(
    provider: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        provider, "_stream", lambda handler, mode, body: provider._answer(handler, mode)
    )
    model = backend(provider)
    seen = Collector()
    reply = await model.complete(MESSAGES, key="k", on_chunk=seen)
    assert seen.chunks == ["hi there"] == [reply.content]
    assert provider.bodies[-1]["stream"] is True
    await model.aclose()
