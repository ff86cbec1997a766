"""A run's events in one stream per run (pipeline/events.py): what the manager emitted, in
order, readable after the run and as it goes, the source of the CLI's progress lines."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pipeline import DistributedPipelineManager, RunEvent, RunStatus
from pipeline.events import MAX_EVENT_DATA, decode_event, encode_event
from tests.support.pipeline import EXAMPLE, settings
from tests.support.processes import agentic_argv, agentic_env
from tests.test_pipeline_budget import CHAIN, Spender
from tests.test_pipeline_dag import dag_spec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def manager(
    tmp_path: Path, redis_url: str, queue_name: str, raw_redis: Redis
) -> AsyncIterator[DistributedPipelineManager]:
    config = settings(tmp_path, redis_url=redis_url, queue_name=queue_name)
    seen: list[RunEvent] = []
    made = DistributedPipelineManager(
        settings=config, handlers=Spender(dev_seconds=0.01).registry(), resume=False,
        on_event=seen.append,
    )  # fmt: skip
    made.seen = seen  # type: ignore[attr-defined]
    async with made:
        yield made
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:*", count=1000):
        await raw_redis.delete(key)


async def test_the_stream_holds_every_event_the_manager_emitted_in_order(
    manager: DistributedPipelineManager, raw_redis: Redis
) -> None:
    result = await manager.run(dag_spec(CHAIN, budget={"max_tokens": 5_600}))
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    await manager.events.aclose()
    stored = [event for _, event in await manager.events.read(result.run_id)]
    seen = [e for e in manager.seen if e.run_id == result.run_id]  # type: ignore[attr-defined]
    assert [(e.kind, e.stage, e.subtask_id, e.message) for e in stored] == [
        (e.kind, e.stage, e.subtask_id, e.message) for e in seen
    ]
    kinds = [e.kind for e in stored]
    assert kinds[0] == "started" and kinds[-1] == "ended" and stored[-1].message == "succeeded"
    assert kinds.count("submitted") == kinds.count("finished") == 7  # 5 dev, qa, deploy
    # 5 dev subtasks of 1,000 tokens against 5,600: one warning, once past 80 %
    warnings = [e for e in stored if e.kind == "budget_warning"]
    assert [w.message for w in warnings] == ["89% of the token budget used (5,000 of 5,600)"]
    finished = next(e for e in stored if e.kind == "finished")
    assert finished.data["usage"]["prompt_tokens"] == 600  # the result came along whole
    submitted = next(e for e in stored if e.kind == "submitted")
    assert submitted.data["task_id"] in {r.task_id for r in result.subtasks}
    key = manager.redis_queue.keys.run_events(result.run_id)
    assert 0 < await raw_redis.ttl(key) <= manager.settings.pipeline.run_ttl_seconds


async def test_a_reader_follows_a_run_as_it_goes_and_stops_at_its_end(
    manager: DistributedPipelineManager,
) -> None:
    run_id = await manager.start_run(dag_spec(CHAIN))
    kinds: list[str] = []
    follow = asyncio.create_task(_kinds(manager, run_id, kinds))
    result = await manager.wait_run(run_id)
    await asyncio.wait_for(follow, 10)
    assert result.status is RunStatus.SUCCEEDED and kinds[-1] == "ended"
    assert len(kinds) == len(await manager.events.read(run_id))


async def _kinds(manager: DistributedPipelineManager, run_id: str, into: list[str]) -> None:
    async for event in manager.events.follow(run_id):
        into.append(event.kind)


def test_a_huge_event_keeps_its_summary_fields() -> None:
    big = {"summary": "ok", "usage": {"prompt_tokens": 1}, "files": {"a": "x" * 200_000}}
    fields = encode_event(RunEvent("r", "finished", None, "s", "m", big))
    assert len(fields["d"]) <= MAX_EVENT_DATA
    back = decode_event("r", fields)
    assert back.data == {"summary": "ok", "usage": {"prompt_tokens": 1}, "truncated": True}


def test_pipeline_events_prints_what_the_run_recorded(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    env = agentic_env(redis_url, queue_name)

    def agentic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            agentic_argv(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=100
        )

    ran = agentic("pipeline", "run", str(EXAMPLE / "spec.json"), "--workers", "yes")
    assert ran.returncode == 0, ran.stderr
    assert "qa      qa-0       done      FAILED: 1 of 8 tests failed" in ran.stdout  # from Redis
    run_id = ran.stdout.split("\nRun ", 1)[1].split()[0]
    shown = agentic("pipeline", "events", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    assert events[0]["kind"] == "started" and events[-1]["kind"] == "ended"
    submitted = [e["subtask_id"] for e in events if e["kind"] == "submitted"]
    assert sorted(submitted[:2]) == ["calc", "textstats"]
    assert submitted[2:] == ["qa-0", "fix-1", "qa-1", "deploy"]
    human = agentic("pipeline", "events", run_id)
    assert "deploy  deploy     done" in human.stdout
    followed = agentic("pipeline", "events", run_id, "--follow")  # an ended run: at once
    assert followed.returncode == 0
    stage_events = sum(e["kind"] == "stage" for e in events)  # the lines show the stage
    assert followed.stdout.count("\n") == human.stdout.count("\n") == len(events) - stage_events
    missing = agentic("pipeline", "events", "no-such-run")
    assert missing.returncode == 1 and "no events" in missing.stderr
