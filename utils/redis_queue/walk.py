"""Walking sorted sets in order from a position, several at once, merged.

A position is an entry, (score, member): Redis orders a sorted set by score, then by
member bytes, so every entry of every set has one place in a total order, and a walk
resumes "strictly after" a position whether or not the position's member is still
there (or in which set it is). A page costs O(log N + count) per set:

1. locate: how many entries sort before the position (ZRANK when its member is still
   there with the same score; else ZCOUNT below its score plus a search among the
   entries sharing it: ZRANGE probes of one entry each, 32 per round trip, then one
   short read, so a block of 100,000 equal scores takes ~4 round trips, not a scan);
2. read a window of ranks around that place, a margin wider than the page;
3. check the window still contains the place (entries may have come or gone between
   1 and 2, shifting ranks): keep what lies after the position, or locate again with a
   wider margin.

Entries of all sets are merged; an entry is handed out only when no set that may hold
more can still have an entry before it, so nothing is skipped or handed out twice.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import QueueError

__all__ = ["Entry", "Walk", "walk"]

Entry = tuple[float, bytes]  # (score, member), in Redis' order

_MARGINS = (64, 1024, 16384)  # ranks a window reaches back: entries gone meanwhile
_SHORT = 256  # a block of equal scores this small is read whole
_PROBES = 32  # single-entry reads per round trip while searching a larger block
_ROUNDS = 8  # search rounds at most (32^8 entries); an unfinished search is re-checked


@dataclass(frozen=True, slots=True)
class Walk:
    entries: list[Entry]  # up to `count`, in the walk's order
    more: bool  # whether entries may follow the last one
    total: int  # the sets' sizes summed (ZCARD, read in the first round trip)


@dataclass(slots=True)
class _Place:
    below: int  # entries before the position
    present: bool  # the position's own entry is there


@dataclass(slots=True)
class _Window:
    rows: list[Entry]  # after the position, in the walk's order
    exhausted: bool  # nothing lies beyond the rows


async def walk(
    redis: Any, keys: Sequence[str], *, descending: bool, after: Entry | None, count: int
) -> Walk:
    """The first `count` entries of the sets `keys`, merged, that come strictly after
    `after` (None: from the start) in ascending order, or descending with `descending`.
    `redis` is a redis.asyncio client (a cluster's too: its commands here are single-key,
    sent in pipelines without MULTI)."""
    if not keys:
        return Walk([], False, 0)
    total = 0
    places: dict[str, _Place] = {}
    if after is None:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zcard(key)
            total = sum(await pipe.execute())
    else:
        total, places = await _locate(redis, keys, after)
    windows: dict[str, _Window] = {}
    todo = list(keys)
    for margin in _MARGINS:
        windows.update(await _read(redis, todo, places, after, descending, count, margin))
        todo = [key for key in todo if key not in windows]
        if not todo:
            break
        assert after is not None  # a window from the start is always valid
        places.update((await _locate(redis, todo, after))[1])
    else:
        raise QueueError(
            f"the listing could not resume: {', '.join(todo)} changed faster than it could "
            "be read; try again"
        )
    return _merge(list(windows.values()), descending, count, total)


async def _locate(redis: Any, keys: Sequence[str], after: Entry) -> tuple[int, dict[str, _Place]]:
    score, member = after
    text = repr(score)
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zcard(key)
            pipe.zscore(key, member)
            pipe.zrank(key, member)
            pipe.zcount(key, "-inf", f"({text}")
            pipe.zcount(key, text, text)
        replies = await pipe.execute()
    total = 0
    places: dict[str, _Place] = {}
    blocks: dict[str, tuple[int, int]] = {}
    for i, key in enumerate(keys):
        card, own_score, rank, lower, same = replies[5 * i : 5 * i + 5]
        total += card
        if own_score is not None and float(own_score) == score and rank is not None:
            places[key] = _Place(int(rank), True)
        elif same:
            blocks[key] = (lower, lower + same)
        else:
            places[key] = _Place(lower, False)
    for key, below in (await _search(redis, blocks, after)).items():
        places[key] = _Place(below, False)
    return total, places


async def _search(redis: Any, blocks: dict[str, tuple[int, int]], after: Entry) -> dict[str, int]:
    """For each set, how many entries sort before `after`, knowing it lies between
    ranks lo and hi (a block of entries with its score, its member not among them)."""
    found: dict[str, int] = {}
    for _ in range(_ROUNDS):
        if not blocks:
            return found
        plan: list[tuple[str, list[int]]] = []
        async with redis.pipeline(transaction=False) as pipe:
            for key, (lo, hi) in blocks.items():
                if hi - lo <= _SHORT:
                    pipe.zrange(key, lo, hi - 1, withscores=True)
                    plan.append((key, []))
                else:
                    ranks = [lo + (hi - lo) * j // (_PROBES + 1) for j in range(1, _PROBES + 1)]
                    for rank in ranks:
                        pipe.zrange(key, rank, rank, withscores=True)
                    plan.append((key, ranks))
            replies = iter(await pipe.execute())
        for key, ranks in plan:
            lo, hi = blocks.pop(key)
            if not ranks:
                found[key] = lo + bisect.bisect_left(_entries(next(replies)), after)
                continue
            for rank in ranks:
                rows = _entries(next(replies))
                if rows and rows[0] < after:
                    lo = max(lo, rank + 1)
                else:  # after it, or gone (the set shrank): the place is no later
                    hi = min(hi, rank)
            if hi <= lo:
                found[key] = lo
            else:
                blocks[key] = (lo, hi)
    # Entries kept coming and going: an approximate place, checked by the window read.
    found.update((key, lo) for key, (lo, _) in blocks.items())
    return found


async def _read(
    redis: Any,
    keys: Sequence[str],
    places: dict[str, _Place],
    after: Entry | None,
    descending: bool,
    count: int,
    margin: int,
) -> dict[str, _Window]:
    """Each set's window of ranks from its place, the sets whose window missed it left out."""
    spans: list[tuple[str, int, int]] = []
    for key in keys:
        if after is None:  # one more than asked: whether more follow
            lo, hi = (-count - 1, -1) if descending else (0, count)
        elif descending:
            end = places[key].below
            lo, hi = max(0, end - count - 1), end + margin - 1
        else:
            start = places[key].below + places[key].present
            lo, hi = max(0, start - margin), start + count
        spans.append((key, lo, hi))
    async with redis.pipeline(transaction=False) as pipe:
        for key, lo, hi in spans:
            pipe.zrange(key, lo, hi, withscores=True)
        replies = await pipe.execute()
    windows: dict[str, _Window] = {}
    for (key, lo, hi), reply in zip(spans, replies, strict=True):
        rows = _entries(reply)
        if after is None:
            exhausted = len(rows) <= count
            windows[key] = _Window(rows[::-1] if descending else rows, exhausted)
            continue
        reached_end = len(rows) < hi - lo + 1
        if descending:
            opens = lo == 0 or (bool(rows) and rows[0] < after)
            valid = opens and (reached_end or rows[-1] >= after)
            kept = [row for row in reversed(rows) if row < after]
            exhausted = lo == 0
        else:
            opens = lo == 0 or (bool(rows) and rows[0] <= after)
            valid = opens and (reached_end or rows[-1] > after)
            kept = [row for row in rows if row > after]
            exhausted = reached_end
        if valid:
            windows[key] = _Window(kept, exhausted)
    return windows


def _merge(windows: list[_Window], descending: bool, count: int, total: int) -> Walk:
    merged = list(heapq.merge(*(w.rows for w in windows), reverse=descending))
    open_ends = [w.rows[-1] for w in windows if not w.exhausted and w.rows]
    if open_ends:  # nothing past the nearest last entry of a set that may hold more
        bound = max(open_ends) if descending else min(open_ends)
        merged = [e for e in merged if (e >= bound if descending else e <= bound)]
    entries = merged[:count]
    more = len(merged) > count or len(open_ends) > 0
    return Walk(entries, more, total)


def _entries(reply: Any) -> list[Entry]:
    return [(float(score), _bytes(member)) for member, score in reply]


def _bytes(member: Any) -> bytes:
    return member if isinstance(member, bytes) else str(member).encode()
