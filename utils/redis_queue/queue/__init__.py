"""RedisTaskQueue: the queue's public class, assembled from one file per responsibility.

    client.py      QueueClient: configuration, connect/close, the Redis clients, and the
                   one place that decides which Redis and which keys a call goes to
    produce.py     enqueue, enqueue_many
    consume.py     dequeue, claim, claim_ready, wait_for_work, complete_task, fail_task,
                   settle_many, extend_lease (heartbeat), release_task, reap
    inspect.py     get_task, wait_for_result, get_queue_size, get_statistics, health_check
    listing.py     page_tasks, list_tasks, search_tasks, queue_names
    administer.py  cancel, retry_dlq_task, purge_dlq, clear_completed
    limiting.py    set_limit, get_limits, remove_limit, back_off_task (fleet-wide limits)
    history.py     get_history (per-minute counters), get_attempts (a task's failed attempts)
    pausing.py     pause, resume, get_paused (claim.lua skips what is paused)
    scheduling.py  schedule, unschedule, list_schedules, run_due_schedules (periodic tasks)
    output.py      emit_output (under the lease), read_output, stream_output (a task's output)
    events.py      events (the task lifecycle events of every partition, followed)

Every state transition is one Lua script (lua/*.lua) that checks everything before its
first write and reads time from the Redis server; utils.redis_queue.scripts builds each
call's keys and arguments and parses its reply. These classes validate input, encode JSON, run the
scripts and turn their replies into RedisTask objects and exceptions.
"""

from __future__ import annotations

from .client import QueueClient
from .consume import MAX_CLAIM
from .events import Events
from .history import History
from .limiting import Limiting
from .listing import Lister
from .output import Output
from .pausing import Pausing
from .produce import Producer
from .scheduling import Scheduling

__all__ = ["MAX_CLAIM", "QueueClient", "RedisTaskQueue"]


class RedisTaskQueue(Scheduling, Pausing, Producer, Limiting, History, Lister, Output, Events):
    """A priority task queue in Redis with leases, fencing tokens, retries and a DLQ."""
