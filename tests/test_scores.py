"""The Python mirror of the pending score's constants matches the Lua that writes them."""

from __future__ import annotations

import re
from pathlib import Path

from utils.redis_queue import scores

COMMON = Path(__file__).parent.parent / "utils/redis_queue/lua/include/common.lua"


def test_score_constants_match_common_lua() -> None:
    text = COMMON.read_text()
    for name in ("EPOCH_US", "BAND_US"):
        found = re.search(rf"local {name} = (\d+)", text)
        assert found is not None, name
        assert int(found.group(1)) == getattr(scores, name)


def test_queued_at_inverts_the_score_in_every_band() -> None:
    tick = 123_456_789
    for priority in range(4):
        score = tick - priority * scores.BAND_US
        low, high = scores.band_bounds(priority)
        assert low <= score < high
        assert scores.queued_at_us(float(score)) == tick + scores.EPOCH_US
