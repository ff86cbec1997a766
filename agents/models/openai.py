"""A backend for any OpenAI-compatible chat-completions endpoint, over stdlib HTTP.

One request is a blocking urllib call run in a thread, bounded by `timeout` both as the
socket timeout and as a deadline around the whole call (a server that drips bytes cannot
hold it longer). 429, 5xx, timeouts and connection errors are retried up to
`max_retries` times with exponential backoff, or after the server's Retry-After when it
sends one, never longer than `backoff_cap`. The API key goes only into the
Authorization header: never into logs, reprs or errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import http.client
import json
import logging
import random
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message as HeaderMap
from typing import Any

from utils.config import ModelSettings

from .base import Message, ModelReply
from .errors import (
    ModelAuthError,
    ModelError,
    ModelRateLimited,
    ModelRejected,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
)

__all__ = ["OpenAIChatBackend"]

log = logging.getLogger("agentic.agents.model")

_RETRIED = (ModelRateLimited, ModelTimeout, ModelUnavailable)


class OpenAIChatBackend:
    """POST {base_url}/chat/completions with model, messages and temperature."""

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
        backoff_cap: float = 30.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name = name
        self.timeout = timeout
        self.max_retries = max_retries
        self.temperature = temperature
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "agentic-pipeline",
        }
        self._authorization = f"Bearer {api_key}" if api_key else None
        self._redact = functools.partial(redact_key, key=api_key)
        # Honours the *_proxy environment; refuses redirects, so the key never follows one.
        self._opener = urllib.request.build_opener(_NoRedirects)

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> OpenAIChatBackend:
        return cls(
            base_url=settings.base_url,
            name=settings.name,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout=settings.timeout_seconds,
            max_retries=settings.max_retries,
            temperature=settings.temperature,
        )

    def __repr__(self) -> str:  # the key stays out on purpose
        return f"OpenAIChatBackend(url={self.url!r}, name={self.name!r})"

    async def complete(self, messages: list[Message], *, key: str) -> ModelReply:
        body = json.dumps(
            {"model": self.name, "messages": messages, "temperature": self.temperature}
        ).encode()
        attempt = 0
        while True:
            try:
                return _parse(await self._send(body), self.name)
            except _RETRIED as exc:
                if attempt >= self.max_retries:
                    raise
                delay = self._delay(attempt, exc)
                attempt += 1
                log.warning(
                    "model call %s failed (%s); retry %d/%d in %.2f s",
                    key, exc, attempt, self.max_retries, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)

    def _delay(self, attempt: int, exc: ModelError) -> float:
        if exc.retry_after is not None:
            return min(exc.retry_after, self.backoff_cap)
        # Half-to-full jitter, so workers throttled together do not return together.
        backoff = min(self.backoff_cap, self.backoff_base * 2.0**attempt)
        return backoff * (0.5 + random.random() / 2)

    async def _send(self, body: bytes) -> bytes:
        try:
            call = asyncio.get_running_loop().run_in_executor(_CALLS, self._post, body)
            return await asyncio.wait_for(call, self.timeout)
        except TimeoutError:
            raise ModelTimeout(f"no answer from {self.url} within {self.timeout} s") from None

    def _post(self, body: bytes) -> bytes:
        """One blocking request (in a worker thread); errors come out typed."""
        request = urllib.request.Request(self.url, data=body, headers=self._headers)
        if self._authorization:
            request.add_unredirected_header("Authorization", self._authorization)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            with exc:  # closes the response it wraps
                detail = self._redact(exc.read(500).decode("utf-8", "replace"))
            raise _http_error(exc.code, exc.headers, detail, self.url) from None
        except TimeoutError:
            raise ModelTimeout(f"no answer from {self.url} within {self.timeout} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise ModelTimeout(f"{self.url}: {exc.reason}") from None
            raise ModelUnavailable(f"cannot reach {self.url}: {exc.reason}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise ModelUnavailable(f"connection to {self.url} failed: {exc!r}") from None


# Model calls block a thread each. Their own pool keeps a server that drips bytes from
# starving the default executor (file I/O of the agents, the worker's sync handlers);
# a call given up on by its deadline still holds its thread until its socket times out.
_CALLS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="model-call")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A chat-completions endpoint does not redirect a POST; following one would send
    the request (and, with a plain header, the key) to a host nobody configured."""

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> None:
        raise urllib.error.HTTPError(
            req.full_url, code, f"redirect to {newurl} refused", headers, fp
        )


def redact_key(text: str, key: str | None) -> str:
    """`text` without the key, whole or in part: providers quote it back in errors, whole
    or as a prefix and a suffix around stars (OpenAI: "sk-abc1****wxyz")."""
    if not key:
        return text
    text = text.replace(key, "***")
    if len(key) >= 12:  # the prefix of a short key would also match ordinary words
        text = re.sub(re.escape(key[:8]) + r"\S*", "***", text)
    return text


def _http_error(status: int, headers: HeaderMap, detail: str, url: str) -> ModelError:
    message = f"{url} answered {status}: {detail.strip()[:300]}"
    retry_after = _retry_after(headers.get("Retry-After"))
    if status in (401, 403):
        return ModelAuthError(message, status=status)
    if status == 429:
        return ModelRateLimited(message, status=status, retry_after=retry_after)
    if status >= 500 or status == 408:
        return ModelUnavailable(message, status=status, retry_after=retry_after)
    return ModelRejected(message, status=status)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds (fractions accepted) or a date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _parse(raw: bytes, default_model: str) -> ModelReply:
    try:
        data: Any = json.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        snippet = raw[:200].decode("utf-8", "replace")
        raise ModelResponseError(f"not a chat completion ({exc!r}): {snippet!r}") from None
    if not isinstance(content, str):
        raise ModelResponseError(f"the first choice has no text content: {content!r}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ModelReply(
        content=content,
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        model=str(data.get("model") or default_model),
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
