"""Model backends against a real local HTTP server speaking the chat-completions protocol
(and the replay backend against real files): retries, timeouts, typed errors."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agents import (
    DevAgent,
    ModelAuthError,
    ModelRateLimited,
    ModelRejected,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
    OpenAIChatBackend,
    ReplayBackend,
    ReplayError,
    ReplayMissing,
    build_backend,
)
from tests.support.redis_server import free_port
from utils.config import ModelSettings, PipelineSettings
from utils.redis_queue.handlers import PermanentFailure, RateLimited, TaskContext
from utils.redis_queue.models import RedisTask

MESSAGES = [{"role": "user", "content": "say hi"}]


def completion(content: str = "hi there", prompt: int = 12, completion: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "test-model-0001",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


@dataclass
class Answer:
    status: int = 200
    body: bytes | dict[str, Any] = field(default_factory=completion)
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the test ends)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ChatServer:
    """A chat-completions endpoint on 127.0.0.1 answering from a script; the last
    answer repeats once the script runs out."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.requests: list[Received] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(Received(self.path, dict(self.headers.items()), body))
                answer = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                if answer.hang:
                    server.release.wait(10)
                    return
                data = answer.body
                raw = data if isinstance(data, bytes) else json.dumps(data).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        # A short poll interval only makes shutdown() at teardown quick.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def backend(self, **kwargs: Any) -> OpenAIChatBackend:
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "name": "test-model",
            "api_key": "sk-test-secret",
            "timeout": 2.0,
            "max_retries": 3,
            "backoff_base": 0.01,
            "backoff_cap": 1.0,
        }
        options.update(kwargs)
        return OpenAIChatBackend(**options)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 must not go through a proxy
    chat = ChatServer()
    chat.thread.start()
    try:
        yield chat
    finally:
        chat.release.set()
        chat.httpd.shutdown()
        chat.httpd.server_close()
        chat.thread.join(5)


async def test_success_returns_content_usage_and_sends_the_request(server: ChatServer) -> None:
    server.script = [Answer(body=completion("hello", prompt=21, completion=5))]
    reply = await server.backend(temperature=0.3).complete(MESSAGES, key="dev:x")

    assert (reply.content, reply.prompt_tokens, reply.completion_tokens) == ("hello", 21, 5)
    assert reply.model == "test-model-0001"
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body == {"model": "test-model", "messages": MESSAGES, "temperature": 0.3}
    assert request.headers["Authorization"] == "Bearer sk-test-secret"
    assert request.headers["Content-Type"] == "application/json"


async def test_no_authorization_header_without_a_key(server: ChatServer) -> None:
    server.script = [Answer()]
    await server.backend(api_key=None).complete(MESSAGES, key="k")
    assert "Authorization" not in server.requests[0].headers


async def test_429_is_retried_after_the_servers_retry_after(server: ChatServer) -> None:
    server.script = [Answer(429, {"error": "slow down"}, {"Retry-After": "0.3"}), Answer()]
    started = time.monotonic()
    reply = await server.backend().complete(MESSAGES, key="k")
    assert reply.content == "hi there"
    assert len(server.requests) == 2
    assert time.monotonic() - started >= 0.3  # the server's wait, not the 0.01 s backoff


async def test_retry_after_is_capped(server: ChatServer) -> None:
    server.script = [Answer(429, {"error": "later"}, {"Retry-After": "3600"}), Answer()]
    started = time.monotonic()
    await server.backend(backoff_cap=0.05).complete(MESSAGES, key="k")
    assert time.monotonic() - started < 5


async def test_429_until_retries_run_out_raises_rate_limited(server: ChatServer) -> None:
    server.script = [Answer(429, {"error": "no"}, {"Retry-After": "0"})]
    with pytest.raises(ModelRateLimited) as caught:
        await server.backend(max_retries=2).complete(MESSAGES, key="k")
    assert caught.value.status == 429 and caught.value.retry_after == 0
    assert len(server.requests) == 3


async def test_500_then_success(server: ChatServer) -> None:
    server.script = [Answer(500, {"error": "boom"}), Answer(503, b"busy"), Answer()]
    reply = await server.backend().complete(MESSAGES, key="k")
    assert reply.content == "hi there" and len(server.requests) == 3


async def test_5xx_until_retries_run_out_raises_unavailable(server: ChatServer) -> None:
    server.script = [Answer(502, b"bad gateway")]
    with pytest.raises(ModelUnavailable, match="502"):
        await server.backend(max_retries=1).complete(MESSAGES, key="k")
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_are_not_retried_and_hide_the_key(
    server: ChatServer, status: int
) -> None:
    server.script = [Answer(status, {"error": "invalid api key"})]
    backend = server.backend()
    with pytest.raises(ModelAuthError) as caught:
        await backend.complete(MESSAGES, key="k")
    assert caught.value.status == status and not caught.value.retryable
    assert len(server.requests) == 1
    assert "sk-test-secret" not in str(caught.value) + repr(backend)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_refused_and_the_key_never_follows_it(
    server: ChatServer, status: int
) -> None:
    other = ChatServer()  # where the redirect points: must see no request at all
    other.script = [Answer()]
    other.thread.start()
    try:
        location = other.base_url + "/chat/completions"
        server.script = [Answer(status, b"", {"Location": location})]
        with pytest.raises(ModelRejected, match=f"answered {status}") as caught:
            await server.backend().complete(MESSAGES, key="k")
    finally:
        other.httpd.shutdown()
        other.httpd.server_close()
        other.thread.join(5)
    assert not caught.value.retryable and len(server.requests) == 1
    assert other.requests == []


async def test_other_4xx_is_rejected_without_retry(server: ChatServer) -> None:
    server.script = [Answer(400, {"error": "context too long"})]
    with pytest.raises(ModelRejected, match="context too long"):
        await server.backend().complete(MESSAGES, key="k")
    assert len(server.requests) == 1


async def test_a_server_that_never_answers_times_out(server: ChatServer) -> None:
    server.script = [Answer(hang=True)]
    started = time.monotonic()
    with pytest.raises(ModelTimeout):
        await server.backend(timeout=0.3, max_retries=1).complete(MESSAGES, key="k")
    assert len(server.requests) == 2  # a timeout is retried
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "body",
    [b"<html>gateway</html>", {"choices": []}, {"choices": [{"message": {"content": None}}]}],
    ids=["not-json", "no-choices", "no-content"],
)
async def test_a_malformed_body_is_a_response_error(server: ChatServer, body: Any) -> None:
    server.script = [Answer(200, body)]
    with pytest.raises(ModelResponseError):
        await server.backend().complete(MESSAGES, key="k")
    assert len(server.requests) == 1


async def test_usage_missing_counts_zero(server: ChatServer) -> None:
    body = completion()
    del body["usage"]
    server.script = [Answer(200, body)]
    reply = await server.backend().complete(MESSAGES, key="k")
    assert (reply.prompt_tokens, reply.completion_tokens) == (0, 0)


async def test_connection_refused_is_unavailable_after_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    backend = OpenAIChatBackend(
        base_url=f"http://127.0.0.1:{free_port()}/v1", name="m", max_retries=1, backoff_base=0.01
    )
    with pytest.raises(ModelUnavailable, match="cannot reach"):
        await backend.complete(MESSAGES, key="k")


# -- agents map model errors to queue outcomes -------------------------------------------


def _dev_context(workspace: Path) -> TaskContext:
    payload = {"subtask": {"id": "calc", "files": ["calc.py"]}, "workspace": str(workspace)}
    task = RedisTask("t-1", "dev", payload, 1, "processing", attempts=1, lease_token=7)
    return TaskContext(task=task, worker_id="w", queue_name="q", lease_token=7)


def _agent_on(backend: OpenAIChatBackend) -> DevAgent:
    factory: Callable[[Any], OpenAIChatBackend] = lambda overrides: backend  # noqa: E731
    # The tests' workspaces are temporary directories: the agent must accept them.
    pipeline = PipelineSettings(workspace_root=Path(tempfile.gettempdir()))
    return DevAgent(pipeline=pipeline, backend_factory=factory)


async def test_an_agent_dead_letters_an_auth_error(server: ChatServer, tmp_path: Path) -> None:
    server.script = [Answer(401, {"error": "bad key"})]
    with pytest.raises(PermanentFailure, match="ModelAuthError"):
        await _agent_on(server.backend())(_dev_context(tmp_path))


async def test_an_agent_turns_a_rate_limit_into_a_fleet_wide_pause(
    server: ChatServer, tmp_path: Path
) -> None:
    """A 429 (after the backend's own retries) pauses the task's limits for the provider's
    Retry-After instead of spending an attempt (see tests/test_limits_fleet.py)."""
    server.script = [Answer(429, {"error": "quota"}, {"Retry-After": "0.01"})]
    with pytest.raises(RateLimited) as caught:
        await _agent_on(server.backend(max_retries=0))(_dev_context(tmp_path))
    assert caught.value.retry_after == pytest.approx(0.01)
    assert caught.value.limits == ()  # the task listed none: every limit it is bound by


async def test_an_agent_reports_the_tokens_it_used(server: ChatServer, tmp_path: Path) -> None:
    content = "Done.\n\nFile: calc.py\n```python\nX = 1\n```\n"
    server.script = [Answer(body=completion(content, prompt=100, completion=20))]
    ctx = _dev_context(tmp_path)
    await _agent_on(server.backend())(ctx)
    assert ctx.tokens_used == 120  # what token limits are charged at settle


async def test_an_agent_writes_files_from_a_live_reply(server: ChatServer, tmp_path: Path) -> None:
    content = "Done.\n\nFile: calc.py\n```python\nX = 1\n```\n"
    server.script = [Answer(body=completion(content, prompt=100, completion=20))]
    result = await _agent_on(server.backend())(_dev_context(tmp_path))
    assert result["files"] == ["calc.py"] and (tmp_path / "calc.py").read_text() == "X = 1\n"
    assert result["usage"]["total_tokens"] == 120
    user = server.requests[0].body["messages"][1]["content"]
    assert "calc.py" in user


# -- replay backend and build_backend ------------------------------------------------------


def _replay_file(tmp_path: Path, replies: dict[str, Any]) -> Path:
    path = tmp_path / "replay.json"
    path.write_text(json.dumps({"model": "recorded-1", "replies": replies}))
    return path


async def test_replay_answers_by_key(tmp_path: Path) -> None:
    path = _replay_file(
        tmp_path,
        {"dev:a": {"content": "A", "usage": {"prompt_tokens": 7, "completion_tokens": 2}}},
    )
    reply = await ReplayBackend(path).complete(MESSAGES, key="dev:a")
    assert (reply.content, reply.prompt_tokens, reply.completion_tokens, reply.model) == (
        "A", 7, 2, "recorded-1",
    )  # fmt: skip


async def test_replay_missing_key_names_key_and_file(tmp_path: Path) -> None:
    path = _replay_file(tmp_path, {"dev:a": {"content": "A"}})
    with pytest.raises(ReplayMissing) as caught:
        await ReplayBackend(path).complete(MESSAGES, key="fix:fix-9")
    assert "fix:fix-9" in str(caught.value) and str(path) in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize("text", ["not json", '{"replies": []}', '{"replies": {"k": {}}}'])
async def test_a_broken_replay_file_is_a_replay_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(ReplayError, match=r"broken\.json"):
        await ReplayBackend(path).complete(MESSAGES, key="k")


def test_build_backend_caches_per_configuration(tmp_path: Path) -> None:
    settings = ModelSettings(backend="openai", api_key=SecretStr("sk-x"))
    first = build_backend(settings)
    assert build_backend(settings) is first and isinstance(first, OpenAIChatBackend)
    assert build_backend(settings, {"name": "other"}) is not first
    replay = _replay_file(tmp_path, {})
    overridden = build_backend(settings, {"backend": "replay", "replay_file": str(replay)})
    assert isinstance(overridden, ReplayBackend) and overridden.path == replay


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_key": "sk-evil"}, "may set only"),
        ({"base_url": "http://evil.example"}, "may set only"),
        ({"backend": "replay", "replay_file": "relative.json"}, "absolute"),
        ({"backend": "nope"}, "invalid model overrides"),
        ({"backend": "replay"}, "replay_file"),
    ],
)
def test_build_backend_refuses_bad_overrides(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_backend(ModelSettings(), overrides)


def test_free_port_is_closed() -> None:
    # The refused-connection test relies on nothing listening on a fresh free port.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", free_port())) != 0
