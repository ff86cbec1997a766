"""agentic-pipeline's synchronous producer (SyncRedisTaskQueue) + `agentic worker`, for the
shared peer harness (../shared/bench/peers): copy this file into the harness's adapters/
next to peer_agentic.py, then `./run.sh --peers agentic,agentic_sync,dramatiq`.

Enqueue is `SyncRedisTaskQueue.enqueue` (redis-py's sync client, one Lua script call), bulk
is `enqueue_many`, E waits with the sync `wait_for_result` (BLMOVE). The worker and its task
are peer_agentic's, so only the producer differs.
"""

from __future__ import annotations

import uuid

from adapters._common import REDIS_URL, Adapter
from adapters.peer_agentic import QUEUE, TYPE, AgenticAdapter

try:
    from utils.redis_queue import SyncRedisTaskQueue
except ImportError:  # describe() runs without the project installed
    SyncRedisTaskQueue = None  # type: ignore


class AgenticSyncAdapter(Adapter):
    name = "agentic_sync"
    packages = ("agentic-pipeline", "redis")
    has_bulk = True
    bulk_api = "SyncRedisTaskQueue.enqueue_many (one script call per 1,000)"
    has_result_wait = True
    result_api = "SyncRedisTaskQueue.wait_for_result (blocks in Redis)"
    concurrency_note = "agentic worker --concurrency 10 (one process)"
    notes = "sync producer; uuid4 task ids; the worker of peer_agentic"

    def setup(self):
        self.q = SyncRedisTaskQueue(queue_name=QUEUE, redis_url=REDIS_URL)
        self.q.connect()

    def teardown(self):
        self.q.close()

    def enqueue(self, payload):
        self.q.enqueue(uuid.uuid4().hex, TYPE, payload)

    def enqueue_bulk(self, payloads):
        self.q.enqueue_many(
            [{"task_id": uuid.uuid4().hex, "task_type": TYPE, "payload": p} for p in payloads]
        )

    def enqueue_and_wait(self, payload, timeout):
        tid = uuid.uuid4().hex
        self.q.enqueue(tid, TYPE, payload)
        self.q.wait_for_result(tid, timeout=timeout)

    def worker_argv(self, concurrency):
        return AgenticAdapter().worker_argv(concurrency)


ADAPTER = AgenticSyncAdapter
