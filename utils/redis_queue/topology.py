"""Which Redis a queue talks to: one server, a Sentinel-managed primary, or a Redis Cluster.

A `Topology` is read from the URL and the `cluster` flag; `async_client()` and
`sync_client()` build the matching redis-py client (Redis, a Sentinel master client, or
RedisCluster), each following failovers and MOVED/ASK by itself. `check_server()` runs at
connect and refuses a server that cannot serve the queue as configured (a read-only
replica, a cluster node without `cluster=True`, a plain server with it), with a clear
TopologyError instead of a generic failure later.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.retry import Retry as SyncRetry
from redis.sentinel import Sentinel as SyncSentinel

from .connection import Topology
from .errors import RedisUnavailable, TopologyError

__all__ = [
    "AnyRedis",
    "async_client",
    "check_server",
    "close_client",
    "sync_client",
]

AnyRedis = Redis | RedisCluster


def _options(
    topology: Topology, password: str | None, socket_timeout: float, connect_timeout: float
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "decode_responses": False,
    }
    if password is not None:
        options["password"] = password
    return options


def async_client(
    topology: Topology,
    *,
    password: str | None,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
) -> AnyRedis:
    """The redis.asyncio client for `topology`. Pools hold up to `max_connections` (per
    node on a cluster); the queue bounds its own concurrency to that, so a call waits for
    a connection instead of failing with "Too many connections"."""
    options = _options(topology, password, socket_timeout, connect_timeout)
    if topology.kind == "cluster":
        return RedisCluster.from_url(
            _first_seed_url(topology),
            startup_nodes=[AsyncClusterNode(h, p) for h, p in topology.seeds] or None,
            max_connections=max_connections,
            # MOVED, ASK, TRYAGAIN and a failover's CLUSTERDOWN are retried by the client
            # after refreshing its slot table.
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 6),
            **options,
        )
    # One quick reconnect covers a pooled connection that died with a Redis restart or
    # a failover. Timeouts are not retried: a server that does not answer costs one timeout.
    retry = Retry(
        ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(RedisConnectionError,)
    )
    if topology.kind == "sentinel":
        sentinel = Sentinel(
            topology.sentinels,
            sentinel_kwargs=_sentinel_kwargs(topology, connect_timeout),
            **options,
        )
        master: Redis = sentinel.master_for(
            topology.master_name,
            db=topology.db,
            username=topology.username,
            password=password if password is not None else topology.password,
            ssl=topology.ssl,
            max_connections=max_connections,
            retry=retry,
            retry_on_timeout=False,
            health_check_interval=30,
        )
        return master
    return Redis.from_url(
        topology.url,
        max_connections=max_connections,
        retry=retry,
        retry_on_timeout=False,
        health_check_interval=30,
        **options,
    )


async def close_client(client: AnyRedis) -> None:
    """Close a client from async_client(), with the connections a Sentinel master client
    keeps to the sentinels themselves."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def sync_client(
    topology: Topology, *, password: str | None, socket_timeout: float, connect_timeout: float
) -> SyncRedis | SyncRedisCluster:
    """The sync redis-py client for `topology` (the lease keeper, the metrics collector)."""
    options = _options(topology, password, socket_timeout, connect_timeout)
    if topology.kind == "cluster":
        return SyncRedisCluster.from_url(
            _first_seed_url(topology),
            startup_nodes=[SyncClusterNode(h, p) for h, p in topology.seeds] or None,  # type: ignore[no-untyped-call]
            retry=SyncRetry(ExponentialBackoff(cap=1.0, base=0.05), 6),
            **options,
        )
    retry = SyncRetry(
        ExponentialBackoff(cap=0.2, base=0.02), 1, supported_errors=(RedisConnectionError,)
    )
    if topology.kind == "sentinel":
        sentinel = SyncSentinel(
            topology.sentinels,
            sentinel_kwargs=_sentinel_kwargs(topology, connect_timeout, sync=True),
            **options,
        )
        client: SyncRedis = sentinel.master_for(
            topology.master_name,
            db=topology.db,
            username=topology.username,
            password=password if password is not None else topology.password,
            ssl=topology.ssl,
            retry=retry,
        )
        return client
    return SyncRedis.from_url(topology.url, retry=retry, **options)


def _first_seed_url(topology: Topology) -> str:
    """A one-host URL (what redis-py parses) for a cluster URL that lists several."""
    if not topology.seeds:
        return topology.url
    parts = urlsplit(topology.url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    host, port = topology.seeds[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{port}"))


def _sentinel_kwargs(
    topology: Topology, connect_timeout: float, sync: bool = False
) -> dict[str, Any]:
    # No retries of its own: redis-py's default spends seconds per sentinel that is down,
    # and the client already asks the next sentinel.
    kwargs: dict[str, Any] = {
        "socket_timeout": connect_timeout,
        "socket_connect_timeout": connect_timeout,
        "ssl": topology.ssl,
        "retry": (SyncRetry if sync else Retry)(NoBackoff(), 0),
    }
    if topology.sentinel_password:
        kwargs["password"] = topology.sentinel_password
    return kwargs


async def check_server(client: AnyRedis, topology: Topology) -> None:
    """Refuse a server that cannot serve this queue as configured: TopologyError when the
    URL names a read-only replica, a cluster node without cluster=True, or a plain server
    with it; RedisUnavailable when it cannot be reached; for Sentinel, TopologyError when
    the sentinels answer but know no primary of that name."""
    try:
        if isinstance(client, RedisCluster):
            await client.initialize()
            return
        try:
            info = await client.info("replication")
        except ResponseError:  # INFO refused (ACLs, managed Redis): trust the configuration
            return
        cluster_info = await _cluster_enabled(client)
    except MasterNotFoundError:
        raise await _sentinel_problem(topology) from None
    except RedisClusterException as exc:
        raise TopologyError(
            f"Redis at {topology.shown} is not a usable cluster node ({exc}); without a "
            "Redis Cluster, drop cluster=True (--cluster, AGENTIC_REDIS_CLUSTER)"
        ) from None
    if cluster_info:
        raise TopologyError(
            f"Redis at {topology.shown} is a Redis Cluster node: connect with cluster=True "
            "(--cluster, AGENTIC_REDIS_CLUSTER=1), or keys of other slots answer MOVED"
        )
    role = str(info.get("role", "master"))
    if role != "master":
        primary = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
        raise TopologyError(
            f"Redis at {topology.shown} is a read-only replica (of {primary}): point the URL "
            "at the primary, or use a sentinel:// URL so failovers are followed"
        )


async def _cluster_enabled(client: Redis) -> bool:
    try:
        info = await client.info("cluster")
    except ResponseError:  # INFO refused (ACLs, managed Redis): trust the configuration
        return False
    return bool(int(info.get("cluster_enabled", 0) or 0))


async def _sentinel_problem(topology: Topology) -> Exception:
    """Tell a wrong master name (the sentinels answer but do not know it) from sentinels
    that are down or a primary that is failing over (RedisUnavailable: try again)."""
    answered, known = 0, False
    for host, port in topology.sentinels:
        sentinel = Redis(
            host=host,
            port=port,
            password=topology.sentinel_password,
            **_sentinel_kwargs(topology, 2.0),
        )
        try:
            masters = await sentinel.sentinel_masters()
            answered += 1
            known = known or topology.master_name in masters
        except (RedisError, OSError):
            continue
        finally:
            await sentinel.aclose()
    if answered and not known:
        return TopologyError(
            f"the sentinels of {topology.shown} know no primary named "
            f"{topology.master_name!r}: check the master name in the URL"
        )
    if not answered:
        hosts = ", ".join(f"{h}:{p}" for h, p in topology.sentinels)
        return RedisUnavailable(topology.shown, ConnectionError(f"no sentinel answered ({hosts})"))
    return RedisUnavailable(
        topology.shown,
        ConnectionError(
            f"the sentinels report no healthy primary {topology.master_name!r} "
            "(a failover may be under way)"
        ),
    )
