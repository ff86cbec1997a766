"""Redis clients for a queue: one for ordinary commands, one for blocking waits.

Blocking waits (BLPOP, BLMOVE) run on their own pool whose socket timeout covers the
longest block, so ordinary commands keep a short timeout and fail fast when Redis is gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    NoPermissionError,
    OutOfMemoryError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import InvalidRedisUrl, QueueError, RedisAuthError, RedisUnavailable

__all__ = [
    "BLOCK_SLICE_SECONDS",
    "check_url",
    "make_client",
    "mask_url",
    "redis_errors",
    "translate_error",
]

# Longest single blocking call; longer waits are re-armed, so a half-open connection is
# noticed within this plus the socket timeout.
BLOCK_SLICE_SECONDS = 10.0


SCHEMES = ("redis", "rediss", "unix")


def check_url(url: object) -> str:
    """`url` if redis-py can connect with it, else InvalidRedisUrl saying why (the URL
    is named with its password masked)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRedisUrl(f"a Redis URL must be a non-empty string, not {url!r}")
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as exc:
        raise InvalidRedisUrl(f"invalid Redis URL {shown}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise InvalidRedisUrl(
            f"invalid Redis URL {shown}: the scheme must be redis://, rediss:// or unix://"
        )
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise InvalidRedisUrl(f"invalid Redis URL {shown}: the database must be a number")
    return url


def mask_url(url: str) -> str:
    """The URL with any password replaced, for error messages and logs."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:  # a malformed netloc: keep only what cannot carry a secret
        return url.split("@")[-1] if "@" in url else url
    if password is None:
        return url
    host = parts.hostname or ""
    if port:
        host = f"{host}:{port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def make_client(
    url: str,
    *,
    password: str | None,
    socket_timeout: float,
    connect_timeout: float,
    blocking: bool = False,
) -> Redis:
    timeout = socket_timeout + BLOCK_SLICE_SECONDS if blocking else socket_timeout
    return Redis.from_url(
        url,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        # One quick reconnect covers a pooled connection that died with a Redis restart.
        # Timeouts are not retried: a server that does not answer costs one timeout.
        retry=Retry(
            ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(RedisConnectionError,)
        ),
        retry_on_timeout=False,
        health_check_interval=30,
        decode_responses=False,
    )


def translate_error(url: str, exc: BaseException) -> QueueError:
    """The queue's exception for one of redis-py's."""
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError):
        return RedisAuthError(mask_url(url), f"refused the credentials (AUTH: {exc})")
    if isinstance(exc, NoPermissionError):
        return RedisAuthError(mask_url(url), f"denied the command (NOPERM: {exc})")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return RedisUnavailable(mask_url(url), exc)
    if isinstance(exc, OutOfMemoryError):
        return QueueError(
            f"Redis at {mask_url(url)} is out of memory and refused the command (OOM: {exc}); "
            "new work is refused while workers can still finish and clean up"
        )
    if isinstance(exc, ResponseError):
        return QueueError(f"Redis at {mask_url(url)} refused the command: {exc}")
    return QueueError(f"Redis at {mask_url(url)}: {exc}")


@asynccontextmanager
async def redis_errors(url: str) -> AsyncIterator[None]:
    """Translate redis-py's transport and command errors into the queue's exceptions."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise translate_error(url, exc) from exc
