"""QueueClient: a queue's configuration, its connections, and the one place that decides
which Redis and which keys a call goes to (`self.keys`, `self.run`).

The other modules of this package add RedisTaskQueue's methods by what they do:
produce.py, consume.py, inspect.py and administer.py; __init__.py puts them together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from .. import codec
from ..blobs import BlobStore
from ..connection import BLOCK_SLICE_SECONDS, check_url, mask_url, parse_topology, redis_errors
from ..errors import LeaseLost, NotConnected, QueueError, TopologyError
from ..keys import QueueKeys, QueueLayout, queue_index, validate_queue_name, validate_task_id
from ..models import RedisTask, RetryPolicy
from ..scripts import ScriptCall, Scripts, removed_count
from ..telemetry import MetricsSink, Telemetry
from ..topology import AnyRedis, async_client, check_server, close_client
from .partitions import PartitionHeads

__all__ = ["BATCH", "MIN_BLOCK", "QueueClient"]

if TYPE_CHECKING:
    from utils.config import Settings

BATCH = 500  # items per call of the chunked admin scripts
MIN_BLOCK = 0.01  # BLPOP treats 0 as "forever"
_MAX_REMEMBERED_LEASES = 100_000
T = TypeVar("T")
log = logging.getLogger("agentic.queue")


LISTENER_CONNECTIONS = 8  # pub/sub listeners (one per Worker) a queue object may hold


class QueueClient:
    """Configuration, connections and script calls of one queue."""

    def __init__(
        self,
        queue_name: str = "agentic_ai",
        redis_url: str = "redis://localhost:6379",
        max_retries: int = 3,
        task_ttl_seconds: int = 3600,
        enable_dlq: bool = True,
        *,
        lease_seconds: float = 30.0,
        max_lease_losses: int = 3,
        retry_policy: RetryPolicy | None = None,
        key_prefix: str = "agentic",
        max_payload_bytes: int = 16_777_216,
        blob_threshold_bytes: int = 65_536,
        blob_store: BlobStore | None = None,
        socket_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        password: str | None = None,
        metrics: MetricsSink | None = None,
        cluster: bool = False,
        partitions: int = 1,
        max_connections: int = 100,
        max_blocking_connections: int = 100,
        durable: bool = False,
        durable_settle: bool = False,
        min_replicas: int = 1,
        durable_timeout_ms: int = 1000,
        output_max_entries: int = 10_000,
        output_ttl_seconds: int = 86_400,
        events: bool = True,
        events_max_len: int = 10_000,
    ) -> None:
        if max_retries < 0 or task_ttl_seconds <= 0 or lease_seconds <= 0 or max_lease_losses < 0:
            raise ValueError(
                "max_retries and max_lease_losses must be >= 0; "
                "task_ttl_seconds and lease_seconds must be > 0"
            )
        if max_connections < 1 or max_blocking_connections < 1:
            raise ValueError("max_connections and max_blocking_connections must be >= 1")
        if min_replicas < 1 or durable_timeout_ms < 1:
            raise ValueError("min_replicas and durable_timeout_ms must be >= 1")
        self.queue_name = validate_queue_name(queue_name)
        self.redis_url = check_url(redis_url)
        self.topology = parse_topology(self.redis_url, cluster=cluster)
        self.max_retries = max_retries
        self.task_ttl_seconds = task_ttl_seconds
        self.enable_dlq = enable_dlq
        self.lease_seconds = lease_seconds
        self.max_lease_losses = max_lease_losses
        self.retry_policy = retry_policy or RetryPolicy()
        self.max_payload_bytes = max_payload_bytes
        if blob_threshold_bytes < 0:
            raise ValueError("blob_threshold_bytes must be >= 0")
        # Claim-check: a payload or result JSON longer than this is stored in a key of its
        # own (keys.QueueKeys.blob), so it costs Redis its size, not chunks in the hash.
        self.blob_threshold_bytes = blob_threshold_bytes
        # Where they go instead of Redis keys, when given (blobs.py; queue/claim_check.py).
        self.blob_store = blob_store
        self.layout = QueueLayout(validate_queue_name(key_prefix), self.queue_name, partitions)
        self.keys = self.layout.wide  # queue-wide keys; partition 0's too when it has one
        self.max_connections = max_connections
        self.max_blocking_connections = max_blocking_connections
        self.durable = durable
        self.durable_settle = durable_settle
        self.min_replicas = min_replicas
        self.durable_timeout_ms = durable_timeout_ms
        if output_max_entries < 1 or output_ttl_seconds < 1:
            raise ValueError("output_max_entries and output_ttl_seconds must be >= 1")
        # a task's output stream: its bound (XADD MAXLEN ~) and its life after its last write
        self.output_max_entries = output_max_entries
        self.output_ttl_seconds = output_ttl_seconds
        if events_max_len < 1:
            raise ValueError("events_max_len must be >= 1")
        # Task lifecycle events (queue/events.py): every transition script gets this as
        # its `events` argument, the stream's MAXLEN ~, 0 = write none.
        self.events_max_len = events_max_len
        self.events_arg = events_max_len if events else 0
        self._password = password
        self.telemetry = Telemetry(self, metrics)
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._redis: AnyRedis | None = None
        self._blocking: AnyRedis | None = None
        self._scripts: Scripts | None = None
        self._heads: PartitionHeads | None = None  # consume.py: what claims last saw
        # consume.py: (partition base, served_ref) of the type lists a claim has sent
        self._served_sent: set[tuple[str, str]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._blocking_slots: asyncio.Semaphore | None = None
        # Fencing tokens of the leases this instance was granted, so the seed's
        # complete_task(task_id, result) needs no token argument.
        self._leases: dict[str, int] = {}

    @property
    def partitions(self) -> int:
        return self.layout.count

    @property
    def cluster(self) -> bool:
        return self.topology.kind == "cluster"

    def keys_for(self, task_id: str) -> QueueKeys:
        """The keys of the partition that holds `task_id`."""
        return self.layout.for_task(task_id)

    def _touched(self, task_ids: Sequence[str]) -> None:
        """This object made tasks ready in these tasks' partitions: its own claims look
        there again at once rather than trusting what it last saw."""
        if self._heads is not None:
            for task_id in task_ids:
                self._heads.stale(self.layout.index_of(task_id))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """A queue configured from Settings (environment), with optional overrides."""
        return cls(**{**settings.queue_kwargs(), **overrides})

    # -- lifecycle -----------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connections and check that Redis answers (RedisUnavailable if not) and
        can serve this queue as configured (TopologyError if not)."""
        if self._redis is not None:
            return
        options = {
            "password": self._password,
            "connect_timeout": self._connect_timeout,
        }
        redis = async_client(
            self.topology,
            socket_timeout=self._socket_timeout,
            # room beyond the calls' bound for what holds a connection outside it: each
            # worker's cancel listener (pub/sub) keeps one for its whole life
            max_connections=self.max_connections + LISTENER_CONNECTIONS,
            **options,  # type: ignore[arg-type]
        )
        blocking = async_client(
            self.topology,
            socket_timeout=self._socket_timeout + BLOCK_SLICE_SECONDS,
            max_connections=self.max_blocking_connections,
            **options,  # type: ignore[arg-type]
        )
        try:
            async with redis_errors(self.redis_url):
                await check_server(redis, self.topology)
                await redis.ping()
                await _check_server_version(redis, self.url)
                await _warn_about_server_settings(redis, self.url)
                await self._check_layout(redis)
                await _register(redis, self.layout.prefix, self.queue_name)
        except BaseException:
            await close_client(redis)
            await close_client(blocking)
            raise
        self._redis, self._blocking = redis, blocking
        self._scripts = Scripts(redis, self.url)
        # Calls wait for a connection instead of failing with "Too many connections".
        self._slots = asyncio.Semaphore(self.max_connections)
        self._blocking_slots = asyncio.Semaphore(self.max_blocking_connections)

    async def _check_layout(self, redis: AnyRedis) -> None:
        """Every client of a queue must agree on its partition count, or tasks would go
        to partitions no worker watches: the first partitioned client stores it, and a
        client with another count is refused."""
        stored = await redis.hget(self.keys.meta, "partitions")
        if stored is None and self.partitions > 1:
            await redis.hsetnx(self.keys.meta, "partitions", self.partitions)
            stored = await redis.hget(self.keys.meta, "partitions")
        count = int(stored) if stored is not None and stored.isdigit() else 1
        if count != self.partitions:
            raise TopologyError(
                f"queue {self.queue_name!r} has {count} partition(s) in Redis at {self.url}, "
                f"this client was configured with {self.partitions}: every producer and "
                "worker of a queue must use the same count (AGENTIC_PARTITIONS, --partitions)"
            )

    async def close(self) -> None:
        redis, blocking = self._redis, self._blocking
        self._redis = self._blocking = self._scripts = None
        for client in (redis, blocking):
            if client is not None:
                await close_client(client)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def redis(self) -> Redis:
        """The underlying redis.asyncio client (responses are bytes): a RedisCluster, with
        the same command methods, on a cluster."""
        if self._redis is None:
            raise NotConnected("call `await queue.connect()` first")
        return cast(Redis, self._redis)

    @property
    def metrics(self) -> MetricsSink:
        return self.telemetry.metrics

    @property
    def dlq_key(self) -> str:
        return self.keys.dlq

    @property
    def password(self) -> str | None:
        """The password given to the constructor (for processes this queue starts)."""
        return self._password

    @property
    def url(self) -> str:
        """The Redis URL with any password masked."""
        return mask_url(self.redis_url)

    # -- internals shared by the queue's parts ----------------------------------

    @property
    def blocking_redis(self) -> Redis:
        """The client for blocking commands (BLPOP, BLMOVE): its socket timeout leaves
        room for a wait of BLOCK_SLICE_SECONDS. For waits of the layers above (the
        pipeline's approval gate); wrap each in redis_errors() like other direct reads."""
        return self._blocking_client

    @property
    def _blocking_client(self) -> Redis:
        if self._blocking is None:
            raise NotConnected("call `await queue.connect()` first")
        return cast(Redis, self._blocking)

    async def run(self, call: ScriptCall, task_id: str = "") -> Any:
        """Run one script call (built by utils.redis_queue.scripts); error replies raise
        the mapped QueueError, naming `task_id`."""
        if self._scripts is None or self._slots is None:
            raise NotConnected("call `await queue.connect()` first")
        async with self._slots:
            return await self._scripts.run(call, task_id)

    async def run_durable(self, call: ScriptCall, task_ids: Sequence[str]) -> Any:
        """run(), returning only once WAIT confirmed the write on min_replicas replicas
        within durable_timeout_ms (DurabilityError naming `task_ids` otherwise)."""
        if self._scripts is None or self._slots is None:
            raise NotConnected("call `await queue.connect()` first")
        async with self._slots:
            return await self._scripts.run_durable(
                call, task_ids, self.min_replicas, self.durable_timeout_ms
            )

    def bounded(self, *, blocking: bool = False) -> AbstractAsyncContextManager[None]:
        """Around direct commands of the layers above (the pipeline's run store): waits
        for one of the queue's connections (of `blocking_redis` with blocking=True) and
        translates errors, like the queue's own calls."""
        return self._blocking_command() if blocking else self._command()

    def _command(self) -> AbstractAsyncContextManager[None]:
        """Around direct commands: waits for a free connection, translates errors."""
        if self._slots is None:
            raise NotConnected("call `await queue.connect()` first")
        return _bounded(self._slots, self.redis_url)

    def _blocking_command(self) -> AbstractAsyncContextManager[None]:
        """Around blocking commands, bounded by max_blocking_connections."""
        if self._blocking_slots is None:
            raise NotConnected("call `await queue.connect()` first")
        return _bounded(self._blocking_slots, self.redis_url)

    async def _chunked(self, build: Callable[[int], ScriptCall]) -> int:
        """Run a script that removes up to BATCH items per call until it removes fewer."""
        total = 0
        while True:
            removed = removed_count(await self.run(build(BATCH)))
            total += removed
            if removed < BATCH:
                return total

    async def _settling(self, task_id: str, call: Awaitable[T]) -> T:
        """Run a call that ends this object's lease on a task, then forget the lease -
        unless the call was refused with LeaseLost: the stale token then stays, so a later
        call without a token from this object (the seed's fail_task after a complete that
        was refused) is refused too instead of overriding the new holder's lease."""
        try:
            result = await call
        except LeaseLost:
            raise
        except BaseException:
            self._leases.pop(task_id, None)
            raise
        self._leases.pop(task_id, None)
        return result

    def _remember_lease(self, task_id: str, token: int) -> None:
        if len(self._leases) >= _MAX_REMEMBERED_LEASES:  # stale entries of lost leases
            del self._leases[next(iter(self._leases))]
        self._leases[task_id] = token

    def _token_for(self, task_id: str, lease_token: int | None) -> str:
        validate_task_id(task_id)
        if lease_token is None:
            lease_token = self._leases.get(task_id)
        return "" if lease_token is None else str(lease_token)

    def _decode(self, task_id: str, flat: Any, *, whole: bool = True) -> RedisTask | None:
        if not flat:
            return None
        try:
            fields = codec.text_fields(flat)
            return codec.decode_task(task_id, fields, self.max_retries, whole=whole)
        except ValueError as exc:
            raise QueueError(str(exc)) from exc


@asynccontextmanager
async def _bounded(slots: asyncio.Semaphore, url: str) -> AsyncIterator[None]:
    async with slots, redis_errors(url):
        yield


async def _register(redis: AnyRedis, prefix: str, queue: str) -> None:
    """Add the queue's name to the prefix's registry (queue_names, the dashboard): a
    server that refuses the write (an ACL limited to the queue's keys, out of memory)
    still serves the queue, so the refusal is only logged."""
    try:
        await redis.sadd(queue_index(prefix), queue)
    except ResponseError as exc:
        log.debug("queue %s not registered: %s", queue, exc)


_warned_urls: set[str] = set()
_checked_versions: set[str] = set()


MIN_SERVER_MAJOR = 7  # the scripts declare flags (#!lua flags=...), new in Redis 7.0


async def _check_server_version(redis: AnyRedis, url: str) -> None:
    """Refuse a server older than Redis 7.0 (Valkey reports 7.2+) with a clear error,
    instead of every script failing to compile. A server that refuses INFO is trusted."""
    if url in _checked_versions:
        return
    for info in await _per_server(redis, "INFO", "server"):
        version = str(info.get("redis_version", ""))
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) < MIN_SERVER_MAJOR:
            raise QueueError(
                f"Redis at {url} is version {version}; agentic-pipeline needs Redis 7.0 or "
                "later (or Valkey)"
            )
    _checked_versions.add(url)


async def _per_server(redis: AnyRedis, *command: str) -> list[dict[Any, Any]]:
    """`command`'s reply from each primary (the one server unless on a cluster); a server
    that refuses it (ACLs, managed Redis) is left out."""
    try:
        if isinstance(redis, RedisCluster):
            replies = [
                await redis.execute_command(*command, target_nodes=node)
                for node in redis.get_primaries()
            ]
        else:
            replies = [await redis.execute_command(*command)]  # type: ignore[no-untyped-call]
    except ResponseError:
        return []
    return [r for r in replies if isinstance(r, dict)]


async def _warn_about_server_settings(redis: AnyRedis, url: str) -> None:
    """Warn once per server when its settings can lose tasks: an eviction policy other
    than noeviction drops task records under memory pressure, and without AOF a restart
    loses what was acknowledged. A server that refuses CONFIG (managed Redis, ACLs) is
    not checked."""
    if url in _warned_urls:
        return
    _warned_urls.add(url)
    config: dict[Any, Any] = {}
    for reply in await _per_server(redis, "CONFIG GET", "maxmemory-policy"):
        config.update(reply)
    for reply in await _per_server(redis, "CONFIG GET", "appendonly"):
        config.update(reply)
    if not config:
        return
    settings = {codec.as_text(k): codec.as_text(v) for k, v in config.items()}
    policy, aof = settings.get("maxmemory-policy", ""), settings.get("appendonly", "")
    if policy != "noeviction":
        log.warning(
            "Redis at %s has maxmemory-policy %s: under memory pressure it can evict task "
            "records; use noeviction",
            url,
            policy,
        )
    if aof != "yes":
        log.warning(
            "Redis at %s has appendonly off: a restart loses every task it acknowledged since "
            "the last snapshot (see README, Guarantees)",
            url,
        )
