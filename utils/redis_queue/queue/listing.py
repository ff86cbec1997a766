"""Listing: tasks by state in pages with a stable cursor, a bounded search, queue names.

Each state is read from its sorted sets (utils.redis_queue.walk merges them over task
types and partitions): pending in dequeue order (`pending:<type>`, by score), delayed by
due time, processing by lease deadline, completed, failed and cancelled newest finished
first, dead-lettered newest first (`dlq_at`). A page costs O(log N + limit) Redis work
per set plus one HMGET per task listed, in pipelines; nothing scans a whole set.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .. import codec
from ..keys import QueueKeys, queue_index, validate_task_id, validate_task_type
from ..models import RedisTask, TaskState
from ..summaries import (
    SUMMARY_FIELDS,
    SearchResult,
    TaskPage,
    TaskSummary,
    decode_cursor,
    encode_cursor,
    summary_from,
)
from ..walk import Entry, walk
from .client import QueueClient

__all__ = ["MAX_PAGE", "MAX_SCAN", "SEARCH_ORDER", "TYPE_SCAN", "Lister"]

MAX_PAGE = 1000  # tasks per page
TYPE_SCAN = 10_000  # tasks a type-filtered page of a non-pending state examines at most
MAX_SCAN = 100_000  # search_tasks' scan_limit at most
MAX_SEARCH_TEXT = 200
_SEARCH_BATCH = 500  # task records per pipelined read while searching
# Where a search without a state looks first: what is running or about to.
SEARCH_ORDER = (
    TaskState.PROCESSING, TaskState.PENDING, TaskState.DELAYED, TaskState.DEAD_LETTER,
    TaskState.FAILED, TaskState.COMPLETED, TaskState.CANCELLED,
)  # fmt: skip
_NEWEST_FIRST = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.DEAD_LETTER}
)


class Lister(QueueClient):
    async def page_tasks(
        self,
        state: TaskState | str,
        *,
        task_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        older_than: float | None = None,
    ) -> TaskPage:
        """Up to `limit` (1-1000) tasks in `state`, in that state's order, as summaries,
        after `cursor` (a previous page's next_cursor, which names the last task's place:
        its score and id). Tasks that move while someone pages are never listed twice and
        a task that stays in the state is never skipped; one that leaves and comes back
        (a retry) is listed at its new place if that lies ahead. With `task_type` on a
        state other than pending (which has no per-type index), each page examines at
        most TYPE_SCAN tasks: it may come back short (even empty) with a next_cursor, and
        its total is None.

        `older_than` (seconds) keeps the tasks created that long ago or more (finished
        and dead-lettered ones: that long after they finished). In a finished state the
        page starts at that time (nothing is scanned); in the others it is a filter like
        `task_type`'s, bounded the same way, and its total is None too."""
        wanted = _state(state)
        count = _bounded("limit", limit, 1, MAX_PAGE)
        if task_type is not None:
            validate_task_type(task_type)
        after = None if cursor is None else decode_cursor(cursor, wanted)
        async with self._command():
            sets = await self._sets(wanted, task_type)
            keep: Callable[[TaskSummary], bool] | None = None
            if older_than is not None:
                cutoff_ms = await self._server_ms() - _seconds(older_than) * 1000
                if wanted in _NEWEST_FIRST:  # ordered by that time: start the walk there
                    start: Entry = (cutoff_ms, b"\xff")
                    after = start if after is None else min(after, start)
                else:
                    keep = _created_by(codec.iso_from_ms(str(int(cutoff_ms))) or "")
            if keep is not None or (task_type is not None and wanted is not TaskState.PENDING):
                return await self._filtered_page(wanted, task_type, sets, count, after, keep)
            step = await walk(
                self.redis, sets, descending=wanted in _NEWEST_FIRST, after=after, count=count
            )
            rows = await self._summaries(step.entries, wanted)
        last = step.entries[-1] if step.more and step.entries else None
        return TaskPage(
            [s for _, s in rows if s is not None],
            None if older_than is not None else step.total,  # the set's, not the page's
            None if last is None else encode_cursor(wanted, last),
            str(wanted),
            task_type,
        )

    async def list_tasks(
        self,
        state: TaskState | str | None = None,
        limit: int = 100,
        *,
        task_type: str | None = None,
        cursor: str | None = None,
        older_than: float | None = None,
    ) -> list[RedisTask]:
        """Up to `limit` whole tasks in `state` (default pending), in page_tasks' order,
        after `cursor`. Records that cannot be decoded are left out; filtered by a filter
        page_tasks scans for (`task_type` on a non-pending state, `older_than` on an
        unfinished one) it stops after one bounded scan comes back short."""
        wanted = _state(state or TaskState.PENDING)
        remaining = _bounded("limit", limit, 1, None)
        tasks: list[RedisTask] = []
        filtered = (task_type is not None and wanted is not TaskState.PENDING) or (
            older_than is not None and wanted not in _NEWEST_FIRST
        )
        while remaining > 0:
            asked = min(remaining, MAX_PAGE)
            page = await self.page_tasks(
                wanted, task_type=task_type, limit=asked, cursor=cursor, older_than=older_than
            )
            tasks.extend(await self._whole([s.task_id for s in page.tasks]))
            remaining -= len(page.tasks)
            cursor = page.next_cursor
            if cursor is None or (filtered and len(page.tasks) < asked):
                break
        return tasks

    async def search_tasks(
        self,
        text: str,
        *,
        state: TaskState | str | None = None,
        task_type: str | None = None,
        scan_limit: int = 10_000,
        limit: int = 50,
    ) -> SearchResult:
        """Tasks whose id, payload JSON, result JSON or error contain `text` (1-200
        characters, any case): the task whose id is `text` first, then the others in
        listing order, `state`'s (default: processing, pending, delayed, dead_letter,
        failed, completed, cancelled). Stops at `limit` matches (1-1000) or after reading
        `scan_limit` task records (1-100,000); `complete` says whether it read them all.

        Cost: up to `scan_limit` whole task records read (HGETALL, 500 per pipeline) plus
        O(log N) per 500 to walk the sets, all on the Redis that holds them; a search is
        an operator's tool, not something to run in a loop."""
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_SEARCH_TEXT:
            raise ValueError(
                f"search text must be 1-{MAX_SEARCH_TEXT} characters, not {_shown(text)}"
            )
        budget = _bounded("scan_limit", scan_limit, 1, MAX_SCAN)
        wanted = _bounded("limit", limit, 1, MAX_PAGE)
        states = SEARCH_ORDER if state is None else (_state(state),)
        if task_type is not None:
            validate_task_type(task_type)
        needles = _needles(text)
        found: list[TaskSummary] = []
        scanned = 0
        async with self._command():
            exact = await self._exact(text, states, task_type)
            if exact is not None:
                found.append(exact)
            for each in states:
                if len(found) >= wanted or scanned >= budget:
                    return SearchResult(found, scanned, False, text)
                read, finished = await self._search_state(
                    each, task_type, needles, found, wanted, budget - scanned
                )
                scanned += read
                if not finished:
                    return SearchResult(found, scanned, False, text)
        return SearchResult(found, scanned, True, text)

    async def queue_names(self) -> list[str]:
        """The names of the queues under this queue's key prefix whose clients have
        connected (each registers its name at connect), sorted."""
        async with self._command():
            members = await self.redis.smembers(queue_index(self.layout.prefix))
        return sorted(codec.as_text(m) for m in members)

    # -- internals -------------------------------------------------------------------

    async def _sets(self, state: TaskState, task_type: str | None) -> list[str]:
        """The sorted sets holding `state`'s tasks, over every partition."""
        parts = self.layout.parts
        if state is not TaskState.PENDING:
            return [_state_set(keys, state) for keys in parts]
        if task_type is not None:
            return [keys.pending(task_type) for keys in parts]
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in parts:
                pipe.smembers(keys.types)
            replies = await pipe.execute()
        return [
            keys.pending(codec.as_text(t))
            for keys, types in zip(parts, replies, strict=True)
            for t in sorted(types)
        ]

    async def _server_ms(self) -> float:
        seconds, micros = await self.redis.time()
        return seconds * 1000 + micros / 1000

    async def _filtered_page(
        self,
        state: TaskState,
        task_type: str | None,
        sets: list[str],
        count: int,
        after: Entry | None,
        keep: Callable[[TaskSummary], bool] | None = None,
    ) -> TaskPage:
        """A page of the tasks of `task_type` (any: None) that `keep` accepts, in a state
        with no index for them: walk the state in order, reading summaries, until `count`
        match or TYPE_SCAN were examined."""
        found: list[TaskSummary] = []
        scanned, more, chunk = 0, True, max(count, 100)
        while more and len(found) < count and scanned < TYPE_SCAN:
            step = await walk(
                self.redis,
                sets,
                descending=state in _NEWEST_FIRST,
                after=after,
                count=min(chunk, MAX_PAGE, TYPE_SCAN - scanned),
            )
            chunk *= 2
            more = step.more
            rows = await self._summaries(step.entries, state)
            for i, (entry, summary) in enumerate(rows):
                scanned += 1
                after = entry
                if summary is None or (keep is not None and not keep(summary)):
                    continue
                if task_type is None or summary.task_type == task_type:
                    found.append(summary)
                    if len(found) == count:
                        more = more or i < len(rows) - 1
                        break
        next_cursor = encode_cursor(state, after) if more and after is not None else None
        return TaskPage(found, None, next_cursor, str(state), task_type)

    async def _search_state(
        self,
        state: TaskState,
        task_type: str | None,
        needles: tuple[str, ...],
        found: list[TaskSummary],
        wanted: int,
        budget: int,
    ) -> tuple[int, bool]:
        """Search one state in order, adding matches to `found` until it holds `wanted`
        or `budget` records were read; returns (records read, whether the state ended)."""
        sets = await self._sets(state, task_type)
        seen = {s.task_id for s in found}
        after: Entry | None = None
        read = 0
        while True:
            step = await walk(
                self.redis,
                sets,
                descending=state in _NEWEST_FIRST,
                after=after,
                count=min(_SEARCH_BATCH, budget - read),
            )
            records = await self._records(step.entries)
            for i, (entry, fields) in enumerate(zip(step.entries, records, strict=True)):
                read += 1
                task_id = entry[1].decode()
                if task_id in seen or not _matches(task_id, fields, needles):
                    continue
                summary = summary_from(task_id, fields, state, _at(state, entry))
                if summary is None or task_type not in (None, summary.task_type):
                    continue
                found.append(summary)
                if len(found) >= wanted:
                    return read, not step.more and i == len(step.entries) - 1
            after = step.entries[-1] if step.entries else after
            if not step.more:
                return read, True
            if read >= budget:
                return read, False

    async def _summaries(
        self, entries: list[Entry], state: TaskState
    ) -> list[tuple[Entry, TaskSummary | None]]:
        """Each entry's summary (None for a record deleted meanwhile): one HMGET each,
        in one pipeline."""
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, member in entries:
                task_id = member.decode()
                pipe.hmget(self.keys_for(task_id).task(task_id), SUMMARY_FIELDS)
            replies = await pipe.execute()
        out: list[tuple[Entry, TaskSummary | None]] = []
        for entry, values in zip(entries, replies, strict=True):
            fields = {
                name: codec.as_text(v)
                for name, v in zip(SUMMARY_FIELDS, values, strict=True)
                if v is not None
            }
            out.append((entry, summary_from(entry[1].decode(), fields, state, _at(state, entry))))
        return out

    async def _records(self, entries: list[Entry]) -> list[dict[str, str]]:
        """Each entry's whole task hash, as text ({} when gone), in one pipeline."""
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, member in entries:
                task_id = member.decode()
                pipe.hgetall(self.keys_for(task_id).task(task_id))
            return [codec.text_fields(flat) for flat in await pipe.execute()]

    async def _whole(self, task_ids: list[str]) -> list[RedisTask]:
        if not task_ids:
            return []
        async with self._command(), self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self.keys_for(task_id).task(task_id))
            replies = await pipe.execute()
        tasks = []
        for task_id, flat in zip(task_ids, replies, strict=True):
            if not flat:
                continue  # deleted meanwhile
            try:
                fields = codec.text_fields(flat)  # claim-checked blobs stay in Redis
                tasks.append(codec.decode_task(task_id, fields, self.max_retries, whole=False))
            except ValueError:  # a corrupt record
                continue
        return tasks

    async def _exact(
        self, text: str, states: tuple[TaskState, ...], task_type: str | None
    ) -> TaskSummary | None:
        """The task whose id is `text`, if it is in one of `states` (and of `task_type`)."""
        try:
            validate_task_id(text)
        except ValueError:
            return None
        keys = self.keys_for(text)
        fields = codec.text_fields(await self.redis.hgetall(keys.task(text)))
        found = summary_from(text, fields, states[0], None)
        if found is None or found.state not in states or task_type not in (None, found.task_type):
            return None
        state = TaskState(found.state)
        if state is TaskState.PENDING:
            return found
        at = await self.redis.zscore(_state_set(keys, state), text)
        return summary_from(text, fields, state, None if at is None else float(at))


def _state_set(keys: QueueKeys, state: TaskState) -> str:
    sets: dict[TaskState, str] = {
        TaskState.DELAYED: keys.delayed,
        TaskState.PROCESSING: keys.processing,
        TaskState.COMPLETED: keys.completed,
        TaskState.FAILED: keys.failed,
        TaskState.CANCELLED: keys.cancelled,
        TaskState.DEAD_LETTER: keys.dlq_order,
    }
    return sets[state]


def _at(state: TaskState, entry: Entry) -> float | None:
    # A pending score ranks priority and arrival; every other set's score is a time (ms).
    return None if state is TaskState.PENDING else entry[0]


def _created_by(cutoff: str) -> Callable[[TaskSummary], bool]:
    # Both sides are codec's ISO form of a server time, so text order is time order.
    return lambda summary: (summary.created_at or "") <= cutoff


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"older_than must be a number of seconds >= 0, not {_shown(value)}")
    return float(value)


def _state(state: object) -> TaskState:
    try:
        return TaskState(state)  # type: ignore[arg-type]  # a str, or refused here
    except ValueError:
        names = ", ".join(s.value for s in TaskState)
        raise ValueError(f"unknown task state {_shown(state)}: use one of {names}") from None


def _bounded(name: str, value: object, low: int, high: int | None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        span = f"from {low:,} to {high:,}" if high is not None else f"of at least {low}"
        raise ValueError(f"{name} must be a whole number {span}, not {_shown(value)}")
    return value


def _needles(text: str) -> tuple[str, ...]:
    """`text` lowered, as it reads in stored JSON (escaped quotes, \\uXXXX) and in a
    stored error (non-ASCII as \\xNN, see codec.error_text)."""
    low = text.lower()
    forms = (low, json.dumps(low)[1:-1], low.encode("ascii", "backslashreplace").decode())
    return tuple(dict.fromkeys(forms))


def _matches(task_id: str, fields: dict[str, str], needles: tuple[str, ...]) -> bool:
    haystacks = [task_id.lower()]
    for name in ("payload", "result", "error"):
        blob = codec.join_blob(fields, name)
        if blob:
            haystacks.append(blob.lower())
    if any(n in h for n in needles for h in haystacks):
        return True
    if needles[0].isascii():
        return False
    # Non-ASCII text in any case: compare with the JSON decoded (\\u00c9 lowers to \\u00c9).
    for name in ("payload", "result"):
        blob = codec.join_blob(fields, name)
        if blob and "\\u" in blob:
            try:
                decoded = json.dumps(json.loads(blob), ensure_ascii=False)
            except ValueError:
                continue
            if needles[0] in decoded.lower():
                return True
    return False


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
