"""SyncRedisTaskQueue: the producer's side of the queue for synchronous code (a Django or
Flask view, a script, a Celery-era codebase): enqueue, enqueue_many, get_task,
wait_for_result and cancel, on redis-py's sync client.

It is not a second implementation: the calls are the same ScriptCalls (scripts/), run by
SyncScripts (register_script, the same error mapping), the arguments are validated and
encoded by the async client's own code (a RedisTaskQueue built from the same settings and
never connected holds the configuration, the layout and the codecs), and the decisions
shared with it are plain functions (produce.py: chunks and partitions; inspect.py: what a
finished task returns). One object may be shared by many threads: redis-py's pool hands
each call its own connection.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from redis import Redis as SyncRedis
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import OutOfMemoryError, RedisError

from . import codec, scripts
from .connection import BLOCK_SLICE_SECONDS, translate_error
from .errors import BulkEnqueueError, NotConnected, QueueError, ResultTimeout
from .keys import QueueKeys, validate_task_id
from .models import RedisTask, TaskPriority, TaskState
from .new_task import NewTask, check_seconds
from .queue import RedisTaskQueue
from .queue.claim_check import fetch_blobs, put_payloads
from .queue.client import MIN_BLOCK
from .queue.inspect import RUNNING, blob_names, finished_result
from .queue.produce import chunks, merge_partitions, partition_groups
from .scripts import SyncScripts
from .topology import sync_client

if TYPE_CHECKING:
    from utils.config import Settings

__all__ = ["SyncRedisTaskQueue"]

SyncClient = SyncRedis | SyncRedisCluster
T = TypeVar("T")


class SyncRedisTaskQueue:
    """A RedisTaskQueue's producer API for synchronous code. Takes RedisTaskQueue's
    constructor arguments (the same validation); connects on first use or `connect()`,
    and is a context manager. Workers stay async (`agentic worker`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Configuration, layout, validation and codecs: the async client's own, unconnected.
        self.spec = RedisTaskQueue(*args, **kwargs)
        self.queue_name = self.spec.queue_name
        self.layout = self.spec.layout
        self.keys = self.spec.keys
        self._redis: SyncClient | None = None
        self._blocking: SyncClient | None = None
        self._scripts: SyncScripts | None = None
        self._connecting = threading.Lock()  # threads that all call first at once
        # At most max_connections commands (and max_blocking_connections waits) at once,
        # like the async client: more threads wait their turn, the pool stays bounded.
        self._slots = threading.BoundedSemaphore(self.spec.max_connections)
        self._blocking_slots = threading.BoundedSemaphore(self.spec.max_blocking_connections)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """A queue configured from Settings (environment), with optional overrides."""
        return cls(**{**settings.queue_kwargs(), **overrides})

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def partitions(self) -> int:
        return self.layout.count

    def keys_for(self, task_id: str) -> QueueKeys:
        return self.layout.for_task(task_id)

    # -- lifecycle -----------------------------------------------------------------

    def connect(self) -> None:
        """Open the clients after the checks RedisTaskQueue.connect() makes (RedisUnavailable,
        TopologyError, QueueError for a server older than Redis 7)."""
        if self._redis is not None:
            return
        with self._connecting:
            if self._redis is None:
                self._open()

    def _open(self) -> None:
        # The async client's own checks, once: Redis answers, is a primary of the topology
        # configured, runs Redis 7+, holds this queue with the same partition count; and
        # the queue's name goes into the registry.
        _wait(_checked(self.spec))
        spec = self.spec
        options: dict[str, Any] = {
            "password": spec.password,
            "connect_timeout": spec._connect_timeout,
        }
        redis = sync_client(spec.topology, socket_timeout=spec._socket_timeout, **options)
        blocking = sync_client(
            spec.topology, socket_timeout=spec._socket_timeout + BLOCK_SLICE_SECONDS, **options
        )
        self._redis, self._blocking = redis, blocking
        self._scripts = SyncScripts(redis, spec.redis_url)

    def close(self) -> None:
        redis, blocking = self._redis, self._blocking
        self._redis = self._blocking = self._scripts = None
        for client in (redis, blocking):
            if client is not None:
                client.close()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def redis(self) -> SyncClient:
        """The underlying sync redis-py client (responses are bytes)."""
        self.connect()
        assert self._redis is not None
        return self._redis

    def _run(self, call: scripts.ScriptCall, task_id: str = "") -> Any:
        self.connect()
        if self._scripts is None:
            raise NotConnected("the queue was closed")
        with self._slots:
            return self._scripts.run(call, task_id)

    # -- producing -----------------------------------------------------------------

    def enqueue(
        self,
        task_id: str,
        task_type: str,
        payload: Mapping[str, Any],
        priority: int | TaskPriority | str = TaskPriority.NORMAL,
        **options: Any,
    ) -> RedisTask:
        """RedisTaskQueue.enqueue(), the same keyword options (delay, max_retries, meta,
        timeout, durable, limits, cost_tokens, group, unique_for, unique_key, debounce)."""
        durable = options.pop("durable", None)
        task = self.spec._new_task(task_id, task_type, payload, priority, **options)
        return self._send([task], durable, batch=False)[0]

    def enqueue_many(
        self, tasks: Iterable[Mapping[str, Any]], *, durable: bool | None = None
    ) -> list[RedisTask]:
        """RedisTaskQueue.enqueue_many(): all validated first, 1,000 per all-or-nothing
        call; BulkEnqueueError carries what was enqueued when a later chunk fails."""
        return self._send([self.spec._bulk_item(i, t) for i, t in enumerate(tasks)], durable)

    def _send(
        self, tasks: list[NewTask], durable: bool | None, batch: bool = True
    ) -> list[RedisTask]:
        """Inside the send span when tracing is on, as the async client's."""
        return self.spec.telemetry.send_sync(tasks, batch, lambda t: self._send_all(t, durable))

    def _send_all(self, tasks: list[NewTask], durable: bool | None) -> list[RedisTask]:
        if self.spec.blob_store is not None and any(t.blob for t in tasks):
            tasks = _wait(put_payloads(self.spec, tasks))
        wait = self.spec.durable if durable is None else durable
        if self.partitions == 1:
            done: list[RedisTask] = []
            self._send_partition(self.keys, tasks, wait, done)
            return done
        groups = partition_groups(self.layout, tasks)
        results: dict[int, list[RedisTask]] = {index: [] for index in groups}
        failures: list[BaseException | None] = []
        for index, positions in groups.items():  # one after the other: no event loop here
            try:
                part = [tasks[p] for p in positions]
                self._send_partition(self.layout.parts[index], part, wait, results[index])
                failures.append(None)
            except QueueError as exc:
                failures.append(exc)
        return merge_partitions(groups, results, failures)

    def _send_partition(
        self, keys: QueueKeys, tasks: list[NewTask], durable: bool, out: list[RedisTask]
    ) -> None:
        """As Producer._enqueue_partition."""
        spec = self.spec
        for chunk in chunks(tasks):
            call = scripts.enqueue(keys, chunk, events=self.spec.events_arg)
            ids = [t.task_id for t in chunk]
            try:
                if durable:
                    self.connect()
                    assert self._scripts is not None
                    with self._slots:
                        reply = self._scripts.run_durable(
                            call, ids, spec.min_replicas, spec.durable_timeout_ms
                        )
                else:
                    reply = self._run(call, ids[0] if len(ids) == 1 else "")
            except QueueError as exc:
                if not out or self.partitions > 1:
                    raise
                raise BulkEnqueueError(list(out), exc) from exc
            spec._landed(chunk, reply, out)

    # -- reading and waiting -------------------------------------------------------

    def get_task(self, task_id: str, *, blobs: bool = True) -> RedisTask | None:
        """RedisTaskQueue.get_task(): the task as stored now, or None."""
        validate_task_id(task_id)
        flat = self._call(lambda r: r.hgetall(self.keys_for(task_id).task(task_id)))
        if blobs:
            flat = self._with_blobs(task_id, flat)
        return self.spec._decode(task_id, flat, whole=blobs)

    def _with_blobs(self, task_id: str, flat: Any) -> Any:
        """As Inspector._with_blobs: claim-checked payload and result put back."""
        if not flat:
            return flat
        fields = codec.text_fields(flat)
        if self.spec.blob_store is not None:
            _wait(fetch_blobs(self.spec, task_id, fields))
        names = blob_names(fields)
        if not names:
            return fields
        keys = self.keys_for(task_id)

        def read(r: SyncClient) -> Any:
            values = r.mget([keys.blob(task_id, name) for name in names])
            if None in values and not r.exists(keys.task(task_id)):
                return None  # deleted with its blobs after the read above
            return values

        values = self._call(read)
        if values is None:
            return {}
        for name, value in zip(names, values, strict=True):
            if value is not None:
                fields[name] = codec.as_text(value)
        return fields

    def wait_for_result(self, task_id: str, timeout: float = 30.0) -> Any:
        """RedisTaskQueue.wait_for_result(): blocks (in Redis, BLMOVE on the task's done
        list, no polling) until the task finishes; returns its result. Raises TaskFailed,
        TaskCancelled, ResultTimeout or TaskNotFound."""
        validate_task_id(task_id)
        deadline = time.monotonic() + check_seconds("timeout", timeout)
        task = self.get_task(task_id)
        while True:
            result = finished_result(task_id, task)
            if result is not RUNNING:
                return result
            assert task is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(f"task {task_id!r} is still {task.state} after {timeout} s")
            wait = max(MIN_BLOCK, min(remaining, BLOCK_SLICE_SECONDS))
            try:
                token, flat = self._wait_done(task_id, wait, keep_token=True)
            except OutOfMemoryError:  # BLMOVE may write: refused when out of memory
                token, flat = self._wait_done(task_id, wait, keep_token=False)
            task = self.spec._decode(task_id, self._with_blobs(task_id, flat))
            if token is not None and task is not None and not TaskState(task.state).is_final:
                # a token left by an earlier task of the same id (deleted by hand)
                self._call(lambda r: r.delete(self.keys_for(task_id).done(task_id)))

    def _wait_done(self, task_id: str, wait: float, *, keep_token: bool) -> list[Any]:
        self.connect()
        blocking = self._blocking
        if blocking is None:
            raise NotConnected("the queue was closed")
        keys = self.keys_for(task_id)
        done_key = keys.done(task_id)
        try:
            pipe = blocking.pipeline(transaction=False)
            if keep_token:
                pipe.blmove(done_key, done_key, wait)  # type: ignore[arg-type]
            else:
                pipe.blpop([done_key], wait)
            pipe.hgetall(keys.task(task_id))
            with self._blocking_slots:
                token, flat = pipe.execute()
        except OutOfMemoryError:
            raise
        except RedisError as exc:
            raise translate_error(self.spec.redis_url, exc) from exc
        return [token, flat]

    # -- administering -------------------------------------------------------------

    def cancel(self, task_id: str) -> TaskState:
        """RedisTaskQueue.cancel(): CANCELLED for a queued task, PROCESSING for a running
        one (flagged, its worker told). Raises TaskNotFound or TaskStateError."""
        validate_task_id(task_id)
        keys, request = self.keys_for(task_id), os.urandom(8).hex()
        call = scripts.cancel(keys, task_id=task_id, request=request, events=self.spec.events_arg)
        if scripts.cancel_outcome(self._run(call, task_id)) is scripts.CancelOutcome.CANCELLED:
            return TaskState.CANCELLED
        return TaskState.PROCESSING

    def _call(self, command: Any) -> Any:
        """A direct command on the client, redis-py's errors translated."""
        try:
            with self._slots:
                return command(self.redis)
        except RedisError as exc:
            raise translate_error(self.spec.redis_url, exc) from exc


async def _checked(spec: RedisTaskQueue) -> None:
    try:
        await spec.connect()
    finally:
        await spec.close()


def _wait(work: Coroutine[Any, Any, T]) -> T:
    """A BlobStore's coroutine run to its end from sync code: on a loop of its own, in a
    thread of its own when this thread already runs a loop (sync code called from async)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()
