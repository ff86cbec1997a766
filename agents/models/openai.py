"""A backend for any OpenAI-compatible chat-completions endpoint, over httpx's AsyncClient.

Native asyncio, no threads: a process has as many calls in flight as its worker runs
tasks (`-c`), over one connection pool per backend and event loop.

Budget of one `complete()` (documented in the README, "Model backend"):
- each request has a total deadline, `timeout` (sending, waiting and reading the whole
  body): a server that drips its reply a byte at a time is cut off at it, and the
  cancellation closes the connection, so nothing outlives the call;
- 429, 5xx, timeouts and connection errors are retried up to `max_retries` times with
  exponential backoff, or after the server's Retry-After (at most RETRY_AFTER_CAP);
- all of it within `deadline` seconds: no retry starts that its wait would push past the
  deadline, and the last request gets only what is left. So one call costs at most
  `max_retries + 1` requests and `deadline` seconds, whatever the provider does.

The API key goes only into the Authorization header of requests to the configured URL
(redirects are not followed): never into logs, reprs or errors, which lose it (and any
bearer token or sk- key a provider echoes back) before they are raised.

Streaming: `complete(..., on_chunk=f)` asks for `stream: true` (with `stream_options:
{include_usage: true}`) and awaits `f(text)` for each piece of content as the server-sent
events arrive; the reply and its usage (from the final chunk) are as without streaming,
under the same deadlines, size bound, redaction and usage checks. A retry after some text
was passed on first passes on RETRY_NOTICE, so a reader knows the text starts over. A
server that ignores stream=true (its answer is not text/event-stream) is read as a whole
reply, passed on in one piece.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx

from utils.config import ModelSettings
from utils.redaction import redact_secrets

from .base import ChunkCallback, Message, ModelReply, token_count
from .errors import (
    RETRY_AFTER_CAP,
    ModelAuthError,
    ModelError,
    ModelRateLimited,
    ModelRejected,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
)

__all__ = ["RETRY_NOTICE", "OpenAIChatBackend", "redact_key"]

log = logging.getLogger("agentic.agents.model")

_RETRIED = (ModelRateLimited, ModelTimeout, ModelUnavailable)
MAX_BODY_BYTES = 16 * 2**20  # a chat completion is kilobytes; more is a broken server
_ERROR_BODY_BYTES = 2000  # what an error reply may say, of which 300 characters are kept
# httpcore's pool walks every connection of its pool for each request it places (checking
# each idle one's socket), so one pool of 64 kept-alive connections costs ~1 s of CPU per
# 64 calls; 16 pools taken in turn keep each small (64 calls at once: 0.15 s).
_POOLS = 16
_KEEPALIVE = 8  # idle connections kept per pool
RETRY_NOTICE = "\n[the model call is retried; its answer starts over]\n"


class OpenAIChatBackend:
    """POST {base_url}/chat/completions with model, messages and temperature."""

    supports_streaming = True  # complete() takes on_chunk

    def __init__(
        self,
        *,
        base_url: str,
        name: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        temperature: float = 0.0,
        backoff_base: float = 0.5,
        backoff_cap: float = RETRY_AFTER_CAP,
        deadline: float = 200.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name = name
        self.timeout = timeout
        self.max_retries = max_retries
        self.temperature = temperature
        self.backoff_base = backoff_base
        self.backoff_cap = min(backoff_cap, RETRY_AFTER_CAP)
        self.deadline = deadline
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "agentic-pipeline",
        }
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._key = api_key
        # An AsyncClient belongs to the loop it first ran on: one per loop, closed with it.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pools] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> OpenAIChatBackend:
        return cls(
            base_url=settings.base_url,
            name=settings.name,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
            temperature=settings.temperature,
            deadline=settings.deadline_seconds,
        )

    def __repr__(self) -> str:  # the key stays out on purpose
        return f"OpenAIChatBackend(url={self.url!r}, name={self.name!r})"

    async def complete(
        self, messages: list[Message], *, key: str, on_chunk: ChunkCallback | None = None
    ) -> ModelReply:
        request: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "temperature": self.temperature,
        }
        if on_chunk is not None:
            request.update(stream=True, stream_options={"include_usage": True})
        body = json.dumps(request).encode()
        end = time.monotonic() + self.deadline
        attempt = 0
        passed_on = [False]  # whether text went to on_chunk (a retry then says so first)
        while True:
            left = end - time.monotonic()
            try:
                if left <= 0:
                    raise ModelTimeout(f"{self.url}: the call's {self.deadline} s deadline passed")
                if on_chunk is not None:
                    if passed_on[0]:
                        await on_chunk(RETRY_NOTICE)
                    return await self._stream(body, min(self.timeout, left), on_chunk, passed_on)
                return self._parse(await self._send(body, min(self.timeout, left)))
            except _RETRIED as exc:
                delay = self._delay(attempt, exc)
                if attempt >= self.max_retries or time.monotonic() + delay >= end:
                    raise
                attempt += 1
                log.warning(
                    "model call %s failed (%s); retry %d/%d in %.2f s",
                    key, exc, attempt, self.max_retries, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close this loop's connections (they are also closed when the loop shuts down)."""
        pools = self._clients.pop(asyncio.get_running_loop(), None)
        if pools is not None:
            await pools.aclose()

    def _delay(self, attempt: int, exc: ModelError) -> float:
        if exc.retry_after is not None:
            return min(exc.retry_after, self.backoff_cap)
        # Half-to-full jitter, so workers throttled together do not return together.
        backoff = min(self.backoff_cap, self.backoff_base * 2.0**attempt)
        return backoff * (0.5 + random.random() / 2)

    async def _send(self, body: bytes, timeout: float) -> bytes:
        """One request within `timeout` seconds in all; errors come out typed."""
        client = await self._client()
        try:
            async with asyncio.timeout(timeout):
                async with client.stream(
                    "POST", self.url, content=body, headers=self._headers
                ) as response:
                    if response.status_code >= 300:
                        detail = await _read(response, _ERROR_BODY_BYTES, truncate=True)
                        raise self._http_error(response, detail)
                    return await _read(response, MAX_BODY_BYTES, truncate=False)
        except (TimeoutError, httpx.TimeoutException):
            raise ModelTimeout(f"no answer from {self.url} within {timeout:.3g} s") from None
        except httpx.ConnectError as exc:
            raise ModelUnavailable(f"cannot reach {self.url}: {self._clean(exc)}") from None
        except httpx.HTTPError as exc:  # dropped connections, protocol errors
            reason = f"{type(exc).__name__}: {self._clean(exc)}"
            raise ModelUnavailable(f"connection to {self.url} failed: {reason}") from None

    async def _stream(
        self, body: bytes, timeout: float, on_chunk: ChunkCallback, passed_on: list[bool]
    ) -> ModelReply:
        """One streamed request within `timeout` seconds in all (the events, and what
        on_chunk takes to store each); errors as _send's."""
        client = await self._client()
        headers = {**self._headers, "Accept": "text/event-stream"}
        try:
            async with asyncio.timeout(timeout):
                async with client.stream(
                    "POST", self.url, content=body, headers=headers
                ) as response:
                    if response.status_code >= 300:
                        detail = await _read(response, _ERROR_BODY_BYTES, truncate=True)
                        raise self._http_error(response, detail)
                    if "text/event-stream" not in response.headers.get("content-type", ""):
                        # A server that ignores stream=true answers the whole reply at once
                        reply = self._parse(await _read(response, MAX_BODY_BYTES, truncate=False))
                        if reply.content:
                            passed_on[0] = True
                            await on_chunk(reply.content)
                        return reply
                    events = _SseReply(self._key)
                    async for line in _lines(response):
                        text = events.feed(line)
                        if text:
                            passed_on[0] = True
                            await on_chunk(text)
                        if events.done:
                            break
                    return self._reply(*events.finish(self.url))
        except (TimeoutError, httpx.TimeoutException):
            raise ModelTimeout(f"no answer from {self.url} within {timeout:.3g} s") from None
        except httpx.ConnectError as exc:
            raise ModelUnavailable(f"cannot reach {self.url}: {self._clean(exc)}") from None
        except httpx.HTTPError as exc:  # dropped connections, protocol errors
            reason = f"{type(exc).__name__}: {self._clean(exc)}"
            raise ModelUnavailable(f"connection to {self.url} failed: {reason}") from None

    async def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        pools = self._clients.get(loop)
        if pools is None:
            pools = self._clients[loop] = _Pools(self.timeout)
            await pools.close_with_loop()
        return pools.next()

    def _clean(self, exc: BaseException) -> str:
        return " ".join(redact_secrets(str(exc) or repr(exc), self._key).split())

    def _http_error(self, response: httpx.Response, raw: bytes) -> ModelError:
        status = response.status_code
        detail = " ".join(redact_secrets(raw.decode("utf-8", "replace"), self._key).split())
        message = f"{self.url} answered {status}: {detail[:300]}"
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if retry_after is not None and retry_after > RETRY_AFTER_CAP:
            message += f" (Retry-After {retry_after:.0f} s, capped at {RETRY_AFTER_CAP:.0f} s)"
            retry_after = RETRY_AFTER_CAP
        if status in (401, 403):
            return ModelAuthError(message, status=status)
        if status == 429:
            return ModelRateLimited(message, status=status, retry_after=retry_after)
        if status >= 500 or status == 408:
            return ModelUnavailable(message, status=status, retry_after=retry_after)
        return ModelRejected(message, status=status)

    def _parse(self, raw: bytes) -> ModelReply:
        try:
            data: Any = json.loads(raw)
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            snippet = redact_secrets(raw[:200].decode("utf-8", "replace"), self._key)
            raise ModelResponseError(f"not a chat completion ({exc!r}): {snippet!r}") from None
        if not isinstance(content, str):
            shown = redact_secrets(repr(content)[:200], self._key)
            raise ModelResponseError(f"the first choice has no text content: {shown}")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return self._reply(content, usage, data.get("model"))

    def _reply(self, content: str, usage: dict[str, Any], model: object) -> ModelReply:
        """The reply with its usage checked (clamped and flagged, never raised)."""
        prompt, prompt_flag = token_count(usage.get("prompt_tokens"))
        completion, completion_flag = token_count(usage.get("completion_tokens"))
        flags = tuple(f"{name}: {flag}" for name, flag in (
            ("prompt_tokens", prompt_flag), ("completion_tokens", completion_flag)) if flag
        )  # fmt: skip
        if flags:
            log.warning("%s reported a bad usage (%s); counted as %d + %d tokens",
                        self.url, "; ".join(flags), prompt, completion)  # fmt: skip
        return ModelReply(content, prompt, completion, str(model or self.name), flags)


class _SseReply:
    """A chat completion streamed as server-sent events ("data: {...}" lines, ended by
    "data: [DONE]"): each event's content delta, and at the end the whole content, the
    usage of the final chunk and the model name."""

    def __init__(self, key: str | None) -> None:
        self._key = key
        self.parts: list[str] = []
        self.size = 0
        self.usage: dict[str, Any] = {}
        self.model: object = None
        self.done = False

    def feed(self, line: str) -> str:
        """The text of one line's event ('' for comments, other fields, usage chunks)."""
        if not line.startswith("data:"):
            return ""  # blank separators, ": keep-alive" comments, event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return ""
        try:
            event: Any = json.loads(data)
            choices = event.get("choices") or []
            delta = choices[0].get("delta") or {} if choices else {}
            text = delta.get("content") or ""
        except (ValueError, AttributeError, IndexError, TypeError) as exc:
            snippet = redact_secrets(data[:200], self._key)
            raise ModelResponseError(
                f"not a chat completion event ({exc!r}): {snippet!r}"
            ) from None
        if not isinstance(text, str):
            shown = redact_secrets(repr(text)[:200], self._key)
            raise ModelResponseError(f"an event's delta has no text content: {shown}")
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        self.model = event.get("model") or self.model
        self.size += len(text)
        if self.size > MAX_BODY_BYTES:
            raise ModelResponseError(f"a reply larger than {MAX_BODY_BYTES} bytes")
        if text:
            self.parts.append(text)
        return text

    def finish(self, url: str) -> tuple[str, dict[str, Any], object]:
        if not self.done:  # the connection ended before [DONE]: a cut answer, retried
            raise ModelUnavailable(f"{url} ended its event stream before [DONE]")
        return "".join(self.parts), self.usage, self.model


class _Pools:
    """One backend's connection pools in one event loop, taken in turn, closed with the
    loop: a suspended async generator is finished by the loop's shutdown_asyncgens()
    (asyncio.run and asyncio.Runner call it before closing), after the loop's tasks were
    cancelled, so closing never waits on a request and a finished loop leaves no socket."""

    def __init__(self, timeout: float) -> None:
        tls = httpx.create_ssl_context()  # one for all: each costs ~30 ms (the CA bundle)
        self.clients = [
            httpx.AsyncClient(
                verify=tls,
                timeout=httpx.Timeout(timeout),  # per operation; the total deadline is ours
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=_KEEPALIVE),
                follow_redirects=False,  # the key never follows a redirect
            )
            for _ in range(_POOLS)
        ]
        self._turn = itertools.cycle(self.clients)
        self._closer: AsyncIterator[None] | None = None

    def next(self) -> httpx.AsyncClient:
        return next(self._turn)

    async def close_with_loop(self) -> None:
        self._closer = self._close_at_loop_end()
        await anext(self._closer)

    async def _close_at_loop_end(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


async def _read(response: httpx.Response, limit: int, *, truncate: bool) -> bytes:
    """At most `limit` bytes of the body: an error's first ones, or a reply that is not
    larger (a larger one is a ModelResponseError, not a memory hog)."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            if truncate:
                return bytes(data[:limit])
            raise ModelResponseError(f"a reply larger than {limit} bytes")
    return bytes(data)


async def _lines(response: httpx.Response) -> AsyncIterator[str]:
    """The body's lines (LF or CRLF), none longer than MAX_BODY_BYTES: a server that never
    ends a line is a ModelResponseError, not a memory hog."""
    pending = b""
    async for chunk in response.aiter_bytes():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
        if len(pending) > MAX_BODY_BYTES:
            raise ModelResponseError(f"an event line longer than {MAX_BODY_BYTES} bytes")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")


def redact_key(text: str, key: str | None) -> str:
    """`text` without the key (whole or quoted from its prefix) and any bearer token."""
    return redact_secrets(text, key)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds (fractions accepted) or a date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer
