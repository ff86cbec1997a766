"""Redis URLs and errors: which URLs a queue accepts and the topology each names, how
they are shown (passwords masked), and redis-py's exceptions translated into the queue's.
The clients themselves are built in topology.py.

Sentinel URLs: ``sentinel://[user:password@]host1:26379,host2:26379/<master-name>[/<db>]``
(``sentinels://`` for TLS); the password is the primary's; ``?sentinel_password=...``
authenticates to the sentinels when they need it.

Blocking waits (BLPOP, BLMOVE) run on their own client whose socket timeout covers the
longest block, so ordinary commands keep a short timeout and fail fast when Redis is gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import InvalidRedisUrl, QueueError, RedisAuthError, RedisUnavailable, TopologyError

__all__ = [
    "BLOCK_SLICE_SECONDS",
    "Topology",
    "check_url",
    "mask_url",
    "parse_topology",
    "redis_errors",
    "translate_error",
]

# Longest single blocking call; longer waits are re-armed, so a half-open connection is
# noticed within this plus the socket timeout.
BLOCK_SLICE_SECONDS = 10.0


SENTINEL_SCHEMES = ("sentinel", "sentinels")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
DEFAULT_SENTINEL_PORT = 26379
Kind = Literal["single", "cluster", "sentinel"]


def check_url(url: object) -> str:
    """`url` if redis-py can connect with it, else InvalidRedisUrl saying why (the URL
    is named with its password masked)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRedisUrl(f"a Redis URL must be a non-empty string, not {url!r}")
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        # a sentinel URL and a cluster's nodes list hosts: checked by their parser
        if "," not in parts.netloc and parts.scheme not in SENTINEL_SCHEMES:
            parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as exc:
        raise InvalidRedisUrl(f"invalid Redis URL {shown}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise InvalidRedisUrl(
            f"invalid Redis URL {shown}: the scheme must be redis://, rediss://, unix:// or "
            "sentinel:// (sentinels:// for TLS)"
        )
    if parts.scheme in SENTINEL_SCHEMES:
        parse_topology(url)  # raises InvalidRedisUrl saying what is wrong
        return url
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise InvalidRedisUrl(f"invalid Redis URL {shown}: the database must be a number")
    if "," in parts.netloc:
        _hosts(url, "Redis URL", 6379)
    return url


@dataclass(frozen=True, slots=True)
class Topology:
    """Where a queue's Redis is and how to reach it (built by parse_topology)."""

    url: str
    kind: Kind
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    db: int = 0
    ssl: bool = False
    username: str | None = None
    password: str | None = None  # the URL's; a constructor password overrides it
    sentinel_password: str | None = field(default=None, repr=False)
    seeds: tuple[tuple[str, int], ...] = ()  # a cluster URL's nodes, when it lists several

    @property
    def shown(self) -> str:
        """The URL with any password masked (for errors and logs)."""
        return mask_url(self.url)


def parse_topology(url: str, *, cluster: bool = False) -> Topology:
    """The topology a URL (already checked by check_url) names. A cluster URL may list
    several nodes (``redis://h1:7000,h2:7001``): any of them that answers will do, so a
    client still starts while one is down."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SENTINEL_SCHEMES:
        seeds = _hosts(url, "Redis URL", 6379) if "," in urlsplit(url).netloc else ()
        if seeds and not cluster:
            raise InvalidRedisUrl(
                f"invalid Redis URL {mask_url(url)}: several hosts are a cluster's nodes "
                "(add cluster=True, --cluster, AGENTIC_REDIS_CLUSTER=1) or a Sentinel "
                "group's sentinels (use sentinel://)"
            )
        return Topology(url, "cluster" if cluster else "single", seeds=seeds)
    if cluster:
        raise InvalidRedisUrl(
            "a sentinel:// URL names a primary/replica group, not a cluster: drop cluster=True "
            "(--cluster, AGENTIC_REDIS_CLUSTER) or give a cluster node's redis:// URL"
        )
    return _parse_sentinel_url(url)


def _hosts(url: str, what: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """The comma-separated host[:port] list of a URL, or InvalidRedisUrl."""
    hostlist = urlsplit(url).netloc.rpartition("@")[2]
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
            raise InvalidRedisUrl(
                f"invalid {what} {mask_url(url)}: each host is host[:port], comma-separated"
            )
        hosts.append((host, int(port) if port else default_port))
    return tuple(hosts)


def _parse_sentinel_url(url: str) -> Topology:
    parts = urlsplit(url)
    shown = mask_url(url)
    userinfo = parts.netloc.rpartition("@")[0]
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels = _hosts(url, "Sentinel URL", DEFAULT_SENTINEL_PORT)
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise InvalidRedisUrl(
            f"invalid Sentinel URL {shown}: use sentinel://host:port[,host:port...]/<master>[/<db>]"
        )
    query = parse_qs(parts.query)
    return Topology(
        url,
        "sentinel",
        tuple(sentinels),
        master_name=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        ssl=parts.scheme == "sentinels",
        username=username,
        password=password,
        sentinel_password=query.get("sentinel_password", [None])[0],
    )


def mask_url(url: str) -> str:
    """The URL with any password replaced, for error messages and logs."""
    try:
        parts = urlsplit(url)
        if "," in parts.netloc:  # several hosts (Sentinel, a cluster's nodes), one password
            userinfo, at, hosts = parts.netloc.rpartition("@")
            if not at or ":" not in userinfo:
                return url
            user = userinfo.partition(":")[0]
            return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
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


def translate_error(url: str, exc: BaseException) -> QueueError:
    """The queue's exception for one of redis-py's."""
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError):
        return RedisAuthError(mask_url(url), f"refused the credentials (AUTH: {exc})")
    if isinstance(exc, NoPermissionError):
        return RedisAuthError(mask_url(url), f"denied the command (NOPERM: {exc})")
    if isinstance(exc, ReadOnlyError):
        return TopologyError(
            f"Redis at {mask_url(url)} is a read-only replica now (READONLY: {exc}); a plain "
            "URL does not follow a failover: use a sentinel:// URL, or point it at the primary"
        )
    if isinstance(exc, MovedError | AskError):
        return TopologyError(
            f"Redis at {mask_url(url)} answered MOVED/ASK ({exc}): it is a Redis Cluster node; "
            "connect with cluster=True (--cluster, AGENTIC_REDIS_CLUSTER=1)"
        )
    if isinstance(
        exc, RedisConnectionError | RedisTimeoutError | OSError | ClusterDownError | TryAgainError
    ):
        return RedisUnavailable(mask_url(url), exc)
    if isinstance(exc, RedisClusterException):
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
    except QueueError:
        raise  # already the queue's (RedisUnavailable is an OSError too)
    except (RedisError, OSError) as exc:
        raise translate_error(url, exc) from exc
