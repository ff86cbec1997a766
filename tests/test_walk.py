"""utils.redis_queue.walk on raw sorted sets: resuming after any position (its member
there or gone) in blocks of equal scores without reading the block, and entries that
come and go between the walk's round trips."""

from __future__ import annotations

import random

import pytest
from redis.asyncio import Redis

from tests.support.listing import Recorder
from utils.redis_queue.walk import Entry, walk

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sets(raw_redis: Redis, queue_name: str) -> list[str]:
    """Two sorted sets under this test's queue tag (the conftest deletes them): 5,000
    members sharing score 1, a few below and above, spread over both."""
    keys = [f"agentic:{{{queue_name}}}:walk:{i}" for i in range(2)]
    for n in range(5000):
        await raw_redis.zadd(keys[n % 2], {f"m{n:05d}": 1})
    for n in range(10):
        await raw_redis.zadd(keys[n % 2], {f"low{n}": -n, f"high{n}": 2 + n / 10})
    return keys


async def _everything(raw: Redis, keys: list[str]) -> list[Entry]:
    rows = []
    for key in keys:
        rows.extend((float(s), m) for m, s in await raw.zrange(key, 0, -1, withscores=True))
    return sorted(rows)


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
async def test_a_walk_resumes_after_any_position_without_reading_a_block_of_ties(
    raw_redis: Redis, sets: list[str], descending: bool
) -> None:
    order = await _everything(raw_redis, sets)
    if descending:
        order.reverse()
    rng = random.Random(7)
    positions: list[Entry] = [rng.choice(order) for _ in range(20)]
    # members that are not there, inside the block of ties and at its edges
    positions += [(1.0, b"m02500x"), (1.0, b"a"), (1.0, b"z"), (1.5, b"m"), (-100.0, b"x")]
    recorder = Recorder(raw_redis)
    for after in positions:
        step = await walk(recorder, sets, descending=descending, after=after, count=7)
        beyond = [e for e in order if (e < after if descending else e > after)]
        assert step.entries == beyond[:7], after
        assert step.more == (len(beyond) > 7)
        assert step.total == len(order)
    # a block of 2,500 equal scores per set is searched, not read: 32 single-entry probes
    # per round trip, then one read of at most 256 entries
    assert max(recorder.spans) <= 256


async def test_a_walk_that_loses_its_place_to_concurrent_removals_locates_it_again(
    raw_redis: Redis, sets: list[str]
) -> None:
    key = sets[0]
    order = await _everything(raw_redis, [key])
    after = order[2000]  # in the middle of the ties

    async def remove_before() -> None:  # more than a window reaches back
        await raw_redis.zrem(key, *[m for _, m in order[500:1000]])

    recorder = Recorder(raw_redis, hook=remove_before)
    step = await walk(recorder, [key], descending=False, after=after, count=5)
    assert step.entries == order[2001:2006]
    assert recorder.round_trips >= 3  # locate, a window that missed, locate, read again


async def test_an_empty_walk_and_a_walk_from_the_start(raw_redis: Redis, sets: list[str]) -> None:
    nothing = await walk(raw_redis, [], descending=False, after=None, count=5)
    assert nothing.entries == [] and not nothing.more and nothing.total == 0
    order = await _everything(raw_redis, sets)
    newest = await walk(raw_redis, sets, descending=True, after=None, count=3)
    assert newest.entries == order[::-1][:3] and newest.more
    everything = await walk(raw_redis, sets, descending=False, after=None, count=len(order))
    assert everything.entries == order and not everything.more
